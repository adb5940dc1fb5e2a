"""One proxy process for every profile of the profiles file, each a whole Jupyter server under /<profile>/.

Each profile has its own ProxyRunner (settings, transport, credential, watch, status board), listening nowhere: the
front listens on the one port, takes the first segment of the raw path (never decoded: ``/gpu%2F..`` is no
profile), and hands the request on to that profile's runner with the segment cut off, the rest of the raw path and
query byte for byte. What the runner writes back that names a path of its own (a redirect, a cookie's path) gets
the prefix back. ``/`` and the proxy's own pages at the root are the front's: one status page for every profile.

    prefixed_location(location, prefix) / prefixed_set_cookie(value, prefix)   pure, for what a profile writes back
    ProfileSlot                     one profile: its runner, or why it does not serve (answered with a 503)
    FrontRunner(settings, slots)    the aiohttp runner of the one port
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from . import __version__
from .app import LogBudget, ProxyRunner, ide_server
from .auth import COOKIE_NAME, check_host, check_proxy_token, cookie_to_remember
from .config import OWN_PAGES_PREFIX, Settings
from .errors import ProxyError, json_error
from .routing import loggable, query_without_token, upstream_path_for
from .status import STATUS_API

log = logging.getLogger("jupyter_dev_proxy")

_OWN_PAGES = OWN_PAGES_PREFIX.strip("/")  # the first segment of the front's own pages (no profile has that name)
_COOKIE_PATH = re.compile(r"(;\s*path=)([^;]*)", re.IGNORECASE)  # a Set-Cookie's Path attribute and its value

# The front's page runs only its own inline style and may not be framed, as each profile's status page.
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


# The profile a task works for: set by the front for each request it hands on, and by each profile's start, so that
# every log line the runner, its relays and the hub checks write says whose it is (tasks inherit it).
_PROFILE: ContextVar[str | None] = ContextVar("jupyter_dev_proxy_profile", default=None)


def working_for(profile: str) -> None:
    """From here on in this task (and in the tasks it starts), the proxy's log lines begin with the profile's name."""
    _PROFILE.set(profile)


def _name_the_profile(record: logging.LogRecord) -> bool:
    profile = _PROFILE.get()
    if profile is not None:
        record.msg = f"{profile}: {record.msg}"
    return True


def name_profiles_in_log() -> None:
    """The proxy's log lines name the profile they are about (``working_for``); once per process is enough."""
    log.addFilter(_name_the_profile)


def _is_local_path(location: str) -> bool:
    """A path on the proxy's own host (``/tree``), not a scheme-relative URL (``//host``) nor a relative one."""
    return location.startswith("/") and not location.startswith(("//", "/\\"))


def prefixed_location(location: str, prefix: str) -> str:
    """A redirect a profile's runner wrote (routing has mapped the server's to ``/...``) as the IDE must follow it
    on the front: ``/tree?x`` → ``/<profile>/tree?x``. A relative one resolves the same under the prefix, and an
    absolute URL (the hub's own page, where a browser is sent on purpose) stays as it is."""
    return prefix + location if _is_local_path(location) else location


def prefixed_set_cookie(set_cookie: str, prefix: str) -> str:
    """A cookie a profile's runner set, with its Path under the profile's prefix: the server's ``_xsrf`` on ``/``
    must not be sent to another profile's server. The proxy's own session cookie stays on ``/``: one browser session
    for every profile, as they share one token."""
    if set_cookie.partition("=")[0].strip() == COOKIE_NAME:
        return set_cookie
    match = _COOKIE_PATH.search(set_cookie)
    if match is None or not _is_local_path(match.group(2).strip()):
        return set_cookie  # no Path: the browser takes the request's, which is under the prefix already
    path = match.group(2).strip()
    return set_cookie[:match.start(2)] + prefix + path + set_cookie[match.end(2):]


def prefix_answer_headers(headers: CIMultiDict[str], prefix: str) -> None:
    """Give the profile's prefix to every Location and Set-Cookie path of an answer, in place."""
    if "Location" in headers:
        headers["Location"] = prefixed_location(headers["Location"], prefix)
    if "Set-Cookie" in headers:
        cookies = [prefixed_set_cookie(value, prefix) for value in headers.getall("Set-Cookie")]
        del headers["Set-Cookie"]
        for cookie in cookies:
            headers.add("Set-Cookie", cookie)


class _FrontRequest(web.BaseRequest):
    """A request as the front's server makes it; the copy handed to a profile's runner knows the profile's prefix,
    so that an answer the runner streams (its head written before the runner returns) is prefixed as it goes out."""

    ATTRS = web.BaseRequest.ATTRS | frozenset({"profile_prefix"})
    profile_prefix: str | None = None

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        if self.profile_prefix is not None:
            prefix_answer_headers(response.headers, self.profile_prefix)


def split_profile(raw_path: str) -> tuple[str, str | None]:
    """The first segment of a raw path (query and all) and the rest as the profile's runner must see it:
    ``/gpu/api/x?y`` → ``("gpu", "/api/x?y")``; ``/gpu?y`` → ``("gpu", None)`` (no path under the profile yet)."""
    path, mark, query = raw_path.partition("?")
    first, slash, rest = path[1:].partition("/")
    if not slash:
        return first, None
    return first, "/" + rest + mark + query


def _cut(request: web.BaseRequest, prefix: str, rest: str) -> _FrontRequest:
    """The request as the profile's runner sees it: ``rest`` is its raw path and query, byte for byte (a URL made
    from it would drop a bare ``?``), and its answers are prefixed."""
    cut = request.clone(rel_url=URL(rest, encoded=True))
    cut._message = cut._message._replace(path=rest)  # the raw path exactly as the IDE sent it
    assert isinstance(cut, _FrontRequest)
    cut.profile_prefix = prefix
    return cut


def _referring_profile(request: web.BaseRequest) -> str:
    """The first path segment of the page that asks (its Referer), which names its profile; '' when none does."""
    try:
        return split_profile(URL(request.headers.get("Referer", "")).raw_path)[0]
    except ValueError:  # not a URL yarl can read: no page to tell by
        return ""


@dataclass
class ProfileSlot:
    """One profile on the front: its runner once its hub answered, else ``failure`` (a sentence for the user); with
    neither, it is still starting (``progress``: the hub's last word on it)."""

    name: str
    settings: Settings | None  # None: the profile's settings could not be used (``failure`` says why)
    runner: ProxyRunner | None = None
    failure: str | None = None
    progress: str = ""
    # The servers of other profiles that the hub serves under this profile's server's address (a named server
    # under the same user's default one): the front keeps this profile out of them.
    nested: dict[str, str] = field(default_factory=dict)  # profile name → its server's address on the hub

    @property
    def prefix(self) -> str:
        return f"/{self.name}"


class FrontRunner(web.BaseRunner):
    """The one port of a proxy serving several profiles; ``settings`` are the listening ones (host, port, token and
    browser session, which every profile shares). Its shutdown closes every profile's websockets with 1001 before it
    waits for requests to end, then cleans up every runner."""

    def __init__(self, settings: Settings, slots: dict[str, ProfileSlot], shutdown_timeout: float = 60.0) -> None:
        super().__init__(handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._settings = settings
        self.slots = slots
        self.find_nested_servers()
        self.started = time.time()
        self.port = settings.listen_port
        self._log_budget = LogBudget()

    def find_nested_servers(self) -> None:
        """Which profiles' servers lie under which (again once a profile's start has said whose server it is)."""
        for slot in self.slots.values():
            slot.nested = _nested_servers(slot, self.slots.values())

    async def _make_server(self) -> web.Server:
        return ide_server(self._handle, request_factory=self._make_request)

    def _make_request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> _FrontRequest:
        return _FrontRequest(message, payload, protocol, writer, task, asyncio.get_running_loop())

    def _runners(self) -> list[ProxyRunner]:
        return [slot.runner for slot in self.slots.values() if slot.runner is not None]

    async def shutdown(self) -> None:
        for runner in self._runners():
            await runner.shutdown()

    async def _cleanup_server(self) -> None:
        await asyncio.gather(*(runner.cleanup() for runner in self._runners()))

    def url(self, path: str) -> str:
        """The address of ``path`` on the front's port, as the user opens it (without the token)."""
        host = self._settings.listen_host
        host = "localhost" if host in ("0.0.0.0", "::") else host
        return f"http://{host}:{self.port}{path}"

    def ide_url(self, slot: ProfileSlot) -> str:
        """Where the IDE finds the profile's server."""
        return self.url(f"{slot.prefix}/")

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """A profile's request to its runner (whose funnel answers every failure of its own); the front's own
        refusals in Jupyter's JSON with one log line."""
        try:
            first, rest = split_profile(request.raw_path)
            slot = self.slots.get(first)
            if (slot is None or slot.runner is None) and rest is not None:  # no profile serves that name: is it
                owner = self._server_of(request)  # an address a server handed out whole (a kernelspec's logo)?
                if owner is not None:
                    slot, rest = owner, request.raw_path
            if slot is None or rest is None or slot.runner is None:
                return await self._own_answer(request, first, slot)
            self._check_not_nested(request, slot, rest)
            prefix = slot.prefix
            named = _PROFILE.set(slot.name)  # the runner's log lines (and its relays') name the profile
            try:
                response = await slot.runner.handle(_cut(request, prefix, rest))
            finally:
                _PROFILE.reset(named)  # the connection's next request may be another profile's
        except ProxyError as error:
            if self._log_budget.allows(error.reason):  # a web page firing requests cannot flood the log
                log.warning("%s → %d %s: %s%s", loggable(request.method, request.raw_path), error.status,
                            error.reason, error.message, self._log_budget.held_back(error.reason))
            return json_error(error)
        if not response.prepared:  # what the runner answered whole is written after this returns: prefix it now
            prefix_answer_headers(response.headers, prefix)
        return response

    def _check_caller(self, request: web.BaseRequest) -> None:
        """The front's own answers, even a refusal that names profiles, go only to a client with the proxy's token
        that names the proxy as its host (as the runners check before they look at a path)."""
        check_host(request, self._settings)
        check_proxy_token(request, self._settings)

    def _server_of(self, request: web.BaseRequest) -> ProfileSlot | None:
        """The serving profile whose server's own address (``/user/alice/gpu/...``) the path starts with, the longest
        such address first (a named server's is under the default one's); its runner maps it as it does at the root.
        When profiles on several hubs have that same address, the page that asks for it (its Referer, as a browser
        sends it) tells whose it is; ProxyError when nothing does."""
        raw_path = request.raw_path
        path = unquote(raw_path.partition("?")[0] + "/")
        matching = [slot for slot in self.slots.values() if slot.settings is not None and slot.runner is not None
                    and path.startswith(unquote(slot.settings.hub.server_prefix))]
        if not matching:
            return None
        longest = max(len(slot.settings.hub.server_prefix) for slot in matching if slot.settings is not None)
        owners = [slot for slot in matching if slot.settings is not None
                  and len(slot.settings.hub.server_prefix) == longest]
        if len(owners) > 1:  # the same user's server on two hubs: a browser's page says whose it is
            referring = self.slots.get(_referring_profile(request))
            if referring in owners:
                return referring
            self._check_caller(request)
            names = " and ".join(f"/{slot.name}/" for slot in owners)
            raise ProxyError(404, "ambiguous-server-path", f"The path {ascii(raw_path.partition('?')[0][:80])} is "
                                                           f"the address of a server of {names} alike (on different "
                                                           "hubs): request it under the profile's own path.")
        return owners[0]

    def _check_not_nested(self, request: web.BaseRequest, slot: ProfileSlot, rest: str) -> None:
        """Refuse a path of a default server's profile that the hub would route to another profile's named server
        (``/main/gpu/api`` is ``/user/alice/gpu/api`` on the hub, which is /gpu/'s server): each profile reaches its
        own server only."""
        if slot.settings is None or not slot.nested:
            return
        upstream = unquote(upstream_path_for(slot.settings, rest.partition("?")[0]) + "/")
        for owner, server_prefix in slot.nested.items():
            if upstream.startswith(unquote(server_prefix)):
                self._check_caller(request)
                raise ProxyError(404, "another-profiles-server", f"That path is the server of the profile "
                                                                 f"'{owner}': request it under /{owner}/.")

    async def _own_answer(self, request: web.BaseRequest, first: str, slot: ProfileSlot | None) -> web.StreamResponse:
        """The front's own answers, behind the proxy's token: its status page, the way from ``/`` and ``/<profile>``
        to where they go, and why a path is no profile's or its profile does not serve."""
        self._check_caller(request)
        if first == _OWN_PAGES or (first == "" and request.raw_path.partition("?")[0] == "/"):
            return await self._status_answer(request)
        if slot is None:
            names = ", ".join(f"/{name}/" for name in self.slots)
            raise ProxyError(404, "no-such-profile", f"This proxy serves several Jupyter servers, each under the name "
                                                     f"of its profile: {names}. Nothing is at "
                                                     f"{ascii(request.path[:80])}: use the URL of one of them that "
                                                     "the proxy printed when it started.")
        if slot.runner is None and slot.failure is None:
            progress = f" (the hub's last word: {slot.progress})" if slot.progress else ""
            raise ProxyError(503, "profile-starting", f"The server of the profile '{slot.name}' is still starting"
                                                      f"{progress}: try again in a moment.")
        if slot.runner is None:
            raise ProxyError(503, "profile-not-serving", f"The profile '{slot.name}' is not served: {slot.failure} "
                                                         "Then restart the proxy.")
        return self._redirect(request, slot.prefix + "/")

    def _redirect(self, request: web.BaseRequest, path: str) -> web.Response:
        """To ``path`` with the query, never the token (a browser that brought it gets the session cookie)."""
        query = query_without_token(request.query_string)
        response = web.Response(status=307, headers={"Location": path + (f"?{query}" if query else "")})
        set_cookie = cookie_to_remember(request, self._settings)
        if set_cookie is not None:
            response.headers.add("Set-Cookie", set_cookie)
        return response

    async def _status_answer(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        if path not in (OWN_PAGES_PREFIX, STATUS_API):
            if path in ("/", OWN_PAGES_PREFIX.rstrip("/")):
                return self._redirect(request, OWN_PAGES_PREFIX)
            raise ProxyError(404, "not-found", f"The proxy's own pages are {OWN_PAGES_PREFIX} and {STATUS_API}.")
        snapshot = await self.snapshot()
        if path == STATUS_API:
            response = web.json_response(snapshot, headers={"Cache-Control": "no-store"})
        else:
            response = web.Response(text=render_front_page(snapshot), content_type="text/html", headers=_PAGE_HEADERS)
        set_cookie = cookie_to_remember(request, self._settings)
        if set_cookie is not None:
            response.headers.add("Set-Cookie", set_cookie)
        return response

    async def snapshot(self) -> dict[str, Any]:
        """Every profile: its URL, hub, server, state and kernels (each runner's own status board), or why it does
        not serve; never a token."""
        slots = list(self.slots.values())
        boards = await asyncio.gather(*(slot.runner.status_snapshot() for slot in slots if slot.runner is not None))
        served = iter(boards)
        profiles = []
        for slot in slots:
            entry: dict[str, Any] = {"name": slot.name, "ide_url": self.ide_url(slot),
                                     "status_page": f"{slot.prefix}{OWN_PAGES_PREFIX}",
                                     "hub": str(slot.settings.hub) if slot.settings is not None else "-",
                                     "server": slot.settings.hub.server_label if slot.settings is not None else "-"}
            if slot.runner is None and slot.failure is None:
                entry.update(state="starting", note=slot.progress, kernels=0)
            elif slot.runner is None:
                entry.update(state="not serving", failure=slot.failure, kernels=0)
            else:
                board = next(served)
                entry.update(hub=board["hub"]["url"], user=board["user"], server=board["server"]["label"],
                             state=board["server"]["state"], note=board["server"]["note"],
                             kernels=len(board["websockets"]), requests=board["requests"], errors=board["errors"])
            profiles.append(entry)
        return {"proxy": {"version": __version__, "uptime_seconds": round(time.time() - self.started)},
                "profiles": profiles}


def _nested_servers(slot: ProfileSlot, slots: Iterable[ProfileSlot]) -> dict[str, str]:
    """The other profiles whose server has its address under this profile's server's. Whatever their hub's
    origin: one hub may be written two ways (its name, its address), and on another hub that address is a named
    server of the user's that this profile's server is not either."""
    if slot.settings is None:
        return {}
    own = slot.settings.hub
    return {other.name: other.settings.hub.server_prefix for other in slots
            if other is not slot and other.settings is not None
            and other.settings.hub.server_prefix != own.server_prefix
            and other.settings.hub.server_prefix.startswith(own.server_prefix)}


def render_front_page(snapshot: dict[str, Any]) -> str:
    """The front's status page: one row per profile, every value escaped, no token on it (each profile's own page,
    linked, has the details)."""
    e = html.escape
    rows = []
    for profile in snapshot["profiles"]:
        why = profile.get("failure") or profile.get("note") or ""
        state_class = "bad" if profile.get("failure") else "ok" if profile["state"] == "running" else "warn"
        rows.append(f'<tr><td><a href="{e(profile["status_page"])}">{e(profile["name"])}</a></td>'
                    f'<td><code>{e(profile["ide_url"])}</code></td><td>{e(profile["hub"])}</td>'
                    f'<td>{e(profile["server"])}</td><td class="{state_class}">{e(profile["state"])}</td>'
                    f'<td>{profile["kernels"]}</td><td>{e(why)}</td></tr>')
    return _FRONT_PAGE.format(version=e(snapshot["proxy"]["version"]), rows="".join(rows),
                              count=len(snapshot["profiles"]))


_FRONT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>jupyter-dev-proxy: {count} profiles</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.35em; }} table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: .25em .6em .25em 0; vertical-align: top; }} th {{ color: #555; }}
.ok {{ color: #12722b; font-weight: 600; }} .bad {{ color: #b3261e; font-weight: 600; }}
.warn {{ color: #9a5b00; font-weight: 600; }} code {{ background: #f3f3f3; padding: 0 .3em; }} .muted {{ color: #777; }}
</style></head><body>
<h1>jupyter-dev-proxy {version}: {count} profiles</h1>
<table><tr><th>profile</th><th>for the IDE (add ?token=)</th><th>hub</th><th>server</th><th>state</th>
<th>kernels</th><th></th></tr>
{rows}</table>
<p class="muted">Refreshes every 5 s. A profile's name opens its own page (token, kernels, last errors). The same
data as JSON: <a href="api/status">api/status</a>. If something is wrong, run
<code>jupyter-dev-proxy doctor</code>.</p>
</body></html>
"""
