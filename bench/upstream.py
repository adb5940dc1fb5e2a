"""A fast synthetic Jupyter-like upstream for the benchmark, laid out like a hub's ``/user/<name>/``.

It does as little as possible per request so that whatever sits between it and the client is the
bottleneck. Endpoints (all require ``Authorization: token <token>``; anything else is a 404, as on a plain
jupyter_server, so the proxy's startup check finds "no hub API, a plain server"):

    GET  /user/<name>/api/status                 a ~200 B JSON answer (the "small GET")
    GET  /user/<name>/files/blob?bytes=N         N bytes streamed in 256 KiB chunks, Content-Length set
    GET  /user/<name>/files/text?bytes=N         the same as text/csv (rows of numbers): an answer the proxy
                                                 looks into for the hub token, token absent
    GET  /user/<name>/lab                        a ~5 KB HTML page like JupyterLab's, the token that
                                                 authenticated it written into its page config (as
                                                 jupyterhub's single-user extension does): a swap with work
    PUT  /user/<name>/api/contents/upload        reads and discards the body, answers {"received": N}
    GET  /user/<name>/api/kernels/echo/channels  websocket echo; picks v1.kernel.websocket.jupyter.org
                                                 when the client offers it (as jupyter_server does)

Listens on 127.0.0.1 only: one plain-HTTP port and, with --cert/--key, one TLS port; prints
``{"http": PORT, "https": PORT}`` on stdout once both listen, and stops on SIGTERM/SIGINT or when its
stdin closes (so it never outlives the benchmark that started it).

    python bench/upstream.py --token T [--user alice] [--cert server.pem --key server.key]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's packages

from bench.processes import run_on_fastest_loop  # noqa: E402
from tests.kit.kernel import KERNEL_PROTOCOL  # noqa: E402
CHUNK = 256 * 1024
_BLOB = bytes(range(256)) * (CHUNK // 256)
_MAX_BLOB_BYTES = 8 * 1024**3  # a bound on what one request may ask for

# 256 KiB of CSV rows (numbers, commas, newlines: hex digits everywhere, so the swap's look for a token's first
# bytes has work at every chunk end), cut at a row boundary and padded with newlines to the chunk size.
_ROWS = "".join(f"{i},{i * 7919 % 100003},{i * 0.618:.6f},{i * 2654435761 % 4294967296:x}\n" for i in range(20000))
_TEXT = (_ROWS.encode()[:CHUNK].rpartition(b"\n")[0] + b"\n").ljust(CHUNK, b"\n")

# A JupyterLab page as jupyter_server renders /lab: the page config holds the token that authenticated the request.
_LAB_PAGE = """<!doctype html>
<html>
<head>
  <meta charset="utf-8">
  <title>JupyterLab</title>
  <link rel="icon" type="image/x-icon" href="/user/{user}/static/favicons/favicon.ico" class="idle favicon">
  <link rel="stylesheet" href="/user/{user}/static/lab/main.css?v={pad}">
  <script id="jupyter-config-data" type="application/json">{config}</script>
  <script defer src="/user/{user}/static/lab/main.js?v={pad}"></script>
</head>
<body>
  <script type="text/javascript">
    /* Remove token from URL. */
    (function () {{
      var location = window.location;
      var search = location.search;
      var parsedURL = new URL(location.href);
      if (parsedURL.searchParams.has('token')) {{
        parsedURL.searchParams.delete('token');
        window.history.replaceState({{}}, '', parsedURL.href);
      }}
    }})();
  </script>
</body>
</html>
"""
_LAB_CONFIG = {
    "appName": "JupyterLab", "appNamespace": "lab", "appUrl": "/lab", "appVersion": "4.4.0",
    "buildAvailable": False, "buildCheck": False, "cacheFiles": True, "exposeAppInBrowser": False,
    "extensionManager": {"can_install": True, "install_path": "/opt/conda", "name": "PyPI"},
    "federated_extensions": [
        {"extension": f"./extension{i}", "load": f"static/remoteEntry.{i:04x}{'0' * 16}.js",
         "name": f"@jupyterlab/example-extension-{i}", "style": "./style"} for i in range(24)],
    "fullAppUrl": "/user/{user}/lab", "fullLabextensionsUrl": "/user/{user}/lab/extensions",
    "fullStaticUrl": "/user/{user}/static/lab", "hubHost": "", "hubPrefix": "/hub/",
    "hubServerName": "", "hubUser": "{user}", "notebookStartsKernel": True, "token": None,
}


def lab_page(user: str, token: str) -> bytes:
    """The /lab page for ``token``, ~5 KB: the token once, in the page config."""
    config = {k: v.replace("{user}", user) if isinstance(v, str) else v for k, v in _LAB_CONFIG.items()}
    config["token"] = token
    return _LAB_PAGE.format(user=user, pad="0" * 20, config=json.dumps(config)).encode()


# ~200 B, shaped like jupyter_server's /api/status
SMALL_BODY = json.dumps({
    "started": "2026-11-22T00:00:00.000000Z", "last_activity": "2026-11-22T00:00:00.000000Z",
    "connections": 0, "kernels": 0, "version": "2.21.1",
    "note": "synthetic upstream for jupyter-dev-proxy's benchmark", "pad": "x" * 20,
}).encode()


def build_app(user: str, token: str) -> web.Application:
    expected = f"token {token}"
    prefix = f"/user/{user}"

    @web.middleware
    async def check_token(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.match_info.http_exception is None and request.headers.get("Authorization") != expected:
            return web.json_response({"message": "bad token", "reason": None}, status=403)
        return await handler(request)

    async def status(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_BODY, content_type="application/json")

    page = lab_page(user, token)

    async def lab(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def blob(request: web.Request) -> web.StreamResponse:
        return await _stream(request, _BLOB, "application/octet-stream")

    async def text(request: web.Request) -> web.StreamResponse:
        return await _stream(request, _TEXT, "text/csv; charset=utf-8")

    async def _stream(request: web.Request, chunk: bytes, content_type: str) -> web.StreamResponse:
        """``bytes=N`` bytes of ``chunk`` repeated, written a chunk at a time, Content-Length set."""
        size = int(request.query.get("bytes", "0"))
        if not 0 <= size <= _MAX_BLOB_BYTES:
            raise web.HTTPBadRequest(text="bytes out of range")
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = size
        await response.prepare(request)
        view = memoryview(chunk)
        left = size
        while left > 0:
            n = min(left, CHUNK)
            await response.write(view[:n])
            left -= n
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        received = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            received += len(chunk)
        return web.json_response({"received": received})

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(KERNEL_PROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application(middlewares=[check_token], client_max_size=0)
    app.router.add_get(f"{prefix}/api/status", status)
    app.router.add_get(f"{prefix}/files/blob", blob)
    app.router.add_get(f"{prefix}/files/text", text)
    app.router.add_get(f"{prefix}/lab", lab)
    app.router.add_put(f"{prefix}/api/contents/upload", upload)
    app.router.add_get(f"{prefix}/api/kernels/echo/channels", echo)
    return app


async def serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(build_app(args.user, args.token), access_log=None, handle_signals=False)
    await runner.setup()
    ports: dict[str, int] = {}
    plain = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await plain.start()
    ports["http"] = plain._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=4096)
        await tls.start()
        ports["https"] = tls._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps(ports), flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # stdin closing means the benchmark is gone: stop too.
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: stop.set() if not os.read(stdin, 4096) else None)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token", required=True)
    parser.add_argument("--user", default="alice")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    run_on_fastest_loop(serve(args))  # the proxy's loop when installed: the same for every process


if __name__ == "__main__":
    main()
