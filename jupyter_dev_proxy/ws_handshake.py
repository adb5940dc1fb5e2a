"""A websocket's two handshakes: the IDE's is checked before the hub is asked anything; the hub's is made by the
proxy itself on a connection from the transport, with the hub token current at that moment.

    check_ide_handshake(request)        the IDE's Sec-WebSocket-Accept, or ProxyError(400)
    open_hub_websocket(...)             a HubConnection with the hub's 101 read, and the subprotocol it chose;
                                        ProxyError for every refusal, each in its own words
    HubConnection                       the hub's side: first the handshake's answer, then frames for a sink
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import transport as _transport  # its limits are read at call time: tests shorten them
from .config import Settings
from .errors import ProxyError
from .http1 import HeadTooLong, parse_answer_head, take_head
from .routing import client_response_headers, gateway_refusal, upstream_request_headers
from .timeouts import timeout
from .transport import HubTransport
from .ws_frames import accept_key


class HubSink(Protocol):
    """What a HubConnection hands the hub's frames and its end to (the relay)."""

    def from_hub(self, data: bytes) -> None: ...
    def hub_lost(self, hub: HubConnection) -> None: ...
    def pause_ide(self) -> None: ...
    def resume_ide(self) -> None: ...
    @property
    def hub_paused(self) -> bool: ...


class HubConnection(asyncio.Protocol):
    """The connection to the hub: first the handshake's answer, then the hub's frames, handed to the sink."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[bytes] = loop.create_future()  # the handshake's status line and headers
        self.lost: asyncio.Future[None] = loop.create_future()
        self._early = bytearray()  # the answer, then any frames that come before the sink is attached
        self._sink: HubSink | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TLS transport is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.from_hub(data)
            return
        self._early += data
        if self.answer.done():
            return
        try:
            head = take_head(self._early)
        except HeadTooLong:
            self.answer.set_exception(ProxyError(502, "hub-bad-websocket", "The hub's answer to the websocket "
                                                                           "handshake is too long."))
        else:
            if head is None:
                return
            self.answer.set_result(head)
        assert self.transport is not None
        self.transport.pause_reading()  # until the sink is attached

    def attach(self, sink: HubSink) -> None:
        self._sink = sink
        if self._early:
            sink.from_hub(bytes(self._early))
            self._early.clear()
        if self.lost.done():
            sink.hub_lost(self)
        elif self.transport is not None and not sink.hub_paused:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self._sink is not None:
            self._sink.pause_ide()

    def resume_writing(self) -> None:
        if self._sink is not None:
            self._sink.resume_ide()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost.done():
            return
        if not self.answer.done():  # a TLS alert says why (a gateway wanting a client certificate); else a reset
            self.answer.set_exception(exc if isinstance(exc, ssl.SSLError) else
                                      ConnectionResetError("the hub closed the connection"))
            self.answer.exception()  # noted as seen: the handshake may not be waiting for it any more
        self.lost.set_result(None)
        if self._sink is not None:
            self._sink.hub_lost(self)


def check_ide_handshake(request: web.BaseRequest) -> str:
    """Check the IDE's handshake (RFC 6455 §4.2.1) before anything is asked of the hub; its accept key."""
    key = request.headers.get("Sec-WebSocket-Key", "")
    try:
        valid = (request.headers.get("Sec-WebSocket-Version") == "13"
                 and len(base64.b64decode(key, validate=True)) == 16)
    except ValueError:
        valid = False
    if not valid:
        raise ProxyError(400, "bad-websocket-handshake", "The websocket handshake is not a valid RFC 6455 "
                                                         "(version 13) one; the proxy did not forward it.")
    return accept_key(key)


def offered_protocols(request: web.BaseRequest) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


async def open_hub_websocket(settings: Settings, hub_transport: HubTransport, url: URL,
                             ide_headers: CIMultiDictProxy[str], offered: list[str], token: Callable[[], str],
                             answer_seconds: float | None = None,
                             to_app: bool = False) -> tuple[HubConnection, str | None]:
    """A connection to the hub with the websocket handshake done, the token read now; the subprotocol the hub
    chose. ``answer_seconds``: how long the hub may take to answer (default: the transport's answer limit)."""
    headers = upstream_request_headers(ide_headers, token(), websocket=True,
                                       gateway_headers=hub_transport.gateway_headers, to_app=to_app)
    hub = await hub_transport.open(HubConnection)
    assert hub.transport is not None
    try:
        return hub, await _hub_handshake(settings, hub_transport, hub, url, offered, headers, answer_seconds)
    except BaseException:
        hub.transport.abort()
        raise


async def _hub_handshake(settings: Settings, hub_transport: HubTransport, hub: HubConnection, url: URL,
                         offered: list[str], headers: CIMultiDict[str], answer_seconds: float | None) -> str | None:
    """Ask the hub for the websocket (no extensions offered); return the subprotocol it chose."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {url.raw_path_qs} HTTP/1.1", f"Host: {url.host_port_subcomponent}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if offered:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(offered)}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    assert hub.transport is not None
    hub.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
    with hub_transport.failures():
        async with timeout(answer_seconds or _transport.ANSWER_TIMEOUT_SECONDS):
            head = await hub.answer
    answer = parse_answer_head(head)
    if answer is None:
        raise ProxyError(502, "hub-bad-websocket", f"The hub at {settings.hub} answered the websocket handshake "
                                                   "with something that is not HTTP/1.1.")
    if answer.status != 101:
        raise _handshake_refused(settings, url, answer.status, answer.headers)
    headers, protocol = answer.headers, answer.headers.get("Sec-WebSocket-Protocol")
    if (headers.get("Upgrade", "").lower() != "websocket" or headers.get("Sec-WebSocket-Accept") != accept_key(key)
            or "Sec-WebSocket-Extensions" in headers or (protocol is not None and protocol not in offered)):
        raise ProxyError(502, "hub-bad-websocket", "The hub accepted the websocket with a handshake that breaks "
                                                   "RFC 6455; the proxy closed it.")
    return protocol


def _handshake_refused(settings: Settings, url: URL, status: int, headers: CIMultiDict[str]) -> ProxyError:
    """The hub answered the handshake with something other than 101: tell the IDE what and why."""
    refusal = gateway_refusal(settings, url.raw_path, status, headers.get("Content-Type", ""))
    if refusal is not None:
        return refusal
    client_response_headers(settings, headers)  # raises for a redirect out of the user's server (a stopped one too)
    return ProxyError(status if status >= 400 else 502, "hub-refused-websocket",
                      f"The hub answered the websocket handshake with HTTP {status} instead of accepting it.")
