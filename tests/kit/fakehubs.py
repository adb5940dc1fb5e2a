"""Purpose-built upstreams for what a real jupyter_server cannot show or do.

``fake_hub`` serves a handler of the test's own on a raw socket: a hub that misbehaves in one precise way.
``echo_app`` reports what really arrived (method, raw path, headers, body digest) and can misbehave on
request: redirect anywhere, set cookies, send gzip, break off mid-body, close a websocket with a code.
``StaleConnectionUpstream`` closes a kept-alive connection exactly when the next request arrives — the
race a hub's configurable-http-proxy (idle timeout 5 s) produces.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from jupyter_dev_proxy.timeouts import timeout
from tests.kit.kernel import KERNEL_PROTOCOL

SEEN = web.AppKey("seen", list[web.Request])
CLOSE_CODES = web.AppKey("close_codes", list[int | None])

Handle = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_hub(handle: Handle) -> AsyncIterator[int]:
    """A raw TCP server standing in for a hub that misbehaves in one precise way; yields its port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _echo(request: web.Request) -> web.Response:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_sha256": digest.hexdigest(),
        "body_len": size,
    })


async def _redirect(request: web.Request) -> web.Response:
    return web.Response(status=int(request.query.get("status", "302")), headers={"Location": request.query["to"]})


async def _status(request: web.Request) -> web.Response:
    """Answer with any status and a Jupyter-shaped body, as a hub does for a server that is not running."""
    code = int(request.query["code"])
    return web.json_response({"message": f"status {code} from upstream", "reason": None}, status=code)


async def _cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "own=1; Path=/user/alice/api; HttpOnly")
    response.headers.add("Set-Cookie", "hubonly=2; Path=/hub/; Domain=hub.example.org")
    response.headers.add("Set-Cookie", "root=3; Domain=hub.example.org; Path=/user/alice")
    return response


async def _gzip(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(b"x" * 10_000), headers={"Content-Encoding": "gzip",
                                                                      "Content-Type": "text/plain"})


# How ``/written-token?encoding=`` compresses its body: as HTTP means, and in the ways a broken or unusual hub
# front does (answers a browser's lenient decoder still reads).
_ENCODED: dict[str, Callable[[bytes], bytes]] = {
    "": lambda body: body,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": lambda body: body,  # only claims to be
    "raw-deflate": lambda body: zlib.compress(body)[2:-4],  # no zlib header: what some servers send as deflate
    "gzip-cut": lambda body: gzip.compress(body)[:-8],  # its checksum and length cut off
    "gzip-bad-crc": lambda body: gzip.compress(body)[:-8] + b"\0\0\0\0" + gzip.compress(body)[-4:],
    "gzip-twice": lambda body: gzip.compress(gzip.compress(body)),
    "gzip-members": lambda body: gzip.compress(body[:len(body) // 2]) + gzip.compress(body[len(body) // 2:]),
    "gzip-identity": gzip.compress,
}
_ENCODING_HEADERS = {"raw-deflate": ("deflate",), "gzip-cut": ("gzip",), "gzip-bad-crc": ("gzip",),
                     "gzip-twice": ("gzip", "gzip"), "gzip-members": ("gzip",), "gzip-identity": ("gzip, identity",)}


async def _written_token(request: web.Request) -> web.StreamResponse:
    """A page that writes the token that authenticated it, as a single-user server does into JupyterLab's page
    config: ``?filler=N`` bytes before it and after it, sent in ``?chunk=`` byte writes, as ``?type=``, compressed
    with ``?encoding=`` one of _ENCODED, with a Content-Length unless
    ``?chunked=1``; the token also goes in an ``X-Token-Seen`` header."""
    token = request.headers["Authorization"].partition(" ")[2]
    filler = b"f" * int(request.query.get("filler", "0"))
    body = filler + b'{"token": "' + token.encode() + b'"}' + filler
    encoding = request.query.get("encoding", "")
    body = _ENCODED[encoding](body)
    headers = CIMultiDict({"Content-Type": request.query.get("type", "text/html"), "X-Token-Seen": token,
                           "ETag": '"v1"'})
    for coding in _ENCODING_HEADERS.get(encoding, (encoding,) if encoding else ()):
        headers.add("Content-Encoding", coding)
    if not request.query.get("chunked"):
        headers["Content-Length"] = str(len(body))
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    step = int(request.query.get("chunk", str(len(body) or 1)))
    for start in range(0, len(body), step):
        await response.write(body[start:start + step])
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def _empty_gzip(request: web.Request) -> web.StreamResponse:
    """A chunked text/html that says gzip and has no body at all."""
    response = web.StreamResponse(headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write_eof()
    return response


async def _break_off(request: web.Request) -> web.StreamResponse:
    """Promise 1 MiB, send 64 KiB, then reset the connection."""
    response = web.StreamResponse(headers={"Content-Length": str(1024 * 1024)})
    await response.prepare(request)
    await response.write(b"a" * 65536)
    await asyncio.sleep(0.05)  # let the bytes leave before the reset
    assert request.transport is not None
    request.transport.abort()
    return response


async def _stream(request: web.Request) -> web.StreamResponse:
    """Send ``size`` bytes chunked (no Content-Length), as a slow or generated download would."""
    size = int(request.query["size"])
    response = web.StreamResponse()
    await response.prepare(request)
    block = bytes(range(256)) * 256
    while size > 0:
        await response.write(block[:size])
        size -= len(block)
    await response.write_eof()
    return response


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    """Echo every frame; ``?report=1`` first sends what the handshake carried; after the first echo,
    ``?close=N`` closes with N and ``?vanish=1`` drops the connection without a close frame."""
    ws = web.WebSocketResponse(protocols=(KERNEL_PROTOCOL,), max_msg_size=0)
    await ws.prepare(request)
    if request.query.get("report"):
        await ws.send_json({"protocol": ws.ws_protocol, "raw_path": request.raw_path,
                            "headers": [[k, v] for k, v in request.headers.items()]})
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        if "close" in request.query:
            await ws.close(code=int(request.query["close"]), message=b"bye")
        if "vanish" in request.query:
            assert request.transport is not None
            request.transport.abort()  # gone without a close frame, like a crashed or culled server
            break
    request.app[CLOSE_CODES].append(ws.close_code)
    return ws


@web.middleware
async def _record(request: web.Request, handler):  # type: ignore[no-untyped-def]
    request.app[SEEN].append(request)
    return await handler(request)


def echo_app() -> web.Application:
    app = web.Application(middlewares=[_record], client_max_size=0)
    app[SEEN] = []
    app[CLOSE_CODES] = []
    prefix = "/user/alice"
    app.router.add_route("*", f"{prefix}/redirect", _redirect)
    app.router.add_get(f"{prefix}/cookies", _cookies)
    app.router.add_get(f"{prefix}/status", _status)
    app.router.add_get(f"{prefix}/gzip", _gzip)
    app.router.add_get(f"{prefix}/written-token", _written_token)
    app.router.add_get(f"{prefix}/empty-gzip", _empty_gzip)
    app.router.add_get(f"{prefix}/break-off", _break_off)
    app.router.add_get(f"{prefix}/stream", _stream)
    app.router.add_get(f"{prefix}/ws", _websocket)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


class _RawUpstream:
    """A raw HTTP/1.1 server on an ephemeral port, serving each connection with ``_serve``."""

    _server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class StaleConnectionUpstream(_RawUpstream):
    """Answers the first request on each connection (keep-alive), then drops the connection when the next
    request arrives on it, without answering — as if its idle timer fired just as the request was sent."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered: list[str] = []
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            length = next((int(h.split(":", 1)[1]) for h in header_lines
                           if h.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length)
            self.answered.append(f"{request_line.split()[0]} {len(body)}")
            reply = f"request {len(self.answered)} body {len(body)}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
                         b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply)
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: drop it unanswered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class CountingUpstream(_RawUpstream):
    """A raw HTTP/1.1 server that answers every request with 200 on a kept-alive connection and records, per
    connection, when it was accepted and which requests came on it: what a test needs to see whether a request
    went out on a connection opened beforehand, and whether anything at all was sent on the others. With
    ``idle_close`` it closes a connection after that many seconds without a request, as a hub's proxy does."""

    def __init__(self, idle_close: float | None = None) -> None:
        self.idle_close = idle_close
        self.accepted_at: list[float] = []
        self.requests: list[tuple[int, float, str]] = []  # (connection number, when, request line)
        self.closed: list[int] = []  # connections that ended (closed by either side)
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        number = len(self.accepted_at)
        self.accepted_at.append(loop.time())
        try:
            while True:
                async with timeout(self.idle_close):
                    head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append((number, loop.time(), head.split(b"\r\n", 1)[0].decode("latin-1")))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.closed.append(number)
            writer.close()
