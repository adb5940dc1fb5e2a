"""The proxy as a server: every request goes authorize → rewrite → relay, inside one funnel.

It runs on aiohttp's low-level server with a single handler: the proxy has one route (everything), so
aiohttp's router, middleware chain and signals would only add their cost (about a tenth of a small
request's CPU time) to every request.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from .auth import cookie_to_remember, hub_token_for
from .config import Settings
from .errors import ProxyError, json_error, upstream_failure
from .http_relay import relay_http
from .hub import ServerWatch
from .routing import loggable, query_without_token, upstream_path_for
from .upstream import hub_tls_context, open_hub_session
from .ws_relay import OpenRelays, relay_websocket

log = logging.getLogger("jupyter_dev_proxy")


def upstream_url_for(settings: Settings, request: web.BaseRequest) -> URL:
    """The hub URL for this request: the user's server prefix added, the proxy's token removed."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    return URL.build(scheme=settings.hub_url.scheme, authority=settings.hub_url.raw_authority,  # [::1] keeps []
                     path=upstream_path_for(settings, raw_path), query_string=query_without_token(raw_query),
                     encoded=True)


def _is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return (request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


class AccessLogger(AbstractAccessLogger):
    """One line per request, without the query string: it may hold the proxy's token."""

    @property
    def enabled(self) -> bool:
        """Off (and free) unless the log level shows it."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %d %.1fms", loggable(request.method, request.raw_path), response.status, time * 1000)


class ProxyRunner(web.BaseRunner):
    """The proxy, ready to serve on aiohttp sites: its request handler, its connections to the hub, and a
    shutdown that closes every websocket with 1001 (going away) before it waits for requests to end."""

    def __init__(self, settings: Settings, server_watch: ServerWatch | None = None,
                 shutdown_timeout: float = 60.0) -> None:
        super().__init__(handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._settings = settings
        self._watch = server_watch
        self._tls = hub_tls_context(settings)
        self._session: aiohttp.ClientSession | None = None
        self._relays = OpenRelays()

    async def _make_server(self) -> web.Server:
        self._session = open_hub_session(self._settings, self._tls)
        # client_max_size never applies: bodies are streamed, never read whole.
        return web.Server(self._handle, access_log_class=AccessLogger, max_field_size=65536)

    async def shutdown(self) -> None:
        self._relays.stop_all()

    async def _cleanup_server(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._watch is not None:
            await self._watch.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The funnel: every refusal and hub failure becomes Jupyter-shaped JSON and one log line."""
        try:
            if self._watch is not None:  # on a hub: a stopped server is noticed and answered there
                return await self._watch.watch(request, self._dispatch)
            return await self._dispatch(request)
        except ProxyError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - the funnel: every failure ends here, once
            mapped = upstream_failure(exc, self._settings)
            if mapped is None:
                log.exception("%s: unexpected error in the proxy", loggable(request.method, request.raw_path))
                return json_error(ProxyError(500, "proxy-bug", "The proxy hit an unexpected error; its log has "
                                                               "the details."))
            error = mapped
        log.warning("%s → %d %s: %s", loggable(request.method, request.raw_path), error.status, error.reason,
                    error.message)
        return json_error(error)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        settings = self._settings
        hub_token = hub_token_for(request, settings)
        url = upstream_url_for(settings, request)
        set_cookie = cookie_to_remember(request)
        if _is_websocket_upgrade(request):
            return await relay_websocket(request, settings, self._tls, hub_token, url, self._relays, set_cookie)
        assert self._session is not None
        return await relay_http(request, settings, self._session, hub_token, url, set_cookie)
