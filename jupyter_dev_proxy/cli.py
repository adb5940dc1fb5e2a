"""The command line: settings → start → banner → serve until Ctrl-C or SIGTERM → clean shutdown.

The only module that prints to the terminal or chooses an exit status.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from . import __version__
from .app import AccessLogger, build_app
from .config import ConfigError, Settings, load_settings

# Signals that mean "stop now, cleanly": Ctrl-C in a terminal, and what service managers send.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# How long in-flight requests get to finish after a stop signal before connections are closed.
SHUTDOWN_GRACE_SECONDS = 2.0

EXIT_OK, EXIT_USAGE = 0, 2


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _banner(settings: Settings, port: int) -> str:
    host = settings.listen_host if settings.listen_host not in ("0.0.0.0", "::") else "localhost"
    local = f"http://{host}:{port}/"
    token = "<YOUR_API_TOKEN>" if settings.forwards_ide_token else settings.local_token
    checked = f" (certificate checked for '{settings.tls_name}')" if settings.tls_name else ""
    lines = [
        f"jupyter-dev-proxy {__version__}: {local} → {settings.hub_url}{settings.server_prefix}{checked}",
        f"Authorization URL with token for IDE: {local}?token={token}",
    ]
    if settings.forwards_ide_token:
        lines.append("No JUPYTERHUB_API_TOKEN is set: replace <YOUR_API_TOKEN> with your hub API token "
                     f"(make one at {settings.hub_url}/hub/token).")
    lines.append("Paste the URL into PyCharm or VS Code as an existing Jupyter server. Press Ctrl-C to stop.")
    return "\n".join(lines)


def _warnings(settings: Settings) -> list[str]:
    warnings = []
    if not _is_loopback(settings.listen_host):
        warnings.append(f"The proxy listens on {settings.listen_host}, not only on this computer: anyone who "
                        "can reach it and learns the token can use your hub account.")
    if settings.hub_url.scheme == "http" and not _is_loopback(settings.hub_url.host or ""):
        warnings.append(f"The hub address {settings.hub_url} is plain http: your token crosses the network "
                        "unencrypted. Use https:// unless you know the network is private.")
    return warnings


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    """Run the proxy until ``stop`` is set; return the exit status."""
    log = logging.getLogger("jupyter_dev_proxy")
    runner = web.AppRunner(build_app(settings), access_log_class=AccessLogger, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    try:
        await runner.setup()
    except ConfigError as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        await site.start()
    except OSError as exc:
        print(f"jupyter-dev-proxy: cannot listen on {settings.listen_host}:{settings.listen_port} "
              f"({exc.strerror}): another program (maybe another proxy) uses it; stop it or set "
              "JUPYTER_PROXY_PORT to another port.", file=sys.stderr)
        await runner.cleanup()
        return EXIT_USAGE
    port = runner.addresses[0][1]
    for warning in _warnings(settings):
        log.warning(warning)
    print(_banner(settings, port), flush=True)
    await stop.wait()
    log.info("Stopping: closing connections.")
    await runner.cleanup()
    return EXIT_OK


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in HANDLED_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    return await serve(settings, stop)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ, Path.cwd())
    except ConfigError as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if settings.log_level == "debug" else logging.WARNING)
    return asyncio.run(_main(settings))
