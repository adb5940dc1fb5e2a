"""The proxy as a server: every request goes authorize → rewrite → relay, inside one funnel.

It runs on aiohttp's low-level server with a single handler: the proxy has one route (everything), so
aiohttp's router, middleware chain and signals would only add their cost (about a tenth of a small
request's CPU time) to every request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from .auth import (
    check_host,
    cookie_to_remember,
    cors_headers,
    hub_token_for,
    is_preflight,
    preflight_answer,
)
from .config import ForwardedPort, Settings
from .errors import (
    HubLoginRequired,
    HubPage,
    HubRefusedRequest,
    ProxyError,
    ServerNotRunning,
    hub_page_answer,
    json_error,
)
from .http_relay import relay_http
from .hub_http import HubConnections
from .hubapi import HubClient
from .logs import keep_secrets_out_of_logs
from .routing import (
    APP_NOT_LISTENING,
    Route,
    check_request_head,
    hub_url,
    loggable,
    upstream_request_headers,
    upstream_target_for,
)
from .status import PREFIX as STATUS_PREFIX
from .status import StatusBoard
from .token_swap import page_token, token_swap
from .tokens import HubCredential, credential_for
from .transport import HubTransport
from .watch import ServerWatch
from .ws_relay import OpenRelays, relay_websocket

if TYPE_CHECKING:  # the desk serves its waiting page with this module's server: only its type is needed here
    from .signin import SignInDesk

log = logging.getLogger("jupyter_dev_proxy")


def _is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return (request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


def _navigates(request: web.BaseRequest) -> bool:
    """A browser opening a page (a link followed, a URL typed), not a program asking for data."""
    mode = request.headers.get("Sec-Fetch-Mode")
    return request.method == "GET" and (mode == "navigate" if mode is not None
                                         else "text/html" in request.headers.get("Accept", ""))


class AccessLogger(AbstractAccessLogger):
    """One line per request, without the query string: it may hold the proxy's token."""

    @property
    def enabled(self) -> bool:
        """Off (and free) unless the log level shows it."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %d %.1fms", loggable(request.method, request.raw_path), response.status, time * 1000)


# A connection from the IDE may sit idle between requests this long (nginx's keepalive_timeout). The same
# timer closes a connection that has not sent a whole request head by then (a slowloris): aiohttp arms it when
# the connection opens and after each answer.
IDE_IDLE_SECONDS = 75.0

# Headers a Jupyter client sends are small; a cookie jar shared with other localhost apps can be large.
_MAX_HEADER_BYTES = 65536

# What aiohttp's parser found wrong with a request it could not parse, in words (most specific first). Its
# own messages quote the raw request line, which may carry the token.
_PARSE_FAILURES: tuple[tuple[type[http_exceptions.HttpProcessingError], str], ...] = (
    (http_exceptions.BadHttpMethod, "its method is not an HTTP method"),
    (http_exceptions.BadStatusLine, "its request line is not 'METHOD /path HTTP/1.1'"),
    (http_exceptions.LineTooLong, "a line of it is too long"),
    (http_exceptions.InvalidURLError, "its path has characters a URL cannot have"),
    (http_exceptions.InvalidHeader, "a header is malformed"),
    (http_exceptions.BadHttpMessage, "its headers or body framing are malformed"),
)


class _IdeConnection(RequestHandler):
    """One connection from the IDE. A request aiohttp cannot parse is answered in Jupyter's JSON shape with one
    log line that quotes nothing of the request, instead of aiohttp's text page and traceback (both quote it)."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is dropped instead")
        if not isinstance(exc, http_exceptions.HttpProcessingError):  # past the funnel: a bug of the proxy's
            log.error("Unexpected error in the proxy", exc_info=exc)
            return json_error(ProxyError(500, "proxy-bug", "The proxy hit an unexpected error; its log has the "
                                                           "details.", closes=True))
        what = next((words for kind, words in _PARSE_FAILURES if isinstance(exc, kind)), "it is malformed")
        log.warning("Refused a request from %s that is not valid HTTP/1.1: %s.", request.remote, what)
        return json_error(ProxyError(status, "bad-request", f"The request is not valid HTTP/1.1 ({what}); the "
                                                            "proxy did not forward it.", closes=True))


_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_RequestFactory = Callable[..., web.BaseRequest]  # aiohttp's (message, payload, protocol, writer, task)


class _IdeServer(web.Server):
    """aiohttp's low-level server, with the proxy's connections and their limits."""

    def __call__(self) -> RequestHandler:
        # auto_decompress off: a body the IDE sent compressed (Content-Encoding: gzip) goes to the server as sent,
        # its encoding and length intact; aiohttp would inflate it and leave the header saying gzip.
        return _IdeConnection(self, loop=asyncio.get_running_loop(), access_log_class=AccessLogger,
                              max_field_size=_MAX_HEADER_BYTES, keepalive_timeout=IDE_IDLE_SECONDS,
                              auto_decompress=False)


def ide_server(handler: _Handler, request_factory: _RequestFactory | None = None) -> web.Server:
    """A server for the IDE's side with the proxy's connections: their limits, an access log without the query, and
    unparsable requests answered in Jupyter's JSON (the sign-in's waiting page and the profiles' front use it too;
    the front makes its own requests, which prefix what a profile writes back)."""
    return _IdeServer(handler, handler_cancellation=True, request_factory=request_factory)


# Refusals of the same kind (a web page firing <img> requests without the token, a misconfigured client in a
# loop) are logged at most this often, with a count of those held back, so that they cannot flood the log.
_SAME_REFUSAL_LOG_SECONDS = 10.0


class LogBudget:
    """One warning per kind of failure per _SAME_REFUSAL_LOG_SECONDS; the next says how many were not logged."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allows(self, reason: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(reason, -_SAME_REFUSAL_LOG_SECONDS) < _SAME_REFUSAL_LOG_SECONDS:
            self._held[reason] = self._held.get(reason, 0) + 1
            return False
        self._last[reason] = now
        return True

    def held_back(self, reason: str) -> str:
        count = self._held.pop(reason, 0)
        return f" ({count} more like it in the last {_SAME_REFUSAL_LOG_SECONDS:.0f} s not logged)" if count else ""


class ProxyRunner(web.BaseRunner):
    """The proxy, ready to serve on aiohttp sites: its request handler, its connections to the hub, and a
    shutdown that closes every websocket with 1001 (going away) before it waits for requests to end."""

    def __init__(self, settings: Settings, server_watch: ServerWatch | None = None,
                 shutdown_timeout: float = 60.0, credential: HubCredential | None = None,
                 status: StatusBoard | None = None, sign_in: SignInDesk | None = None) -> None:
        super().__init__(handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._settings = settings
        self._watch = server_watch
        self.status = status or StatusBoard(settings)
        self.credential = credential or credential_for(settings)
        self._transport = HubTransport(settings)
        self._session: aiohttp.ClientSession | None = None
        self._connections = HubConnections(self._transport, settings.hub.origin)  # the relay's, for bodies in hand
        self._hub_api: HubClient | None = None  # the hub's API on the relays' connections, with the credential
        self._relays = OpenRelays()
        self._log_budget = LogBudget()
        self._watching_token: asyncio.Task[None] | None = None
        self._sign_in = sign_in  # where the hub's login gives the token: its callback is served here
        self.status.sign_in = sign_in
        self._server_route = Route.to_server(settings)
        self._app_routes: dict[int, Route] = {}  # local port → a web app on the server (a forwarded port)
        self._apps_token: str | None = None

    async def _make_server(self) -> web.Server:
        keep_secrets_out_of_logs(self._settings.secrets)
        self._session = self._transport.session()
        self._hub_api = HubClient(self._settings, self._transport, self._session, self.credential)
        if self.credential is not None and self.credential.source.path is not None:
            self._watching_token = asyncio.get_running_loop().create_task(self.credential.watch())
        # handler_cancellation: when the IDE hangs up, its request to the hub is cancelled and the connection
        # released, instead of waiting for an answer nobody will read.
        return ide_server(self._handle)

    def serve_apps_with(self, token: str) -> None:
        """The token the web apps' requests carry: one that reaches only the user's server, as jupyter-server-proxy
        hands it on to the app (never the proxy's own hub token, which may reach the whole hub account)."""
        self._apps_token = token

    def serve_app(self, local_port: int, app: ForwardedPort) -> None:
        """From now on, what arrives on ``local_port`` (a site of this runner's) goes to ``app`` on the server."""
        if not any(known.app == app for known in self._app_routes.values()):
            self.status.apps.append((local_port, app))  # once per app, at its first address
        self._app_routes[local_port] = Route.to_app(self._settings, app)

    def _route_of(self, request: web.BaseRequest) -> Route:
        """The route of the port the request arrived on: the user's server, unless it is a forwarded app's."""
        if self._app_routes and request.transport is not None:
            local = request.transport.get_extra_info("sockname")
            if local:
                return self._app_routes.get(local[1], self._server_route)
        return self._server_route

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The funnel, for a front that serves several runners on one port (front.FrontRunner): this runner then
        listens nowhere itself, and the front hands it the requests under its profile's path, that path cut off."""
        return await self._handle(request)

    async def status_snapshot(self) -> dict[str, Any]:
        """What this runner's status page shows, as JSON (the front's page lists every profile's)."""
        return await self.status.snapshot(self._hub_api, self._relays.kernel_websockets())

    async def shutdown(self) -> None:
        self._relays.stop_all()

    async def _cleanup_server(self) -> None:
        if self._watching_token is not None:
            self._watching_token.cancel()
        self._connections.close()
        await self._transport.close()
        if self._session is not None:
            await self._session.close()
        if self._watch is not None:
            await self._watch.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The funnel: every refusal and hub failure becomes Jupyter-shaped JSON and one log line."""
        self.status.requests += 1
        route = self._route_of(request)
        try:
            check_request_head(request.method, request.version, request.headers)
            response = await self._dispatch(request, route)
            if self._watch is not None:  # on a hub: a server that had stopped and answers again is said once
                self._watch.answered(response.status)
            if route.app is not None:
                self.status.app_answered(route.app, response.status)
            return response
        except ProxyError as exc:
            error = exc
        except ConnectionError:
            raise  # the IDE hung up (the hub's failures arrive as ProxyError): aiohttp drops it quietly
        except Exception:  # noqa: BLE001 - the funnel: every failure ends here, once
            log.exception("%s: unexpected error in the proxy", loggable(request.method, request.raw_path))
            error = ProxyError(500, "proxy-bug", "The proxy hit an unexpected error; its log has the details.",
                               logged=True)
        if isinstance(error, (HubLoginRequired, HubRefusedRequest)):  # has the hub stopped accepting the token?
            refusal = await self.token_refusal()
            if refusal is None and isinstance(error, HubRefusedRequest):
                return error.answer  # the token is fine: the hub's own answer, as it gave it
            error = refusal or error
        elif isinstance(error, ServerNotRunning) and self._watch is not None:  # logged once, restarted if asked
            error = self._watch.not_running(error)
        elif route.app is not None and error.reason == APP_NOT_LISTENING:
            self.status.app_not_listening(route.app, error.message)
        self.status.note_error(error.status, error.reason, error.message)
        if not error.logged and self._log_budget.allows(error.reason):
            log.warning("%s → %d %s: %s%s", loggable(request.method, request.raw_path), error.status, error.reason,
                        error.message, self._log_budget.held_back(error.reason))
        if request.writer.output_size > 0:  # the answer has begun: no error can follow it, only a hang-up
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("the answer had begun")
        response = hub_page_answer(error) if isinstance(error, HubPage) and _navigates(request) else json_error(error)
        response.headers.extend(cors_headers(request, self._settings))  # an allowed page may read why
        return response

    async def token_refusal(self) -> ProxyError | None:
        """The IDE's answer when the hub no longer accepts the proxy's token (expired, revoked); None when it
        does, or when the token is the IDE's own."""
        if self.credential is None or self._hub_api is None:
            return None
        return self.credential.refused() if await self.credential.refused_by_hub(self._hub_api) else None

    async def _dispatch(self, request: web.BaseRequest, route: Route) -> web.StreamResponse:
        settings = self._settings
        check_host(request, settings)
        if is_preflight(request):  # answered here: a browser's question, without credentials
            return preflight_answer(request, settings)
        if route.app is None:  # the proxy's own pages are on its own port; on an app's, every path is the app's
            if self._sign_in is not None and request.path == self._sign_in.callback_path:  # the hub's redirect back
                return await self._sign_in.answer(request)
            if request.path.startswith(STATUS_PREFIX.rstrip("/")):  # the proxy's own page: never forwarded
                return await self.status.answer(request, self._hub_api, self._relays.kernel_websockets())
        hub_token = hub_token_for(request, settings, self.credential.token if self.credential else None)
        to_app = route.app is not None
        if to_app:  # jupyter-server-proxy hands every header on to the app: it gets its own token
            assert self._apps_token is not None
            hub_token = self._apps_token
        target = upstream_target_for(settings, request.raw_path, route)
        self._transport.note_activity()  # only the IDE's work for the hub, past the checks, keeps connections warm
        set_cookie = cookie_to_remember(request, settings)
        if _is_websocket_upgrade(request):
            credential = self.credential
            token = (lambda: credential.token) if credential is not None and not to_app else (lambda: hub_token)
            return await relay_websocket(request, settings, self._transport, token, hub_url(settings, target),
                                         self._relays, set_cookie, to_app)
        assert self._session is not None
        headers = upstream_request_headers(request.headers, hub_token, gateway_headers=self._transport.gateway_headers,
                                           to_app=to_app)
        # The hub token is swapped out of every answer; the IDE's own token (no credential) is its to see.
        swap = (token_swap(hub_token, page_token(settings.local_token, hub_token, settings.profile))
                if self.credential is not None else None)
        return await relay_http(request, settings, self._transport, self._connections, self._session, route, target,
                                headers, set_cookie, cors_headers(request, settings), swap)
