"""The relay's HTTP/1.1 exchanges with the hub for requests whose body is in hand (none, or a small one), on
keep-alive connections of its own.

aiohttp's client session builds a request object, a response object, a timer and trace hooks for every request:
about a third of what a small relayed request cost the proxy (issue 19). The relay needs none of it: the request
line and headers are decided, and what it wants back is the hub's status, headers and a body stream. So this writes
the head itself (aiohttp's header serializer, which refuses a CR, LF or NUL in any value) and reads the answer with
aiohttp's own client protocol and parser (``ResponseHandler``: C-accelerated parsing, flow control, read timeout),
on connections made by ``HubTransport.open`` like every other connection to the hub (company proxy, gateway
certificate, spares). Requests whose body is streamed (uploads) still go through aiohttp's session.
"""

from __future__ import annotations

import asyncio
import collections

from aiohttp import ServerDisconnectedError
from aiohttp.client_proto import ResponseHandler
from aiohttp.http import RawResponseMessage
from aiohttp.http_writer import _serialize_headers
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import transport as hub_transport  # its timeouts read at each use: tests shorten them
from .transport import READ_BUFFER_BYTES, HubTransport


def _is_informational(status: int) -> bool:
    """A 1xx that comes before the answer and is skipped, as aiohttp's session skipped it: 103 Early Hints from a
    gateway in front of the hub, a stray 100 Continue. A 101 is an answer (the connection is then not reused)."""
    return 100 <= status <= 199 and status != 101


class HubAnswer:
    """The hub's answer: its head as parsed, its body as a stream; ``release`` when done with it (the connection
    goes back to the pool if the body was read to its end, else it is closed)."""

    __slots__ = ("_connections", "_message", "_protocol", "content")

    def __init__(self, connections: HubConnections, protocol: ResponseHandler, message: RawResponseMessage,
                 content: StreamReader) -> None:
        self._connections = connections
        self._protocol: ResponseHandler | None = protocol
        self._message = message
        self.content = content

    @property
    def status(self) -> int:
        return self._message.code

    @property
    def reason(self) -> str | None:
        return self._message.reason or None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._message.headers

    @property
    def content_length(self) -> int | None:
        length = self._message.headers.get("Content-Length")
        return int(length) if length is not None and length.isdigit() else None

    @property
    def content_type(self) -> str:
        """The media type, lowercase, without parameters (aiohttp's default when there is none)."""
        value = self._message.headers.get("Content-Type", "application/octet-stream")
        return value.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body; at once when all of it has come already (a small answer nearly always has)."""
        content = self.content
        return content.read_nowait() if content.is_eof() else await content.read()

    def release(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._connections.put_back(protocol)


class HubConnections:
    """Idle keep-alive connections to the hub, the most recently used first, none older than
    IDLE_CONNECTION_SECONDS (the hub's proxy closes idle ones soon after)."""

    def __init__(self, transport: HubTransport, hub: URL) -> None:
        self._transport = transport
        assert hub.host_port_subcomponent is not None  # config accepts only http(s)://host URLs
        self._host = hub.host_port_subcomponent  # every connection goes to the hub: Host is always its
        self._idle: collections.deque[tuple[float, ResponseHandler]] = collections.deque()
        self._retiring: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(self, method: str, target: str, headers: CIMultiDict[str], body: bytes,
                   fresh: bool = False) -> HubAnswer:
        """Send the request for ``target`` (the raw path and query on the hub; ``headers`` get Host and the body's
        length) on an idle connection, or a new one if none is idle or ``fresh``; return once the answer's head has
        come. Failures raise aiohttp's errors (ServerDisconnectedError, ClientOSError, SocketTimeoutError) for the
        caller's map to the IDE's answer."""
        headers["Host"] = self._host
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            headers["Content-Length"] = str(len(body))
        head = _serialize_headers(f"{method} {target} HTTP/1.1", headers)
        loop = asyncio.get_running_loop()
        protocol = None if fresh else self._take(loop.time())
        if protocol is None:
            protocol = await self._transport.open(lambda: ResponseHandler(loop))
        return await self._exchange(protocol, method, head, body)

    async def _exchange(self, protocol: ResponseHandler, method: str, head: bytes, body: bytes) -> HubAnswer:
        protocol.set_response_params(skip_payload=method == "HEAD", read_until_eof=True, auto_decompress=False,
                                     read_timeout=hub_transport.ANSWER_TIMEOUT_SECONDS, read_bufsize=READ_BUFFER_BYTES)
        transport = protocol.transport
        if transport is None or transport.is_closing():
            protocol.close()
            raise ServerDisconnectedError()
        transport.write(head + body if body else head)
        protocol.start_timeout()
        try:
            message, content = await protocol.read()
            while _is_informational(message.code):
                if not len(protocol):  # nothing came after the 1xx yet: the protocol stopped the timer at its end
                    protocol.start_timeout()
                message, content = await protocol.read()
        except BaseException:
            protocol.close()
            raise
        return HubAnswer(self, protocol, message, content)

    def _take(self, now: float) -> ResponseHandler | None:
        while self._idle:
            since, protocol = self._idle.pop()
            fresh_enough = now - since < hub_transport.IDLE_CONNECTION_SECONDS
            if fresh_enough and protocol.is_connected() and not protocol.should_close:
                return protocol
            protocol.close()
        return None

    def put_back(self, protocol: ResponseHandler) -> None:
        """Keep the connection for the next request, if its answer was read to the end and it stays open (and the
        proxy is not shutting down)."""
        if self._closed or protocol.should_close or not protocol.is_connected():
            protocol.close()
            return
        loop = asyncio.get_running_loop()
        self._idle.append((loop.time(), protocol))
        if self._retiring is None:
            self._retiring = loop.call_later(hub_transport.IDLE_CONNECTION_SECONDS, self._retire)

    def _retire(self) -> None:
        """Close the connections idle for too long; again later while any are left."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and now - self._idle[0][0] >= hub_transport.IDLE_CONNECTION_SECONDS:
            self._idle.popleft()[1].close()
        oldest = self._idle[0][0] if self._idle else None
        self._retiring = (None if oldest is None
                          else loop.call_at(oldest + hub_transport.IDLE_CONNECTION_SECONDS, self._retire))

    def close(self) -> None:
        self._closed = True
        if self._retiring is not None:
            self._retiring.cancel()
            self._retiring = None
        while self._idle:
            self._idle.pop()[1].close()
