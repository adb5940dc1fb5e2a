"""``jupyter-dev-proxy doctor``: each link of the chain from this computer to the user's server, checked in order,
one line each — ✓ what was found, or ✗ what is wrong and the one thing to do. Nothing it prints is a secret, so a
user can paste it into a bug report. Exit 0 when every link holds.

    settings → name → TCP → [company proxy] → TLS → hub API → [sign-in] → token → server → kernelspecs → websocket

With a sign-in service (JUPYTERHUB_OAUTH_CLIENT_ID), the sign-in lines check what can be checked from here (the
hub knows the client and its secret; the callback's port is free, or this proxy serves it) and explain, one line
each with the hub's own words, the failures only the browser sees. ``--service-entry`` prints, for the hub's admin,
the service entry that makes the sign-in possible (``service_entry``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO, cast

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import OAuthClient, Settings, default_callback_url, profiles_file, setting_origins
from .errors import ProxyError
from .hubapi import (
    FixedToken,
    HubClient,
    HubError,
    ServerState,
    TokenRefused,
    UnexpectedAnswer,
    from_jupyterhub_6,
    grants,
    hub_client,
    start_scope_name,
)
from .profiles import read_profiles
from .routing import upstream_url_for
from .signin import SIGN_IN_REMINDER_SECONDS
from .timeouts import timeout
from .tokens import credential_for, describe_expiry
from .transport import HubTransport
from .ws_handshake import open_hub_websocket

_TIMEOUT_SECONDS = 15.0


class _Report:
    """The doctor's lines: a ✓ or ✗ each, and whether all held."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.healthy = True

    def ok(self, link: str, found: str) -> None:
        self._out.write(f"✓ {link}: {found}\n")
        self._out.flush()

    def bad(self, link: str, problem: str) -> None:
        self.healthy = False
        self._out.write(f"✗ {link}: {problem}\n")
        self._out.flush()

    def note(self, link: str, explanation: str) -> None:
        """A failure the doctor cannot provoke from here (only the browser sees it): what it looks like, and why."""
        self._out.write(f"· {link}: {explanation}\n")
        self._out.flush()


class _Opened(asyncio.Protocol):
    """A connection the doctor opens to look at its tunnel and TLS, and closes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)


def _settings_lines(report: _Report, argv: Sequence[str], cwd: Path, settings: Settings) -> None:
    profile = read_profiles(*profiles_file(argv, os.environ)).profile(settings.profile) if settings.profile else None
    origins = setting_origins(argv, os.environ, cwd, profile)
    shown = ", ".join(f"{name}={value} ({origin})" for name, origin, value in origins if origin != "default")
    token = f"the hub token from {settings.token_source}" if settings.hub_token else "no hub token"
    report.ok("settings", f"{shown or 'defaults only'}; {token}")


async def _name_and_tcp(report: _Report, settings: Settings) -> bool:
    proxy = settings.forward_proxy
    host, port = (proxy.host, proxy.port) if proxy else (settings.hub.origin.host or "", settings.hub.origin.port or 443)
    what = f"the company proxy {proxy}" if proxy else f"the hub {host}"
    loop = asyncio.get_running_loop()
    try:
        addresses = sorted({str(info[4][0]) for info in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        report.bad("name", f"{what}: '{host}' could not be resolved ({exc.strerror}): check the address, your "
                           "network or VPN" + ("" if proxy else ", or set HTTPS_PROXY if only your company proxy "
                                                                "can reach the hub"))
        return False
    report.ok("name", f"{host} is {', '.join(addresses)}" + (" (the hub's own name is resolved by the company "
                                                              "proxy)" if proxy else ""))
    started = time.monotonic()
    try:
        async with timeout(_TIMEOUT_SECONDS):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or "timed out"
        report.bad("TCP", f"{what} at port {port} could not be reached ({reason}): check the port, a firewall, "
                          "your VPN")
        return False
    report.ok("TCP", f"connected to {host}:{port} in {1000 * (time.monotonic() - started):.0f} ms")
    return True


async def _tunnel_and_tls(report: _Report, settings: Settings) -> bool:
    transport = HubTransport(settings)
    try:
        opened = await transport.open(_Opened)
    except ProxyError as error:
        link = "company proxy" if error.reason.startswith("forward-proxy") else "TLS"
        report.bad(link, error.message)
        return False
    assert opened.transport is not None
    if settings.forward_proxy is not None:
        report.ok("company proxy", f"{settings.forward_proxy} opened a tunnel to the hub")
    ssl_object = opened.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        report.ok("TLS", "none: the hub address is plain http (the token crosses the network unencrypted)")
    else:
        certificate = ssl_object.getpeercert() or {}
        names = [value for kind, value in certificate.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
        issuer = ", ".join(f"{k}={v}" for part in certificate.get("issuer", ()) for k, v in part)
        until = datetime.fromtimestamp(ssl.cert_time_to_seconds(certificate["notAfter"]), timezone.utc)
        days = (until - datetime.now(timezone.utc)).days
        trusted = f"the CA file {settings.ca_file} and the public CAs" if settings.ca_file else "the public CAs"
        line = (f"{ssl_object.version()}, certificate for {', '.join(names) or '?'} issued by {issuer or '?'}, "
                f"valid until {until:%Y-%m-%d} ({days} days), checked for '{settings.tls_name}' against {trusted}")
        if days < 14:
            report.bad("TLS", f"{line}: it expires soon, tell your hub's admins")
        else:
            report.ok("TLS", line)
    opened.transport.abort()
    return True


async def _hub_and_token(report: _Report, hub: HubClient) -> tuple[str | None, Settings | None]:
    settings = hub.settings
    address = settings.hub
    try:
        version = await hub.version()
    except UnexpectedAnswer as answer:
        report.bad("hub API", f"{address.origin}{address.api()} answered {answer.status} instead of the hub's "
                              "version: an access gateway may be in the way (JUPYTER_HUB_HEADERS, "
                              "JUPYTER_CLIENT_CERT), or the hub address is not JupyterHub's (check its base path)")
        return None, None
    if version is None:
        report.ok("hub API", f"none at {address.api()}: a plain Jupyter server (the proxy serves "
                             f"{address.server_prefix} there)")
        return None, settings
    report.ok("hub API", f"JupyterHub {version} at {address}")
    await _sign_in(report, hub, version)  # how a token is got, so before the token
    if hub.credential is None and settings.oauth is not None:
        report.ok("token", "none yet: the proxy's first start opens the hub's sign-in in your browser")
        return version, None
    if hub.credential is None:
        report.bad("token", "none is set: run jupyter-dev-proxy once in a terminal to get one, or set "
                            "JUPYTERHUB_API_TOKEN")
        return version, None
    try:
        me = await hub.whoami()
    except TokenRefused as refused:
        report.bad("token", f"the hub refused it ({refused.status}): it is wrong, expired or revoked; make a new "
                            f"one at {address.page('token')}")
        return version, None
    except UnexpectedAnswer as answer:
        report.bad("token", str(answer))
        return version, None
    user = address.user or me.name
    hub = hub.for_user(user)
    token = await hub.token_info(me)
    server = address.server
    missing = [scope for scope in ("access:servers", "read:servers", start_scope_name(version))
               if grants(token.scopes, scope, user, server) is False]
    expiry = describe_expiry(token.expires_at, datetime.now(timezone.utc)) if token.expiry_known else "expiry not known"
    line = f"{token.owner}'s, from {settings.token_source}, {expiry}"
    if "access:servers" in missing:
        report.bad("token", f"{line}; it lacks access:servers!user={user}: make one with it at {address.page('token')}")
        return version, None
    report.ok("token", line + (f"; lacks {', '.join(missing)} (the proxy then cannot see or start the server)"
                               if missing else ""))
    return version, hub.settings


# The proxy's service, as ``--service-entry`` names it: the hub calls its OAuth client service-<name>.
SERVICE_NAME = "jupyter-dev-proxy"
_CLIENT_ID_PREFIX = "service-"
# A code no hub ever issued: the token endpoint then answers about the client (invalid_client) or the code.
_BOGUS_CODE = "jupyter-dev-proxy-doctor-checks-the-client"


async def _sign_in(report: _Report, hub: HubClient, version: str) -> None:
    """The sign-in lines: the client and its secret, the callback's port, and the failures only the browser sees;
    without a sign-in service, one line on how to get one."""
    client = hub.settings.oauth
    if client is None:
        report.ok("sign-in", "with a token; signing in with the hub's login in your browser is possible once your "
                             "hub's admin registers the proxy: `jupyter-dev-proxy doctor --service-entry` prints "
                             "the entry for them")
        return
    if await _sign_in_client(report, hub, client):
        await _sign_in_identity(report, hub, client)
    await _sign_in_callback(report, hub.settings, client)
    _browser_only_failures(report, hub.settings, client, version)


async def _sign_in_client(report: _Report, hub: HubClient, client: OAuthClient) -> bool:
    """Whether the hub knows the client and its secret: its token endpoint, given a code it never issued, refuses
    the code (400 invalid_grant) when it knows them and the client (401 invalid_client) when not."""
    try:
        await hub.token_for_code(client, _BOGUS_CODE, _BOGUS_CODE)
    except TokenRefused:
        report.bad("sign-in client", f"the hub does not know {client.client_id} with this secret: check "
                                     "JUPYTERHUB_OAUTH_CLIENT_ID and JUPYTERHUB_OAUTH_CLIENT_SECRET with your hub's "
                                     "admin (`jupyter-dev-proxy doctor --service-entry` prints the service entry "
                                     "they add)")
        return False
    except UnexpectedAnswer as answer:
        if answer.status == 400:
            report.ok("sign-in client", f"the hub knows {client.client_id} and its secret")
            return True
        report.bad("sign-in client", f"the hub's token endpoint answered {answer.status}: check the hub's log")
        return False
    report.bad("sign-in client", "the hub's token endpoint gave a token for a code it never issued: tell your "
                                 "hub's admin")
    return False


async def _sign_in_identity(report: _Report, hub: HubClient, client: OAuthClient) -> None:
    """Whose the secret is (it is the service's api_token): the service the client id names, or say which."""
    expected = client.client_id.removeprefix(_CLIENT_ID_PREFIX)
    async with hub_client(hub.settings, FixedToken(client.client_secret)) as as_service:
        try:
            me = await as_service.whoami()
        except UnexpectedAnswer as answer:
            report.bad("sign-in secret", f"the hub did not say whose it is ({answer.status}): a service's secret is "
                                         f"its api_token; ask your hub's admin for the api_token of '{expected}'")
            return
    if me.kind == "service" and me.name == expected:
        report.ok("sign-in secret", f"the api_token of the service '{me.name}'")
    else:
        report.bad("sign-in secret", f"it is the token of the {me.kind} '{me.name}', not of the service "
                                     f"'{expected}' that {client.client_id} names: ask your hub's admin which is "
                                     "right")


# What the proxy's callback answers a GET without a sign-in's state: it is a jupyter-dev-proxy that serves it.
_CALLBACK_REASONS = frozenset({"no-sign-in-pending", "sign-in-state-wrong"})


async def _sign_in_callback(report: _Report, settings: Settings, client: OAuthClient) -> None:
    """Whether the proxy can take the hub's redirect back: its address can be listened on now, or a running proxy
    answers the callback there. Another program on the port would get the browser, and the sign-in would fail."""
    callback = client.callback_url
    try:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, settings.listen_host,
                                                                settings.listen_port)
    except OSError as exc:
        taken = exc.strerror or str(exc)
    else:
        server.close()
        await server.wait_closed()
        report.ok("sign-in callback", f"{callback} (the hub sends your browser back there): the proxy can listen "
                                      f"on {settings.listen_host}:{settings.listen_port}")
        return
    if await _answered_by_a_proxy(callback):
        report.ok("sign-in callback", f"{callback}: a running jupyter-dev-proxy serves it (a second one on port "
                                      f"{settings.listen_port} could not start)")
        return
    report.bad("sign-in callback", f"{settings.listen_host}:{settings.listen_port} is taken by another program "
                                   f"({taken}), and the hub sends your browser back to exactly {callback}: stop that "
                                   "program (the service's redirect URI fixes the port)")


async def _answered_by_a_proxy(callback: URL) -> bool:
    """Whether a GET of the callback without a sign-in's state gets this proxy's own JSON refusal."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT_SECONDS)) as session:
            async with session.get(callback, allow_redirects=False) as response:
                answer = json.loads(await response.read())
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("reason") in _CALLBACK_REASONS


def _browser_only_failures(report: _Report, settings: Settings, client: OAuthClient, version: str) -> None:
    """Each way a sign-in fails that only the browser sees, with the words the hub's page shows (JupyterHub 6.1)."""
    service = client.client_id.removeprefix(_CLIENT_ID_PREFIX)
    grant = (f'c.JupyterHub.extra_user_scopes = ["access:services!service={service}"]' if from_jupyterhub_6(version)
             else f'a role with access:services!service={service} in c.JupyterHub.load_roles')
    report.note("if the hub shows", f'"You do not have permission to access JupyterHub service {service}" (403): '
                                    f"your account may not use the proxy's service; the admin adds {grant}")
    report.note("if the hub shows", f'"Mismatching redirect URI." (400): the service\'s oauth_redirect_uri must be '
                                    f"exactly {client.callback_url} (localhost and 127.0.0.1 differ, so do ports): "
                                    "the admin fixes it, or set JUPYTERHUB_OAUTH_CALLBACK_URL to the registered one")
    report.note("if the hub shows", f'"Invalid client_id parameter value." (400): the hub has no service with the '
                                    f"client id {client.client_id} (removed, or renamed): ask your hub's admin")
    report.note("if nothing comes back", f"within {SIGN_IN_REMINDER_SECONDS / 60:.0f} minutes of the sign-in "
                                         "(the proxy then logs it): the hub showed one of the pages above, or your "
                                         f"browser cannot reach {client.callback_url} (it runs on another computer "
                                         "than the proxy, or the proxy stopped); the sign-in URL keeps working")


async def _server(report: _Report, hub: HubClient) -> bool:
    address = hub.settings.hub
    model = await hub.server()
    if model.state is ServerState.UNKNOWN:
        report.ok("server", f"{address.server_label} {address.server_prefix}: state not readable (no read:servers)")
        return True
    if model.state is ServerState.RUNNING:
        report.ok("server", f"{address.server_label} {address.server_prefix} is running, last activity "
                            f"{model.last_activity}")
        return True
    report.bad("server", f"{address.server_label} {address.server_prefix} is not running: start it from "
                         f"{address.page('home')} (or start the proxy, which starts it)")
    return False


async def _kernelspecs_and_websocket(report: _Report, hub: HubClient, transport: HubTransport) -> None:
    address = hub.settings.hub
    status, specs, _ = await hub.call("GET", f"{address.server_prefix}api/kernelspecs")
    if status == 200 and isinstance(specs, dict):
        report.ok("kernelspecs", f"{len(specs.get('kernelspecs', {}))} kernels, default "
                                 f"'{specs.get('default')}'")
    else:
        report.bad("kernelspecs", f"{address.server_prefix}api/kernelspecs answered {status}: check the server's "
                                  "log on the hub")
        return
    # A websocket that starts nothing, opened as the relay opens a kernel's: jupyter_server's event stream.
    url = upstream_url_for(hub.settings, "/api/events/subscribe")
    try:
        opened, _ = await open_hub_websocket(hub.settings, transport, url, CIMultiDictProxy(CIMultiDict()), [],
                                             lambda: hub.credential.token if hub.credential else "",
                                             answer_seconds=_TIMEOUT_SECONDS)
    except (ProxyError, HubError, asyncio.TimeoutError) as exc:
        found = (exc.message if isinstance(exc, ProxyError) else str(exc)
                 or f"the hub did not answer within {_TIMEOUT_SECONDS:.0f} s.")
        report.bad("websocket", f"a handshake with {address.server_prefix}api/events/subscribe failed: {found} A "
                                "gateway or ingress in front of the hub may not pass websockets.")
        return
    assert opened.transport is not None
    opened.transport.abort()
    report.ok("websocket", f"a handshake with {address.server_prefix}api/events/subscribe was accepted")


async def run_doctor(settings: Settings, argv: Sequence[str], cwd: Path, out: TextIO) -> int:
    """Check every link in order and print a line each; 0 when all hold, 1 otherwise."""
    report = _Report(out)
    _settings_lines(report, argv, cwd, settings)
    if not await _name_and_tcp(report, settings) or not await _tunnel_and_tls(report, settings):
        return 1
    try:
        async with hub_client(settings, credential_for(settings)) as hub:
            version, settings_known = await _hub_and_token(report, hub)
            if settings_known is not None:
                hub = hub.for_user(settings_known.hub.user)
                running = version is None or await _server(report, hub)
                if running:
                    await _kernelspecs_and_websocket(report, hub, HubTransport(settings_known))
    except HubError as exc:
        report.bad("hub", str(exc))
    return 0 if report.healthy else 1


# The scopes the proxy's sign-in token needs, each on the signing-in user's own servers only (a bare !user becomes
# !user=<who signs in>), and why: what the service entry allows, and the guide explains.
_ENTRY_SCOPES: tuple[tuple[str, str], ...] = (
    ("access:servers!user", "open the user's server: every request the IDE sends"),
    ("read:servers!user", "see whether it runs, and follow it while it starts"),
    ("{start}", "start it when it is stopped"),
    ("read:tokens!user", "read the token's own expiry, to sign in again before it ends"),
)
_START_SCOPES = {True: "start:servers!user", False: "servers!user"}  # JupyterHub 6 split start out of servers
_SECRET_MAKER = "python3 -c 'import secrets; print(secrets.token_hex(32))'"
_SECRET_PLACEHOLDER = f"<a long random secret: {_SECRET_MAKER}>"
_SECRET_IN_SHELL = "<a long random secret>"  # in the curl line's single quotes, which the maker's would end
_USER_GRANT = f"access:services!service={SERVICE_NAME}"


def service_entry(settings: Settings, hub_version: str | None) -> str:
    """What a hub's admin adds so that users sign in to this proxy with the hub's login: the service entry for
    jupyterhub_config.py, the same as a run-time API call, the users' grant, and what the users set. The callback is
    the one this proxy's settings give; ``hub_version`` None (the hub did not say) gives both versions' start scope."""
    callback = str(settings.oauth.callback_url if settings.oauth else
                   default_callback_url(settings.listen_host, settings.listen_port))
    six = None if hub_version is None else from_jupyterhub_6(hub_version)
    starts = [_START_SCOPES[True], _START_SCOPES[False]] if six is None else [_START_SCOPES[six]]
    scopes = [scope.format(start=starts[0]) for scope, _ in _ENTRY_SCOPES]
    body = {"oauth_client_id": f"{_CLIENT_ID_PREFIX}{SERVICE_NAME}", "oauth_redirect_uri": callback,
            "api_token": _SECRET_IN_SHELL, "oauth_client_allowed_scopes": scopes, "oauth_no_confirm": True}
    scope_lines = []
    for (scope, why), value in zip(_ENTRY_SCOPES, scopes):
        other = (f' (JupyterHub {"5" if starts[0] == _START_SCOPES[True] else "6"}: "{starts[1]}")'
                 if len(starts) > 1 and scope == "{start}" else "")
        scope_lines.append(f'        "{value}",  # {why}{other}')
    hub = f"JupyterHub {hub_version}" if hub_version else "a JupyterHub whose version it did not say"
    grant_six = f"c.JupyterHub.extra_user_scopes = {json.dumps([_USER_GRANT])}"
    grant_five = f'c.JupyterHub.load_roles.append({{"name": "user", "scopes": {json.dumps(["self", _USER_GRANT])}}})'
    if six is None:
        grant = (f"{grant_six}  # JupyterHub 6\n"
                 f"# JupyterHub 5, instead of the line above (keep 'self': it is the users' own rights):\n"
                 f"# {grant_five}")
    else:
        grant = grant_six if six else f"{grant_five}  # keep 'self': it is the users' own rights"
    api = settings.hub.url(settings.hub.api(f"services/{SERVICE_NAME}"))
    return f'''# The service entry that lets users sign in to jupyter-dev-proxy with the hub's login, for {settings.hub}
# ({hub}). The redirect URI fixes the proxy's address: users whose proxy listens elsewhere
# (another port, or 127.0.0.1 instead of localhost) need an entry of their own, with another name.

# 1. In jupyterhub_config.py (then restart the hub):
c.JupyterHub.services.append({{
    "name": "{SERVICE_NAME}",
    "oauth_client_id": "{body["oauth_client_id"]}",
    # Exactly where the proxy takes the browser back after the sign-in: scheme, host, port and path.
    "oauth_redirect_uri": "{callback}",
    # The client secret, which the users set as JUPYTERHUB_OAUTH_CLIENT_SECRET (the hub takes at most 64
    # characters); give the service no role.
    "api_token": "{_SECRET_PLACEHOLDER}",
    # Only what the proxy needs, on the signing-in user's own servers (!user: the user who signs in).
    "oauth_client_allowed_scopes": [
{chr(10).join(scope_lines)}
    ],
    # The user signs in to reach their own server through a program of their own; a confirmation page would add
    # a click to every sign-in and protect nothing.
    "oauth_no_confirm": True,
}})
# Who may sign in with it (here: every user); the hub shows the others "You do not have permission to access
# JupyterHub service {SERVICE_NAME}".
{grant}
# The proxy always sends PKCE (S256): c.JupyterHub.oauth_require_pkce = True may be on.
# c.JupyterHub.oauth_token_expires_in (seconds; default 14 days) decides how often users sign in again.

# 2. Or, instead of the service entry in 1 (not both), at run time without a restart (JupyterHub 5 and later), with
# an admin token that holds admin:services; the users' grant above still needs the config and a restart, unless
# they hold access:services already. Make the secret with {_SECRET_MAKER}.
curl -X POST -H "Authorization: token $ADMIN_TOKEN" -H "Content-Type: application/json" \\
  {api} \\
  -d '{json.dumps(body)}'

# 3. What the users set (the secret is the api_token above):
JUPYTERHUB_OAUTH_CLIENT_ID={body["oauth_client_id"]}
JUPYTERHUB_OAUTH_CLIENT_SECRET=<the api_token>
'''


async def run_service_entry(settings: Settings, out: TextIO) -> int:
    """Print the service entry for this proxy's hub, asking the hub its version (for the start scope) if it can."""
    try:
        async with hub_client(settings, None) as hub:
            version = await hub.version()
    except HubError:
        version = None
    out.write(service_entry(settings, version))
    out.flush()
    return 0
