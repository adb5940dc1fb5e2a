"""What the proxy learns from the hub, and how it starts the user's server.

    check_hub(settings, on_progress) → HubReport   at startup: hub or plain server, whose token, the server's
                                                   state; starts the server (following the hub's progress)
    ServerWatch                                    while serving: a stopped server is said once in the log,
                                                   answered as Jupyter's "not running" (424), and, opt-in,
                                                   started again on the next request
    HubError                                       a startup failure, as one sentence; the CLI exits with it

Network failures are mapped by ``errors.upstream_failure``, the same as for the IDE's requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from .config import START_ALWAYS, START_NEVER, Settings, hub_escaped
from .errors import ProxyError, is_name_mismatch, json_error, upstream_failure
from .upstream import hub_tls_context, open_hub_session

log = logging.getLogger("jupyter_dev_proxy")

# A hub API call answers in milliseconds; one that takes longer than this means the hub is not well.
API_TIMEOUT_SECONDS = 30.0

# The progress stream sends a keepalive every 8 s; this much silence means the hub or the network is gone.
PROGRESS_SILENCE_SECONDS = 60.0

# A start may take minutes (an image pull): the POST has no limit of its own, the hub's start_timeout applies.
_NO_LIMIT = aiohttp.ClientTimeout(total=None)
_PROGRESS_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=PROGRESS_SILENCE_SECONDS)

# How long to wait for a server to answer when the token may not read the hub's progress (no read:servers).
START_BY_PROBING_SECONDS = 600.0
_PROBE_INTERVAL_SECONDS = 1.0

# A POST that starts a server returns within ~10 s (the hub's slow_spawn_timeout) or at once for a quick
# spawn; after this long without an answer, the spawn is pending and its progress can be followed.
_POST_HEAD_START_SECONDS = 0.5

# After a failed restart while serving, the next attempt waits this long: the IDE polls every few seconds,
# and a server that cannot start must not be asked to start that often.
RESTART_BACKOFF_SECONDS = 30.0

# States of the user's server, as the banner shows them.
RUNNING, STARTED, STOPPED, UNKNOWN = "running", "started", "stopped", "unknown"


class HubError(Exception):
    """The hub cannot be used as configured; the message is one sentence that says what to do."""


@dataclass(frozen=True)
class Progress:
    """One event of the hub's spawn progress stream."""

    percent: int | None
    message: str
    ready: bool = False
    failed: bool = False


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class HubReport:
    """What the startup check found; ``settings`` is complete (the username is known)."""

    settings: Settings
    hub_version: str | None  # None: a plain Jupyter server without a hub API
    state: str
    note: str = ""  # a sentence for the banner when the state needs one


# -- scopes ---------------------------------------------------------------------------------------------------

def grants(scopes: list[str] | None, scope: str, user: str, server: str) -> bool | None:
    """Whether the token's expanded scopes grant ``scope`` on this user's server; None when it cannot be told.

    ``access:servers``, ``access:servers!user=alice`` and ``access:servers!server=alice/dev`` grant it for
    alice's server 'dev'; a group filter might (group membership is not visible to the token), so None.
    """
    if scopes is None:
        return None
    targets = {scope, f"{scope}!user={user}", f"{scope}!server={user}/{server}"}
    if any(s in targets for s in scopes):
        return True
    if any(s.startswith(f"{scope}!group=") for s in scopes):
        return None
    return False


def _access_scope(settings: Settings) -> str:
    scope = f"access:servers!user={settings.username}"
    if settings.server_name:
        scope += f" (or access:servers!server={settings.username}/{settings.server_name})"
    return scope


def _start_scope_name(hub_version: str) -> str:
    """JupyterHub 6 split ``start:servers`` out of ``servers``; older hubs need the whole ``servers``."""
    major = hub_version.split(".", 1)[0]
    return "start:servers" if major.isdigit() and int(major) >= 6 else "servers"


# -- certificates ----------------------------------------------------------------------------------------------

def _der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, content start, content end) of each DER element between ``start`` and ``end``."""
    items = []
    while start < end:
        tag, length, start = data[start], data[start + 1], start + 2
        if length & 0x80:
            count = length & 0x7F
            length, start = int.from_bytes(data[start:start + count], "big"), start + count
        items.append((tag, start, start + length))
        start += length
    return items


_NAME_ATTRIBUTES = {bytes.fromhex("550403"): "CN", bytes.fromhex("55040a"): "O", bytes.fromhex("55040b"): "OU"}


def certificate_issuer(der: bytes) -> str | None:
    """The issuer of a DER certificate as ``CN=..., O=..., OU=...``; None if it cannot be read.

    Certificate → tbsCertificate → [version], serialNumber, signature, **issuer** (RFC 5280 §4.1).
    """
    try:
        (_, cert_start, cert_end), = _der_items(der, 0, len(der))
        _, tbs_start, tbs_end = _der_items(der, cert_start, cert_end)[0]
        fields = _der_items(der, tbs_start, tbs_end)
        _, issuer_start, issuer_end = fields[3] if fields[0][0] == 0xA0 else fields[2]
        parts = []
        for _, set_start, set_end in _der_items(der, issuer_start, issuer_end):
            for _, pair_start, pair_end in _der_items(der, set_start, set_end):
                (_, oid_start, oid_end), (_, value_start, value_end) = _der_items(der, pair_start, pair_end)
                name = _NAME_ATTRIBUTES.get(der[oid_start:oid_end])
                if name:
                    parts.append(f"{name}={der[value_start:value_end].decode('utf-8', 'replace')}")
    except (IndexError, ValueError):
        return None
    return ", ".join(parts) or None


async def _peer_issuer(settings: Settings) -> str | None:
    """Who issued the certificate the hub presents, read without verifying it (only to name it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = settings.hub_url
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            url.host, url.port, ssl=context, server_hostname=settings.tls_name or url.host), timeout=10)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return certificate_issuer(der) if der else None


# -- the hub API -----------------------------------------------------------------------------------------------

class HubClient:
    """The hub's REST API with the hub token, over the proxy's own verified TLS and failure mapping."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session

    def for_settings(self, settings: Settings) -> HubClient:
        """The same connections, for settings completed since (the username the hub told)."""
        return HubClient(settings, self._session)

    async def call(self, method: str, path: str, timeout: aiohttp.ClientTimeout | None = None,
                   auth: bool = True) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send one request to ``path`` (already escaped); return (status, JSON or None, response)."""
        async with self.request(method, path, timeout, auth) as response:
            body = await response.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return response.status, parsed, response

    @asynccontextmanager
    async def request(self, method: str, path: str, timeout: aiohttp.ClientTimeout | None = None,
                      auth: bool = True) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request (``timeout`` None: an API call's); network failures become HubError."""
        settings = self._settings
        headers = {"Authorization": f"token {settings.hub_token}"} if auth and settings.hub_token else {}
        url = settings.hub_url.with_path(path.partition("?")[0], encoded=True).with_query(path.partition("?")[2])
        try:
            async with self._session.request(method, url, headers=headers, allow_redirects=False,
                                             server_hostname=settings.tls_name,
                                             timeout=timeout or aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS),
                                             ) as response:
                yield response
        except (aiohttp.ClientError, ssl.SSLError, OSError, asyncio.TimeoutError) as exc:
            raise await self._network_failure(exc) from None

    async def _network_failure(self, exc: BaseException) -> HubError:
        error = upstream_failure(exc, self._settings)
        if error is None:
            return HubError(f"Talking to the hub at {self._settings.hub_url} failed ({exc!r}).")
        message = error.message
        if isinstance(exc, aiohttp.ClientConnectorCertificateError) and not is_name_mismatch(exc.certificate_error):
            issuer = await _peer_issuer(self._settings)
            if issuer:
                message = f"{message.rstrip('.')}; the hub's certificate was issued by '{issuer}'."
        return HubError(message)


def _server_path(settings: Settings) -> str:
    user = hub_escaped(settings.username)
    if settings.server_name:
        return f"/hub/api/users/{user}/servers/{hub_escaped(settings.server_name)}"
    return f"/hub/api/users/{user}/server"


@asynccontextmanager
async def _hub_client(settings: Settings) -> AsyncIterator[HubClient]:
    session = open_hub_session(settings, hub_tls_context(settings))
    try:
        yield HubClient(settings, session)
    finally:
        await session.close()


# -- startup ---------------------------------------------------------------------------------------------------

async def check_hub(settings: Settings, on_progress: ProgressCallback) -> HubReport:
    """Find out what is upstream and whose token this is; start the user's server if it should be started."""
    async with _hub_client(settings) as hub:
        status, info, _ = await hub.call("GET", "/hub/api", auth=False)
        if status == 404:
            return await _plain_server(hub, settings)
        if status != 200 or not isinstance(info, dict) or "version" not in info:
            raise HubError(f"{settings.hub_url}/hub/api answered {status} instead of the hub's version: "
                           "check that the hub address points to JupyterHub itself.")
        version = str(info["version"])
        if settings.hub_token is None:
            return HubReport(settings, version, UNKNOWN)  # nothing to ask with: the banner says so
        me, settings = await _owner(hub, settings)
        hub = hub.for_settings(settings)
        model = await _server_model(hub, settings, me)
        scopes = me.get("scopes")
        if grants(scopes, "access:servers", settings.username, settings.server_name) is False:
            raise HubError(f"The token may not use your server: it lacks the scope {_access_scope(settings)}; "
                           f"make a token with it at {settings.hub_url}/hub/token.")
        if model is None:
            state = await _probe(hub, settings)
        else:
            state = RUNNING if model.get("ready") else STARTED if model.get("pending") == "spawn" else STOPPED
        if state == RUNNING:
            return HubReport(settings, version, RUNNING)
        if state == STARTED:  # someone (the hub's page, another proxy) is starting it already
            await _follow_progress(hub, settings, on_progress)
            return HubReport(settings, version, STARTED)
        if settings.start_server == START_NEVER:
            return HubReport(settings, version, STOPPED,
                             f"Start it from {settings.hub_url}/hub/home (or run the proxy without "
                             "--start-server never): until then the IDE is told it is not running.")
        if grants(scopes, _start_scope_name(version), settings.username, settings.server_name) is False:
            raise _lacks_start_scope(settings, version)
        await start_server(hub, settings, version, on_progress)
        return HubReport(settings, version, STARTED)


async def _plain_server(hub: HubClient, settings: Settings) -> HubReport:
    """No hub API: a plain Jupyter server under /user/<name>/ (the demo, or one behind another gateway)."""
    if not settings.username:
        raise HubError(f"{settings.hub_url} has no hub API (/hub/api answers 404), so it cannot say whose "
                       "token this is: set JUPYTER_USERNAME to the <name> in the server's /user/<name>/ path.")
    state = await _probe(hub, settings) if settings.hub_token else UNKNOWN
    if state == "missing":
        raise HubError(f"Nothing answers at {settings.hub_url}{settings.server_prefix}: check JUPYTER_USERNAME "
                       "(the server's path is /user/<name>/).")
    log.info("%s is a plain Jupyter server, not a JupyterHub (it has no /hub/api): the proxy serves %s there "
             "and will not check who owns the token or start the server.", settings.hub_url, settings.server_prefix)
    return HubReport(settings, None, state)


async def _owner(hub: HubClient, settings: Settings) -> tuple[dict[str, Any], Settings]:
    """Ask the hub who owns the token; the settings get that username (or keep a matching one)."""
    status, me, _ = await hub.call("GET", "/hub/api/user?include_stopped_servers=1")
    if status == 403 or status == 401:
        raise HubError(f"The hub at {settings.hub_url} rejected the token in {settings.hub_token_setting} "
                       f"(wrong, expired or revoked): make a new one at {settings.hub_url}/hub/token.")
    if status != 200 or not isinstance(me, dict) or "name" not in me:
        raise HubError(f"The hub at {settings.hub_url} answered {status} when asked whose token this is: "
                       "check the hub's log, or try again.")
    owner, kind = str(me["name"]), me.get("kind", "user")
    if kind != "user":
        if not settings.username:
            raise HubError(f"The token belongs to the {kind} '{owner}', not to a user: set JUPYTER_USERNAME "
                           "to the user whose server the proxy should use.")
        return me, settings
    if settings.username and settings.username != owner:
        raise HubError(f"JUPYTER_USERNAME is '{settings.username}' but the token belongs to '{owner}': "
                       f"use a token of '{settings.username}', or set JUPYTER_USERNAME={owner} (or unset it).")
    return me, replace(settings, username=owner)


async def _server_model(hub: HubClient, settings: Settings, me: dict[str, Any]) -> dict[str, Any] | None:
    """The hub's model of the user's server, {} when it was never started; None when the token may not read it."""
    if me.get("kind", "user") == "user" and me["name"] == settings.username:
        user = me
    else:
        status, user, _ = await hub.call("GET", f"/hub/api/users/{hub_escaped(settings.username)}"
                                                "?include_stopped_servers=1")
        if status == 404:
            raise HubError(f"The hub has no user '{settings.username}' (or the token may not see them): "
                           "check JUPYTER_USERNAME.")
        if status != 200 or not isinstance(user, dict):
            return None
    if "servers" not in user:
        return None  # the token lacks read:servers
    model = user["servers"].get(settings.server_name)
    if model is None and settings.server_name:
        raise HubError(f"'{settings.username}' has no server named '{settings.server_name}': create it on "
                       f"{settings.hub_url}/hub/home, or fix JUPYTERHUB_NAMED_SERVER.")
    return model or {}


async def _probe(hub: HubClient, settings: Settings) -> str:
    """Ask the server itself (``api/status``): RUNNING, STOPPED (the hub's redirect), or 'missing'."""
    status, _, response = await hub.call("GET", f"{settings.server_prefix}api/status")
    if status == 200:
        return RUNNING
    location = URL(response.headers.get("Location", ""))
    if status in (301, 302, 303, 307) and location.raw_path.startswith("/hub" + settings.server_prefix):
        return STOPPED
    if status in (401, 403):
        raise HubError(f"The server at {settings.hub_url}{settings.server_prefix} refused the token in "
                       f"{settings.hub_token_setting}: it needs the scope {_access_scope(settings)} on a hub, "
                       "or the server's own token on a plain Jupyter server.")
    if status == 404:
        return "missing"
    raise HubError(f"The server at {settings.hub_url}{settings.server_prefix} answered {status} to "
                   "api/status: check the hub's log, or try again.")


def _lacks_start_scope(settings: Settings, version: str) -> HubError:
    return HubError(f"Your {settings.server_label} is not running and the token may not start it: it lacks "
                    f"the scope {_start_scope_name(version)}!user={settings.username}; start the server from "
                    f"{settings.hub_url}/hub/home, or make a token with that scope at {settings.hub_url}/hub/token.")


async def start_server(hub: HubClient, settings: Settings, version: str, on_progress: ProgressCallback) -> None:
    """Ask the hub to start the server and follow its progress until it is ready; HubError if it fails."""
    post = asyncio.ensure_future(hub.call("POST", _server_path(settings), timeout=_NO_LIMIT))
    try:
        await asyncio.wait([post], timeout=_POST_HEAD_START_SECONDS)
        if post.done():
            status, body, _ = post.result()
            if status == 403:
                raise _lacks_start_scope(settings, version)
            if status == 404:
                raise HubError(f"The hub has no user '{settings.username}': check JUPYTER_USERNAME.")
            if status == 400 and "already running" not in _message(body):
                raise HubError(f"The hub refused to start your {settings.server_label}: {_message(body)}.")
        await _follow_progress(hub, settings, on_progress, post)
        if not post.done():
            await post
    finally:
        if not post.done():
            post.cancel()


def _message(body: Any) -> str:
    return str(body.get("message") or "").rstrip(".") if isinstance(body, dict) else ""


async def _follow_progress(hub: HubClient, settings: Settings, on_progress: ProgressCallback,
                           post: asyncio.Future[Any] | None = None) -> None:
    """Relay the hub's progress events until ready (return) or failed (HubError with the hub's message)."""
    path = _server_path(settings) + "/progress"
    while True:
        async with hub.request("GET", path, timeout=_PROGRESS_TIMEOUT) as response:
            status = response.status
            if status == 200:
                async for event in _events(response):
                    on_progress(event)
                    if event.ready:
                        return
                    if event.failed:
                        raise HubError(f"The hub could not start your {settings.server_label}: "
                                       f"{event.message.rstrip('.')}.")
                raise HubError("The hub ended the progress stream before the server was ready: check "
                               f"{settings.hub_url}/hub/home.")
        if status == 403:  # the token lacks read:servers: watch the server itself instead
            await _wait_by_probing(hub, settings, on_progress)
            return
        # 400 "not starting" or 404: the POST has not made the spawn pending yet, or has finished already
        if post is not None and not post.done():
            await asyncio.wait([post], timeout=_POST_HEAD_START_SECONDS)
            continue
        if post is not None and post.result()[0] in (201, 400) and await _probe(hub, settings) == RUNNING:
            on_progress(Progress(100, f"Server ready at {settings.server_prefix}", ready=True))
            return
        raise HubError(f"The hub did not start your {settings.server_label} (its progress answered {status}): "
                       f"check {settings.hub_url}/hub/home.")


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[Progress]:
    """Parse ``data: {...}`` lines of a text/event-stream; keepalive blank lines are skipped."""
    async for raw in response.content:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        percent = event.get("progress")
        yield Progress(int(percent) if isinstance(percent, (int, float)) else None, str(event.get("message", "")),
                       ready=bool(event.get("ready")), failed=bool(event.get("failed")))


async def _wait_by_probing(hub: HubClient, settings: Settings, on_progress: ProgressCallback) -> None:
    on_progress(Progress(None, f"Waiting for the server (the token lacks read:servers!user={settings.username}, "
                               "so the hub's progress cannot be shown)"))
    deadline = time.monotonic() + START_BY_PROBING_SECONDS
    while time.monotonic() < deadline:
        if await _probe(hub, settings) == RUNNING:
            on_progress(Progress(100, f"Server ready at {settings.server_prefix}", ready=True))
            return
        await asyncio.sleep(_PROBE_INTERVAL_SECONDS)
    raise HubError(f"Your {settings.server_label} did not answer within {START_BY_PROBING_SECONDS:.0f} s of "
                   f"being started: check {settings.hub_url}/hub/home.")


# -- while serving ---------------------------------------------------------------------------------------------

class ServerWatch:
    """Notices that the user's server stopped (the hub's redirect, turned into a 424 by routing)."""

    def __init__(self, settings: Settings, hub_version: str) -> None:
        self._settings = settings
        self._hub_version = hub_version
        self._restart = settings.start_server == START_ALWAYS and settings.hub_token is not None
        self._stopped = False
        self._starting: asyncio.Task[None] | None = None
        self._last_failure = -RESTART_BACKOFF_SECONDS

    async def watch(self, request: web.BaseRequest,
                    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Inside the error funnel: a 'server-not-running' refusal is answered here, and logged only once."""
        try:
            response = await handler(request)
        except ProxyError as error:
            if error.reason != "server-not-running":
                raise
            return json_error(self._not_running(error))
        if self._stopped and response.status not in (424, 502, 503, 504):
            self._stopped = False
            log.info("Your %s answers again.", self._settings.server_label)
        return response

    def _not_running(self, error: ProxyError) -> ProxyError:
        settings = self._settings
        first = not self._stopped
        self._stopped = True
        if not self._restart:
            if first:
                log.warning("Your %s on the hub has stopped (culled when idle, or stopped from the hub): the "
                            "IDE is told it is not running. Start it from %s/hub/home and the IDE can reconnect; "
                            "JUPYTER_PROXY_START_SERVER=always makes the proxy start it on the next request.",
                            settings.server_label, settings.hub_url)
            return error
        if self._starting is None and time.monotonic() - self._last_failure >= RESTART_BACKOFF_SECONDS:
            if first:
                log.warning("Your %s on the hub has stopped (culled when idle, or stopped from the hub): "
                            "starting it again.", settings.server_label)
            self._starting = asyncio.ensure_future(self._start_again())
        if self._starting is not None:
            return ProxyError(424, "server-not-running",
                              f"Your server on the hub ({settings.server_prefix}) stopped; the proxy is starting "
                              "it again: retry in a few seconds.")
        return ProxyError(424, "server-not-running",
                          f"Your server on the hub ({settings.server_prefix}) stopped and the proxy could not "
                          f"start it again (its log says why); start it from {settings.hub_url}/hub/home.")

    async def _start_again(self) -> None:
        def show(event: Progress) -> None:
            percent = f"{event.percent}% " if event.percent is not None else ""
            log.info("Starting your %s: %s%s", self._settings.server_label, percent, event.message)
        try:
            async with _hub_client(self._settings) as hub:
                await start_server(hub, self._settings, self._hub_version, show)
        except HubError as exc:
            self._last_failure = time.monotonic()
            log.error("Could not start your %s again: %s", self._settings.server_label, exc)
        except Exception:  # a background task: its failure must reach the log, not vanish
            self._last_failure = time.monotonic()
            log.exception("Could not start your %s again: unexpected error", self._settings.server_label)
        finally:
            self._starting = None

    async def close(self) -> None:
        """Stop a restart in progress (the proxy is shutting down)."""
        if self._starting is not None:
            self._starting.cancel()
            try:
                await self._starting
            except asyncio.CancelledError:
                pass
