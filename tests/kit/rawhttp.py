"""Raw HTTP on a socket, for what a client library would refuse to send or hide: malformed requests, exact
targets (no client normalises '..'), and answers read byte by byte.

``exchange`` sends bytes exactly as given and reads one answer, telling whether the connection was then closed;
``request`` does the same for a blocking test (one talking to a proxy process).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from jupyter_dev_proxy.timeouts import timeout as deadline

# How long a connection may stay silent after an answer before the test takes it as kept open. A server that closes
# after an answer sends its FIN right behind the answer's last byte, so a closed connection shows at once and only a
# kept-open one waits this long. It stays well below the shortest idle close a test sets (app.IDE_IDLE_SECONDS = 0.5
# in test_hardening), so a connection closed for being idle is never taken for one closed after the answer.
OPEN_AFTER_SECONDS = 0.1


@dataclass(frozen=True)
class RawAnswer:
    """One answer as it came off the socket; ``status`` None when the connection closed without one."""

    status: int | None
    headers: CIMultiDict[str]
    body: bytes
    closed: bool  # the proxy closed the connection after the answer

    def json(self) -> Any:
        return json.loads(self.body)

    def parsed(self) -> Any:
        """The body as JSON, or as text when it is not JSON."""
        try:
            return self.json()
        except ValueError:
            return self.body.decode(errors="replace")


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
    except asyncio.TimeoutError:  # on Python 3.10 not the builtin TimeoutError
        closed = False
    return RawAnswer(status, headers, body, closed)


async def exchange(port: int, data: bytes, timeout: float = 10.0, host: str = "127.0.0.1") -> RawAnswer:
    """Send ``data`` as it is on a new connection and read the first answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        async with deadline(timeout):
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


def request(url: str | URL, method: str, target: str, token: str, body: bytes | None = None,
            timeout: float = 30.0) -> RawAnswer:
    """Blocking: one request to ``url`` (the proxy's origin) with ``target`` written as is, the IDE's token, and a
    JSON ``body`` if given. It runs ``exchange`` in a thread of its own, so a test may call it with or without an
    event loop running."""
    origin = URL(str(url))
    assert origin.host is not None and origin.port is not None, url
    extra = ["Connection: close"]
    if body is not None:
        extra += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    data = request_head(method, target, token, *extra, host=f"{origin.host}:{origin.port}") + (body or b"")
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, exchange(origin.port, data, timeout, origin.host)).result()
