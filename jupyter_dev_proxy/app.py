"""The proxy as an aiohttp application: every request goes authorize → rewrite → relay, inside one funnel."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from .auth import hub_token_for, remember_token
from .config import Settings
from .errors import ProxyError, json_error, upstream_failure
from .http_relay import relay_http
from .hub import ServerWatch
from .routing import loggable, query_without_token, upstream_path_for
from .upstream import hub_tls_context, open_hub_session
from .ws_relay import Relay, close_all, relay_websocket

log = logging.getLogger("jupyter_dev_proxy")

SETTINGS = web.AppKey("settings", Settings)
HUB_SESSION = web.AppKey("hub_session", aiohttp.ClientSession)
HUB_TLS: web.AppKey[ssl.SSLContext | None] = web.AppKey("hub_tls")
OPEN_RELAYS = web.AppKey("open_relays", set[Relay])  # so that shutdown can close them with 1001

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def upstream_url_for(settings: Settings, request: web.Request) -> URL:
    """The hub URL for this request: the user's server prefix added, the proxy's token removed."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    return URL.build(scheme=settings.hub_url.scheme, host=settings.hub_url.raw_host or "",
                     port=settings.hub_url.explicit_port, path=upstream_path_for(settings, raw_path),
                     query_string=query_without_token(raw_query), encoded=True)


async def dispatch(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    hub_token = hub_token_for(request, settings)
    url = upstream_url_for(settings, request)
    if _is_websocket_upgrade(request):
        return await relay_websocket(request, settings, request.app[HUB_TLS], hub_token, url,
                                     request.app[OPEN_RELAYS])
    return await relay_http(request, settings, request.app[HUB_SESSION], hub_token, url)


def _is_websocket_upgrade(request: web.Request) -> bool:
    return (request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


@web.middleware
async def error_funnel(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal and hub failure into Jupyter-shaped JSON and one log line."""
    try:
        return await handler(request)
    except ProxyError as exc:
        error = exc
    except web.HTTPException as exc:  # raised by aiohttp itself, e.g. for a malformed request
        error = ProxyError(exc.status, "bad-request", f"The request was refused: {exc.reason}.")
    except Exception as exc:  # noqa: BLE001 - the funnel: every failure ends here, once
        mapped = upstream_failure(exc, request.app[SETTINGS])
        if mapped is None:
            log.exception("%s: unexpected error in the proxy", loggable(request.method, request.raw_path))
            return json_error(ProxyError(500, "proxy-bug", "The proxy hit an unexpected error; its log has "
                                                           "the details."))
        error = mapped
    log.warning("%s → %d %s: %s", loggable(request.method, request.raw_path), error.status, error.reason,
                error.message)
    return json_error(error)


class AccessLogger(AbstractAccessLogger):
    """One line per request, without the query string: it may hold the proxy's token."""

    @property
    def enabled(self) -> bool:
        """Off (and free) unless the log level shows it."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %d %.1fms", loggable(request.method, request.raw_path), response.status, time * 1000)


async def _hub_sessions(app: web.Application) -> AsyncIterator[None]:
    app[HUB_TLS] = hub_tls_context(app[SETTINGS])
    app[HUB_SESSION] = open_hub_session(app[SETTINGS], app[HUB_TLS])
    yield
    await app[HUB_SESSION].close()


async def _close_websockets(app: web.Application) -> None:
    """On shutdown, tell both ends of every websocket the proxy is going away (1001) instead of dropping it."""
    await close_all(app[OPEN_RELAYS])


def build_app(settings: Settings, server_watch: ServerWatch | None = None) -> web.Application:
    """The whole request pipeline: the error funnel, then (on a hub) the watch for a stopped server, then
    dispatch."""
    middlewares = [error_funnel] if server_watch is None else [error_funnel, server_watch.middleware]
    # client_max_size never applies: bodies are streamed, never read whole.
    app = web.Application(middlewares=middlewares, handler_args={"max_field_size": 65536})
    if server_watch is not None:
        app.on_cleanup.append(server_watch.close)
    app[SETTINGS] = settings
    app[OPEN_RELAYS] = set()
    app.cleanup_ctx.append(_hub_sessions)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(remember_token)
    app.router.add_route("*", r"/{path:[\s\S]*}", dispatch)  # any path, even one with an encoded newline
    return app
