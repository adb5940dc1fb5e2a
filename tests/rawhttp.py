"""Raw HTTP on a socket, for what a client library would refuse to send or hide: malformed requests, exact
targets, and hubs that answer in broken ways.

``exchange`` sends bytes exactly as given and reads one answer, telling whether the connection was then closed;
``fake_hub`` is a raw TCP server standing in for a hub that misbehaves in one precise way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

# How long a connection may stay silent after an answer before the test takes it as kept open.
OPEN_AFTER_SECONDS = 0.5


@dataclass(frozen=True)
class RawAnswer:
    """One answer as it came off the socket; ``status`` None when the connection closed without one."""

    status: int | None
    headers: CIMultiDict[str]
    body: bytes
    closed: bool  # the proxy closed the connection after the answer

    def json(self) -> Any:
        return json.loads(self.body)


async def _read_body(reader: asyncio.StreamReader, headers: CIMultiDict[str]) -> bytes:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return body[:-2]
            body = body[:-2]
    if "Content-Length" in headers:
        return await reader.readexactly(int(headers["Content-Length"]))
    return await reader.read()


async def read_answer(reader: asyncio.StreamReader, head_request: bool = False) -> RawAnswer:
    """Read one answer (1xx answers skipped) and whether the connection closed right after it."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return RawAnswer(None, CIMultiDict(), b"", closed=True)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        if status >= 200:
            break
    headers: CIMultiDict[str] = CIMultiDict()
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    body = b"" if head_request or status in (204, 304) else await _read_body(reader, headers)
    try:
        closed = await asyncio.wait_for(reader.read(1), OPEN_AFTER_SECONDS) == b""
    except TimeoutError:
        closed = False
    return RawAnswer(status, headers, body, closed)


async def exchange(port: int, data: bytes, timeout: float = 10.0, host: str = "127.0.0.1") -> RawAnswer:
    """Send ``data`` as it is on a new connection and read the first answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        async with asyncio.timeout(timeout):
            return await read_answer(reader, head_request=data.startswith(b"HEAD "))
    finally:
        writer.close()


def request_head(method: str, target: str, token: str | None, *extra: str, version: str = "HTTP/1.1",
                 host: str = "localhost") -> bytes:
    """A request head written out by hand: ``extra`` header lines are added as they are."""
    lines = [f"{method} {target} {version}".rstrip(), f"Host: {host}"]
    if token is not None:
        lines.append(f"Authorization: token {token}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


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
