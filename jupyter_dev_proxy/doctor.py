"""``jupyter-dev-proxy doctor``: each link of the chain from this computer to the user's server, checked in order,
one line each — ✓ what was found, or ✗ what is wrong and the one thing to do. Nothing it prints is a secret, so a
user can paste it into a bug report. Exit 0 when every link holds.

    settings → name → TCP → [company proxy] → TLS → hub API → token → server → kernelspecs → websocket
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO, cast

from multidict import CIMultiDict, CIMultiDictProxy

from .config import Settings, setting_origins
from .errors import ProxyError
from .hubapi import (
    HubClient,
    HubError,
    ServerState,
    TokenRefused,
    UnexpectedAnswer,
    grants,
    hub_client,
    start_scope_name,
)
from .routing import upstream_url_for
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


class _Opened(asyncio.Protocol):
    """A connection the doctor opens to look at its tunnel and TLS, and closes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)


def _settings_lines(report: _Report, argv: Sequence[str], cwd: Path, settings: Settings) -> None:
    origins = setting_origins(argv, os.environ, cwd)
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
