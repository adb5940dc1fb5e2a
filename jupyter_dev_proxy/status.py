"""What the proxy sees, shown to its user: a status page at /jupyter-dev-proxy/ and the same data as JSON at
/jupyter-dev-proxy/api/status, behind the proxy's own token like everything else, never forwarded to the hub.

    StatusBoard      counts requests and errors (the last 20 as the log's sentences), knows the hub's version and
                     the token's owner, scopes and expiry; ``snapshot()`` adds what is live: the server's state and
                     last activity (asked of the hub, at most every few seconds), the open kernel websockets;
                     ``answer()`` is the route: the token check, the redirect to the page, its headers
    render_page()    one self-contained HTML page (no external assets), refreshed every 5 s
"""

from __future__ import annotations

import collections
import enum
import html
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import __version__
from .auth import check_proxy_token, cookie_to_remember
from .config import OWN_PAGES_PREFIX, ForwardedPort, Settings
from .errors import ProxyError
from .hubapi import HubClient, HubError, ServerModel, ServerState, TokenInfo
from .tokens import describe_expiry

if TYPE_CHECKING:  # the desk imports auth and the hub's API, as this module does; only its type is needed here
    from .signin import SignInDesk

PREFIX = OWN_PAGES_PREFIX
STATUS_API = PREFIX + "api/status"

# The page runs only its own inline script and style, and may not be framed (clickjacking of "Show token").
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src "
                                            "'unsafe-inline'; connect-src 'self'"}

# The hub is asked for the server's state at most this often, however often the page refreshes.
_SERVER_STATE_SECONDS = 5.0


class AppState(str, enum.Enum):
    """What the last request to a forwarded web app met."""

    ANSWERING = "answering"
    NOT_LISTENING = "nothing listening"
    NOT_OPENED = "not opened yet"
_RECENT_ERRORS = 20


class StatusBoard:
    """The proxy's own account of itself, fed by the funnel and the relays."""

    def __init__(self, settings: Settings, hub_version: str | None = None, token: TokenInfo | None = None) -> None:
        self.settings = settings
        self.hub_version = hub_version
        self.token = token
        self.started = time.time()
        self.ide_port = settings.listen_port
        self.ide_path = "/"  # where the IDE's server is on that port: /<profile>/ when one process serves several
        self.note: str | None = None  # what the start found worth saying about the server (other spawn options)
        self.requests = 0
        self.errors = 0
        self.recent_errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=_RECENT_ERRORS)
        self.progress: str | None = None  # the hub's last progress message while the proxy starts the server
        self._server: tuple[float, ServerModel] | None = None
        self.sign_in: SignInDesk | None = None  # where the hub's login gives the token: a sign-in under way is linked
        self.apps: list[tuple[int, ForwardedPort]] = []  # web apps on the server, with the local port of each
        self._app_seen: dict[ForwardedPort, tuple[AppState, float, str]] = {}

    def note_error(self, status: int, reason: str, message: str) -> None:
        self.errors += 1
        self.recent_errors.appendleft({"at": _iso(time.time()), "status": status, "reason": reason,
                                       "message": message})

    async def _server_model(self, hub: HubClient | None) -> ServerModel:
        """The hub's model of the server (cached a few seconds); UNKNOWN when the hub cannot be asked."""
        now = time.monotonic()
        if self._server is not None and now - self._server[0] < _SERVER_STATE_SECONDS:
            return self._server[1]
        model = ServerModel(ServerState.UNKNOWN)
        if hub is not None and self.hub_version is not None and hub.credential is not None:
            try:
                model = await hub.server()
            except HubError:
                pass  # the page says "unknown"
        self._server = (now, model)
        return model

    async def _server_state(self, hub: HubClient | None) -> dict[str, Any]:
        """The server's state and last activity, and the hub's last progress message while it starts."""
        model = await self._server_model(hub)
        state: dict[str, Any] = {"state": model.state.value, "last_activity": model.last_activity}
        if model.state is ServerState.STARTING and self.progress:
            state["progress"] = self.progress
        return state

    def app_answered(self, app: ForwardedPort, status: int) -> None:
        """A request to a forwarded app was answered: its state, as the status page shows it, is what the last
        request met (the proxy never asks an app itself: its server would count that as use and not be culled)."""
        self._app_seen[app] = (AppState.ANSWERING, time.time(), f"HTTP {status}")

    def app_not_listening(self, app: ForwardedPort, message: str) -> None:
        self._app_seen[app] = (AppState.NOT_LISTENING, time.time(), message)

    def _app_state(self, host: str, port: int, app: ForwardedPort) -> dict[str, Any]:
        state, at, note = self._app_seen.get(app, (AppState.NOT_OPENED, None, "no request to it since the proxy "
                                                                           "started"))
        return {"port": app.remote, "url": f"http://{host}:{port}/", "state": state.value, "note": note,
                "at": _iso(at) if at is not None else None}

    async def snapshot(self, hub: HubClient | None, websockets: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything the page shows, as JSON: never a token or a password (``hub``, with the credential in use,
        only asks the hub for the server's state)."""
        settings = self.settings
        address = settings.hub
        token = self.token
        now = datetime.now(timezone.utc)
        host = settings.listen_host if settings.listen_host not in ("0.0.0.0", "::") else "localhost"
        return {
            "proxy": {"version": __version__, "uptime_seconds": round(time.time() - self.started),
                      "started_at": _iso(self.started), "ide_url": f"http://{host}:{self.ide_port}{self.ide_path}",
                      "forwards_ide_token": settings.forwards_ide_token},
            "hub": {"url": str(address), "version": self.hub_version, "reached": settings.reached_through,
                    "forward_proxy": str(settings.forward_proxy) if settings.forward_proxy else None,
                    "gateway_credentials": bool(settings.hub_headers or settings.client_cert)},
            "user": address.user, "server": {"name": address.server, "label": address.server_label,
                                             "prefix": address.server_prefix,
                                             "note": self.note, **await self._server_state(hub)},
            "token": None if token is None else {
                "owner": token.owner, "scopes": list(token.scopes) if token.scopes is not None else None,
                "from": str(settings.token_source),
                "expires_at": token.expires_at.isoformat() if token.expires_at else None,
                "expiry": describe_expiry(token.expires_at, now) if token.expiry_known else "not known"},
            "sign_in_url": self.sign_in.pending_url if self.sign_in is not None else None,
            "websockets": websockets,
            "apps": [self._app_state(host, port, app) for port, app in self.apps],
            "requests": self.requests, "errors": self.errors, "recent_errors": list(self.recent_errors),
        }


    async def answer(self, request: web.BaseRequest, hub: HubClient | None,
                     websockets: list[dict[str, Any]]) -> web.StreamResponse:
        """The page or its JSON, behind the proxy's own token (the cookie is set as for the IDE's pages)."""
        check_proxy_token(request, self.settings)
        path = request.path
        if path not in (PREFIX, STATUS_API):
            if path == PREFIX.rstrip("/"):
                return web.Response(status=302, headers={"Location": PREFIX + (
                    f"?{request.query_string}" if request.query_string else "")})
            raise ProxyError(404, "not-found", f"The proxy's own pages are {PREFIX} and {STATUS_API}.")
        snapshot = await self.snapshot(hub, websockets)
        if path == STATUS_API:
            response = web.json_response(snapshot, headers={"Cache-Control": "no-store"})
        else:
            response = web.Response(text=render_page(snapshot, self.settings.local_token), content_type="text/html",
                                    headers=_PAGE_HEADERS)
        set_cookie = cookie_to_remember(request, self.settings)
        if set_cookie is not None:
            response.headers.add("Set-Cookie", set_cookie)
        return response


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>jupyter-dev-proxy: {title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.35em; }} h2 {{ font-size: 1.05em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ text-align: left; padding: .25em .6em .25em 0;
vertical-align: top; }} th {{ color: #555; font-weight: 600; width: 12em; }}
.ok {{ color: #12722b; font-weight: 600; }} .bad {{ color: #b3261e; font-weight: 600; }}
.warn {{ color: #9a5b00; font-weight: 600; }} code {{ background: #f3f3f3; padding: 0 .3em; }}
button {{ font: inherit; margin-left: .5em; }} .muted {{ color: #777; }}
</style></head><body>
<h1>jupyter-dev-proxy {version} <span class="muted">up {uptime}</span></h1>
<table>
<tr><th>For the IDE</th><td><code id="url">{ide_url}?token=<span id="token" hidden>{ide_token}</span><span
 id="hidden">•••••</span></code><button onclick="document.getElementById('token').hidden=false;
document.getElementById('hidden').hidden=true">Show token</button><button onclick="navigator.clipboard.writeText(
document.getElementById('url').textContent.replace('•••••',''))">Copy</button></td></tr>
{browser_row}<tr><th>Hub</th><td>{hub_url} · JupyterHub {hub_version} · reached {reached}</td></tr>
<tr><th>User</th><td id="user">{user}</td></tr>
<tr><th>Server</th><td>{server_label} <code>{server_prefix}</code>: <span id="server-state" class="{state_class}">{state}</span>
{progress} <span class="muted">{last_activity}</span>{server_note}</td></tr>
<tr><th>Token</th><td>{token}{sign_in}</td></tr>
<tr><th>Requests</th><td>{requests} · <span class="{errors_class}">{errors}</span></td></tr>
</table>
{apps}<h2>Kernel websockets open ({websocket_count})</h2>
{websockets}
<h2>Last errors</h2>
{recent_errors}
<p class="muted">Refreshes every 5 s. The same data as JSON: <a href="api/status">api/status</a>.
If something is wrong, run <code>jupyter-dev-proxy doctor</code>.</p>
</body></html>
"""

_BROWSER_ROW = ('<tr><th>In this browser</th><td><a href="../" target="_blank" rel="noopener">Your server\'s pages</a> '
                '<span class="muted">(JupyterLab or Notebook, as your server has them)</span></td></tr>\n')

_STATE_CLASSES = {ServerState.RUNNING: "ok", ServerState.STARTING: "warn", ServerState.STOPPED: "bad",
                  ServerState.UNKNOWN: "muted"}


# What the IDE's URL carries when no hub token is set: the IDE's token is then the hub credential, and the proxy's
# own token in that URL would be sent to the hub (the banner says the same).
IDE_TOKEN_PLACEHOLDER = "<YOUR_API_TOKEN>"


_APP_STATE_CLASSES = {AppState.ANSWERING: "ok", AppState.NOT_LISTENING: "bad", AppState.NOT_OPENED: "muted"}


def _apps_section(apps: list[dict[str, Any]]) -> str:
    """The forwarded web apps, each with its local address and whether it answers on the server."""
    if not apps:
        return ""
    e = html.escape
    rows = "".join(f'<tr><td>port {app["port"]}</td><td><a href="{e(app["url"])}" target="_blank" rel="noopener">'
                   f'{e(app["url"])}</a></td><td class="{_APP_STATE_CLASSES[AppState(app["state"])]}">{e(app["state"])}</td>'
                   f'<td>{e(app["note"])}</td></tr>' for app in apps)
    return f"<h2>Web apps on your server ({len(apps)})</h2>\n<table>{rows}</table>\n"


def render_page(snapshot: dict[str, Any], local_token: str) -> str:
    """The status page, every value escaped; the token stays hidden until the user asks for it."""
    e = html.escape
    ide_token = IDE_TOKEN_PLACEHOLDER if snapshot["proxy"]["forwards_ide_token"] else local_token
    server, token = snapshot["server"], snapshot["token"]
    websockets = snapshot["websockets"]
    rows = "".join(f"<tr><td><code>{e(ws['kernel'])}</code></td><td>{e(ws['since'])}</td><td>{ws['bytes_to_ide']:,}"
                   f"</td><td>{ws['bytes_to_hub']:,}</td><td>{ws['reconnects']}</td></tr>" for ws in websockets)
    errors = "".join(f"<tr><td class=\"muted\">{e(err['at'])}</td><td>{err['status']} {e(err['reason'])}</td>"
                     f"<td>{e(err['message'])}</td></tr>" for err in snapshot["recent_errors"])
    token_text = ("not known (the IDE's own token is sent)" if token is None else
                  f"{e(token['owner'])}'s, from {e(token['from'])}; {e(token['expiry'])}; scopes: "
                  f"{e(', '.join(token['scopes'])) if token['scopes'] is not None else 'not listed'}")
    return _PAGE.format(
        title=e(f"{snapshot['user']} on {snapshot['hub']['url']}"), version=e(snapshot["proxy"]["version"]),
        uptime=_duration(snapshot["proxy"]["uptime_seconds"]), ide_url=e(snapshot["proxy"]["ide_url"]),
        ide_token=e(ide_token), hub_url=e(snapshot["hub"]["url"]),
        hub_version=e(snapshot["hub"]["version"] or "(a plain Jupyter server, no hub)"),
        reached=e(snapshot["hub"]["reached"]), user=e(snapshot["user"]), server_label=e(server["label"]),
        server_prefix=e(server["prefix"]), state=e(server["state"]),
        state_class=_STATE_CLASSES[ServerState(server["state"])],
        progress=e(f"({server['progress']})") if server.get("progress") else "",
        last_activity=e(f"last activity {server['last_activity']}") if server.get("last_activity") else "",
        server_note=f'<br><span class="warn">{e(server["note"])}</span>' if server.get("note") else "",
        token=token_text, requests=snapshot["requests"],
        # Without a hub token, every page needs the IDE's token in ?token= (no cookie stands for it): no link then.
        browser_row="" if snapshot["proxy"]["forwards_ide_token"] else _BROWSER_ROW,
        sign_in=(f' · <a class="warn" href="{e(snapshot["sign_in_url"])}" target="_blank" rel="noopener">Sign in again'
                 "</a>" if snapshot.get("sign_in_url") else ""),
        errors=f"{snapshot['errors']} error{'' if snapshot['errors'] == 1 else 's'}",
        errors_class="bad" if snapshot["errors"] else "muted", websocket_count=len(websockets),
        apps=_apps_section(snapshot["apps"]),
        websockets=(f"<table><tr><th>kernel</th><th>since</th><th>bytes to the IDE</th><th>bytes to the hub</th>"
                    f"<th>reconnects</th></tr>{rows}</table>" if websockets else "<p class=\"muted\">none</p>"),
        recent_errors=f"<table>{errors}</table>" if errors else "<p class=\"muted\">none</p>",
    )
