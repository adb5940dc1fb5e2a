"""The naive relay of issue 19: the simplest aiohttp thing that does the proxy's job, as a yardstick for its cost.

It rewrites ``/x`` to ``/user/<name>/x`` on the upstream, puts ``Authorization: token <T>`` on every request,
relays small answers read whole and large ones streamed, and relays websockets message by message. Nothing
else: no Host or token check, no confinement, no swap, no limits. A benchmark candidate only; never expose it.

    python bench/naive_relay.py --upstream http://127.0.0.1:8000 --user alice --token T [--ca CA --server-name N]

Listens on 127.0.0.1 (``--port``, default 0: any free port), prints ``naive relay listening on
http://127.0.0.1:PORT/`` once it does, and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's packages

from bench.processes import run_on_fastest_loop  # noqa: E402

SMALL = 64 * 1024  # answers up to this size (by Content-Length) are read whole and sent in one write
# Not copied from one side to the other: hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection, Host and
# Authorization are the relay's to set, and Content-Length is recomputed by aiohttp for what is actually sent.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "authorization", "content-length"}


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """The end-to-end headers: hop-by-hop ones, Host, Authorization and Content-Length are the relay's own."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


class NaiveRelay:
    """One client session (keep-alive pool) to the upstream; one handler for every request."""

    def __init__(self, upstream: str, user: str, token: str, ssl_ctx: ssl.SSLContext | None,
                 server_name: str | None) -> None:
        self.base, self.prefix = upstream.rstrip("/"), f"/user/{user}"
        self.auth = f"token {token}"
        self.tls = {"ssl": ssl_ctx, "server_hostname": server_name} if ssl_ctx else {}
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False,
                                             cookie_jar=aiohttp.DummyCookieJar(),
                                             timeout=aiohttp.ClientTimeout(total=None))

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        url = self.base + self.prefix + request.raw_path
        headers = _forwarded(request.headers)
        headers["Authorization"] = self.auth
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.websocket(request, url, headers)
        body = request.content if request.body_exists else None
        async with self.session.request(request.method, url, headers=headers, data=body, allow_redirects=False,
                                        **self.tls) as answer:
            out_headers = _forwarded(answer.headers)
            if answer.content_length is not None and answer.content_length <= SMALL:
                return web.Response(status=answer.status, headers=out_headers, body=await answer.read())
            response = web.StreamResponse(status=answer.status, headers=out_headers)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def websocket(self, request: web.BaseRequest, url: str, headers: dict[str, str]) -> web.StreamResponse:
        for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
                     "Sec-WebSocket-Protocol"):
            headers.pop(name, None)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        async with self.session.ws_connect(url, headers=headers, protocols=offered, max_msg_size=0,
                                           autoping=True, **self.tls) as hub:
            ide = web.WebSocketResponse(protocols=(hub.protocol,) if hub.protocol else (), max_msg_size=0)
            await ide.prepare(request)

            async def pump(source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                           sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
                async for msg in source:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(msg.data)
                    elif msg.type is aiohttp.WSMsgType.TEXT:
                        await sink.send_str(msg.data)
                await sink.close()

            await asyncio.gather(pump(ide, hub), pump(hub, ide), return_exceptions=True)
            return ide


async def serve(args: argparse.Namespace) -> None:
    ssl_ctx = ssl.create_default_context(cafile=args.ca) if args.upstream.startswith("https") else None
    relay = NaiveRelay(args.upstream, args.user, args.token, ssl_ctx, args.server_name)
    runner = web.ServerRunner(web.Server(relay.handle), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(f"naive relay listening on http://127.0.0.1:{port}/", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await relay.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="scheme://host:port of the hub or server")
    parser.add_argument("--user", required=True)
    parser.add_argument("--token", required=True, help="the token put on every request")
    parser.add_argument("--ca", help="CA file for a TLS upstream")
    parser.add_argument("--server-name", help="TLS name to verify when it differs from the upstream's host")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    run_on_fastest_loop(serve(args))  # the proxy's loop when installed: the same for every process


if __name__ == "__main__":
    main()
