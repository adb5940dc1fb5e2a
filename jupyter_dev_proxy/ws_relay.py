"""One websocket (a kernel channel, a terminal): handshake with the hub first, then relay bytes both ways.

The order matters: the IDE is accepted only after the hub has answered, with exactly the subprotocol the
hub chose — node's ``ws`` (VS Code) aborts a handshake that answers a subprotocol it did not expect.

After the two handshakes the proxy relays bytes, not messages. The IDE's frames are masked, as a client's
must be, and the hub's are not, as a server's must not be, so each is valid on the other side unchanged:
nothing is decoded, unmasked or re-framed, whatever the message size, and the closing handshake travels end
to end. That holds because no extension (compression) is negotiated on either side. The proxy only follows
frame boundaries (``FrameTracker``): to close a side itself when the other vanishes or the proxy stops, and
to answer the hub's pings (an IDE that is not reading at the moment cannot, and the hub would hang up).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import itertools
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime, timezone
from typing import cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict
from yarl import URL

from . import transport as _transport  # its limits are read at call time: tests shorten them
from .config import Settings
from .errors import ProxyError
from .routing import client_response_headers, gateway_refusal, upstream_request_headers
from .timeouts import timeout
from .trace import MessageTrace
from .transport import HubTransport

log = logging.getLogger("jupyter_dev_proxy")

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
GOING_AWAY = 1001  # the proxy stops, or the IDE left without a close frame
INTERNAL_ERROR = 1011  # the hub's side dropped without a close frame

# How long the hub has to answer the proxy's close frame and hang up before the proxy hangs up itself.
_CLOSE_TIMEOUT_SECONDS = 5.0

# The longest answer to a websocket handshake the proxy reads (a status line and headers).
_MAX_ANSWER_BYTES = 64 * 1024

# A kernel channel whose hub side breaks is reconnected with these pauses between attempts (then the last,
# again), for up to transport.RECONNECT_SECONDS. What the IDE sends meanwhile is held up to HELD_LIMIT_BYTES.
_RECONNECT_BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0)
HELD_LIMIT_BYTES = 16 * 1024 * 1024
# Answers to a reconnection that mean it will never work: the kernel is gone (404), the token is refused.
_FINAL_REFUSALS = frozenset({401, 403, 404, 410})
# The channel of a kernel: the websocket jupyter_server replays to when its session comes back.
_KERNEL_CHANNEL = re.compile(r"/api/kernels/([^/?]+)/channels$")
SERVICE_RESTART = 1012  # the hub side could not be reconnected in time: the IDE's client reconnects itself


class FrameTracker:
    """Follows the frame boundaries of one direction without looking at data payloads.

    A frame of the proxy's own may only go between two frames, and never after that side's close frame.
    Control frames (≤ 125 bytes) are taken whole, so a ping's payload is at hand for the proxy's pong: the
    hub's (unmasked) pings by default, the IDE's (masked, unmasked here) with ``masked_pings``.
    """

    __slots__ = ("_skip", "_partial", "_masked_pings", "closed", "last_boundary")

    def __init__(self, masked_pings: bool = False) -> None:
        self._skip = 0  # bytes of the current frame still to come
        self._partial = b""  # the start of a frame cut by a read: its header, or a control frame
        self._masked_pings = masked_pings
        self.closed = False  # a close frame has passed: this direction said goodbye itself
        self.last_boundary = -1  # where in the last data fed the last frame ending in it ended; -1: none did

    @property
    def at_boundary(self) -> bool:
        return self._skip == 0 and not self._partial

    def feed(self, data: bytes) -> list[bytes]:
        """Note ``data`` as relayed; return the payloads of the pings in it (see the class)."""
        pings: list[bytes] = []
        self.last_boundary = -1
        if self._skip >= len(data):
            self._skip -= len(data)
            if self._skip == 0:
                self.last_boundary = len(data)
            return pings
        carried = len(self._partial)  # bytes before ``data`` in the buffer parsed below
        if self._partial:
            data, pos = self._partial + data, 0
        else:
            pos = self._skip
        end = len(data)
        if carried < pos <= end:  # the frame skipped through ended in this data
            self.last_boundary = pos - carried
        while end - pos >= 2:
            first, second = data[pos], data[pos + 1]
            length, header = second & 0x7F, (6 if second & 0x80 else 2)  # 4 bytes of mask key when masked
            if length == 126:
                if end - pos < 4:
                    break
                length, header = int.from_bytes(data[pos + 2:pos + 4], "big"), header + 2
            elif length == 127:
                if end - pos < 10:
                    break
                length, header = int.from_bytes(data[pos + 2:pos + 10], "big"), header + 8
            if first & 0x08 and length <= 125:  # a (legal) control frame
                if pos + header + length > end:
                    break
                if first & 0x0F == _CLOSE:
                    self.closed = True
                elif first & 0x0F == _PING and (header == 2) != self._masked_pings:
                    payload = data[pos + header:pos + header + length]
                    key = data[pos + 2:pos + 6]
                    pings.append(bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if header == 6 else payload)
            pos += header + length
            if carried < pos <= end:
                self.last_boundary = pos - carried
        self._skip = max(pos - end, 0)
        self._partial = data[pos:] if pos < end else b""
        return pings


def control_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """A close or pong frame; ``masked`` toward the hub (the proxy is its client), unmasked toward the IDE."""
    if not masked:
        return bytes((0x80 | opcode, len(payload))) + payload
    key = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _close_payload(code: int, reason: bytes) -> bytes:
    return code.to_bytes(2, "big") + reason[:123]


Reconnect = Callable[[], Awaitable["HubConnection"]]


class Relay:
    """Both ends of one spliced websocket: aiohttp feeds it the IDE's bytes, ``HubConnection`` the hub's.

    Each side's bytes are written to the other as they come. When a side cannot take more, the other is
    paused; nothing is buffered here, so memory stays flat whatever the message size.

    With ``reconnect`` (a kernel channel), a hub side that breaks without a close frame is opened again while
    the IDE's side stays open: what the IDE sends meanwhile is held (its frame cut by the break is sent again
    whole), the proxy answers the IDE's pings, and jupyter_server replays to the same session what the kernel
    said meanwhile. The IDE sees nothing but a pause.
    """

    def __init__(self, request: web.BaseRequest, ide: AbstractStreamWriter, hub: HubConnection,
                 reconnect: Reconnect | None = None, reconnect_seconds: float = 0.0, label: str = "websocket",
                 trace: tuple[MessageTrace, MessageTrace] | None = None) -> None:
        assert request.transport is not None and hub.transport is not None
        self._ide_protocol = request.protocol
        self._ide_transport = request.transport
        self._ide = ide
        self._hub = hub
        self._hub_transport = hub.transport
        self.to_ide = FrameTracker()
        self.to_hub = FrameTracker(masked_pings=True)
        self._ide_done = False  # the IDE is gone or was told goodbye: the hub's bytes are dropped
        self._hang_up: asyncio.TimerHandle | None = None
        self._resuming: asyncio.Future[None] | None = None  # while pending, the hub is paused for the IDE
        self._reconnect = reconnect if reconnect_seconds > 0 else None
        self._reconnect_seconds = reconnect_seconds
        self._label = label
        self._unsent: list[bytes] | None = []  # the IDE's bytes since its last frame boundary (None: too many)
        self._unsent_bytes = 0
        self._held: list[bytes] = []  # while reconnecting: the cut frame's start, then all the IDE sends
        self._held_bytes = 0
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = False
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # What the status page shows of it.
        self.kernel: str | None = None
        self.opened_at = time.time()
        self._trace_to_hub: MessageTrace | None = trace[0] if trace else None  # only with --trace: decoding
        self._trace_to_ide: MessageTrace | None = trace[1] if trace else None
        self.bytes_to_hub = self.bytes_to_ide = self.reconnects = 0

    # The IDE's side: aiohttp hands the upgraded connection's bytes to its "parser", which is this.

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.bytes_to_hub += len(data)
        if self._trace_to_hub is not None:
            self._trace_to_hub.feed(data)
        pings = self.to_hub.feed(data)
        if self._reconnect is not None:
            self._note_unsent(data)
        if self._reconnecting is not None:
            self._hold(data, pings)
        elif not self._hub_transport.is_closing():
            self._hub_transport.write(data)  # too much queued: HubConnection.pause_writing pauses the IDE
        return False, b""

    def _note_unsent(self, data: bytes) -> None:
        """Keep the IDE's bytes since its last frame boundary: if the hub side breaks now, they go again."""
        boundary = self.to_hub.last_boundary
        if boundary >= 0:
            self._unsent = [data[boundary:]] if boundary < len(data) else []
            self._unsent_bytes = len(data) - boundary
        elif self._unsent is not None:
            self._unsent.append(data)
            self._unsent_bytes += len(data)
            if self._unsent_bytes > HELD_LIMIT_BYTES:
                self._unsent = None  # a frame too large to send again: this websocket cannot be reconnected now

    def feed_eof(self) -> None:
        """The IDE hung up: close the hub's side (1001), unless the IDE closed it already."""
        self._ide_done = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            self._finish()
        self.goodbye_to_hub(GOING_AWAY)

    def pause_ide(self) -> None:
        if not self._ide_transport.is_closing():
            self._ide_transport.pause_reading()

    def resume_ide(self) -> None:
        if not self._ide_transport.is_closing():
            self._ide_transport.resume_reading()

    # The hub's side.

    def from_hub(self, data: bytes) -> None:
        if self._ide_done or self._ide_transport.is_closing():
            return
        self.bytes_to_ide += len(data)
        if self._trace_to_ide is not None:
            self._trace_to_ide.feed(data)
        pings = self.to_ide.feed(data)
        if pings:
            self._pong_to_hub(pings)
        self._ide_transport.write(data)
        if self._ide_protocol.writing_paused and not self.hub_paused:
            self._hub_transport.pause_reading()
            self._resuming = asyncio.ensure_future(self._resume_hub_when_drained(self._hub_transport))

    async def _resume_hub_when_drained(self, hub_transport: asyncio.Transport) -> None:
        with suppress(ConnectionError):  # the IDE is gone: its bytes are dropped, the hub's close still read
            await self._ide.drain()
        if not hub_transport.is_closing():
            hub_transport.resume_reading()

    @property
    def hub_paused(self) -> bool:
        return self._resuming is not None and not self._resuming.done()

    def hub_lost(self, hub: HubConnection) -> None:
        """The hub hung up. Without its close frame: reconnect if this websocket can be, else close the IDE's
        side (1011)."""
        if hub is not self._hub:
            return  # a connection already replaced
        if self._can_reconnect():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect_hub())
            return
        self.goodbye_to_ide(INTERNAL_ERROR, b"the hub closed the connection")
        self._finish()

    def _can_reconnect(self) -> bool:
        return (self._reconnect is not None and not self._stopping and not self._ide_done
                and self._hang_up is None and not self.to_ide.closed and not self.to_hub.closed
                and self.to_ide.at_boundary and self._unsent is not None and not self._ide_transport.is_closing())

    # Reconnecting the hub's side.

    def _hold(self, data: bytes, pings: list[bytes]) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        if pings and self.to_ide.at_boundary:  # the hub is away: the proxy answers the IDE's pings itself
            self._ide_transport.write(b"".join(control_frame(_PONG, payload, masked=False) for payload in pings))
        if self._held_bytes > HELD_LIMIT_BYTES:
            log.warning("%s: the IDE sent more than %d MiB while the hub was away; closing it.", self._label,
                        HELD_LIMIT_BYTES // 2 ** 20)
            assert self._reconnecting is not None
            self._reconnecting.cancel()
            self.goodbye_to_ide(INTERNAL_ERROR, b"too much to hold while the hub was away")
            self._finish()

    async def _reconnect_hub(self) -> None:
        """Open the same websocket on the hub again, with back-off, until it answers or the time is up."""
        assert self._reconnect is not None and self._unsent is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._held, self._held_bytes = list(self._unsent), self._unsent_bytes
        if self._resuming is not None:
            self._resuming.cancel()
        self.resume_ide()  # it may have been paused for the old connection: its bytes are held now
        log.warning("%s: the connection to the hub broke; reconnecting (the IDE stays connected, what it sends "
                    "is held).", self._label)
        for attempt in itertools.count():
            remaining = started + self._reconnect_seconds - loop.time()
            try:
                async with timeout(max(remaining, 0.01)):
                    hub = await self._reconnect()
            except ProxyError as error:
                if error.status in _FINAL_REFUSALS:
                    log.warning("%s: the hub refused to reconnect it (%d %s); the IDE's websocket is closed.",
                                self._label, error.status, error.reason)
                    self.goodbye_to_ide(INTERNAL_ERROR, b"the hub refused the websocket again")
                    break
            except asyncio.TimeoutError:
                pass
            else:
                self._switch_to(hub, loop.time() - started)
                return
            remaining = started + self._reconnect_seconds - loop.time()
            if remaining <= 0:
                log.warning("%s: the hub could not be reached again within %.0f s; the IDE's websocket is closed "
                            "(its client reconnects by itself).", self._label, self._reconnect_seconds)
                self.goodbye_to_ide(SERVICE_RESTART, b"the hub could not be reached again")
                break
            await asyncio.sleep(min(_RECONNECT_BACKOFF[min(attempt, len(_RECONNECT_BACKOFF) - 1)], remaining))
        self._reconnecting = None
        self._finish()

    def _switch_to(self, hub: HubConnection, after: float) -> None:
        assert hub.transport is not None
        held, count = b"".join(self._held), len(self._held)
        self._hub, self._hub_transport = hub, hub.transport
        self._held, self._held_bytes, self._reconnecting = [], 0, None
        self.reconnects += 1
        hub.attach(self)
        if held:
            self._hub_transport.write(held)
        log.info("%s: reconnected to the hub after %.1f s; %d bytes the IDE sent meanwhile were delivered.",
                 self._label, after, len(held) if count else 0)

    # Frames of the proxy's own.

    def _pong_to_hub(self, pings: list[bytes]) -> None:
        """Answer the hub's pings for the IDE, as a client that is not reading cannot (the IDE answers too)."""
        if self.to_hub.at_boundary and not self.to_hub.closed and not self._hub_transport.is_closing():
            self._hub_transport.write(b"".join(control_frame(_PONG, payload, masked=True) for payload in pings))

    def goodbye_to_ide(self, code: int, reason: bytes) -> None:
        """Close the IDE's side with ``code``, unless it cannot take a frame now or the hub's close passed."""
        if (not self._ide_done and self.to_ide.at_boundary and not self.to_ide.closed
                and not self._ide_transport.is_closing()):
            self._ide_transport.write(control_frame(_CLOSE, _close_payload(code, reason), masked=False))
        self._ide_done = True

    def goodbye_to_hub(self, code: int) -> None:
        """Close the hub's side with ``code`` (unless the IDE's own close passed), and leave the hub a moment to
        answer and hang up first, as RFC 6455 §7.1.1 asks of a client. Mid-frame, just hang up."""
        if self._hang_up is not None or self._hub_transport.is_closing():
            return
        if not self.to_hub.at_boundary:
            self._hub_transport.abort()
            return
        if not self.to_hub.closed:
            self._hub_transport.write(control_frame(_CLOSE, _close_payload(code, b""), masked=True))
        # abort, not close: close() would first wait for the hub to read what is still queued for it.
        self._hang_up = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT_SECONDS, self._hub_transport.abort)

    def stop(self) -> None:
        """The proxy is shutting down: close both sides with 1001 (going away)."""
        self._stopping = True
        self.goodbye_to_ide(GOING_AWAY, b"jupyter-dev-proxy stopped")
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            self._finish()
        self.goodbye_to_hub(GOING_AWAY)

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def close(self) -> None:
        """The relay is over: drop the hub's connection, unless the hub is still being given its moment to
        answer the proxy's close frame (the IDE hung up): the hang-up timer then drops it."""
        if self._resuming is not None:
            self._resuming.cancel()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._hang_up is not None and not self._hub_transport.is_closing():
            return
        if self._hang_up is not None:
            self._hang_up.cancel()
        self._hub_transport.abort()


class HubConnection(asyncio.Protocol):
    """The connection to the hub: first the handshake's answer, then the hub's frames, handed to the relay."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[bytes] = loop.create_future()  # the handshake's status line and headers
        self.lost: asyncio.Future[None] = loop.create_future()
        self._early = bytearray()  # the answer, then any frames that come before the relay is attached
        self._relay: Relay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TLS transport is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._relay is not None:
            self._relay.from_hub(data)
            return
        self._early += data
        if self.answer.done():
            return
        end = self._early.find(b"\r\n\r\n")
        if end >= 0:
            self.answer.set_result(bytes(self._early[:end + 4]))
            del self._early[:end + 4]
        elif len(self._early) > _MAX_ANSWER_BYTES:
            self.answer.set_exception(ProxyError(502, "hub-bad-websocket", "The hub's answer to the websocket "
                                                                           "handshake is too long."))
        else:
            return
        assert self.transport is not None
        self.transport.pause_reading()  # until the relay is attached

    def attach(self, relay: Relay) -> None:
        self._relay = relay
        if self._early:
            relay.from_hub(bytes(self._early))
            self._early.clear()
        if self.lost.done():
            relay.hub_lost(self)
        elif self.transport is not None and not relay.hub_paused:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self._relay is not None:
            self._relay.pause_ide()

    def resume_writing(self) -> None:
        if self._relay is not None:
            self._relay.resume_ide()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():  # a TLS alert says why (a gateway wanting a client certificate); else a reset
            self.answer.set_exception(exc if isinstance(exc, ssl.SSLError) else
                                      ConnectionResetError("the hub closed the connection"))
            self.answer.exception()  # noted as seen: the handshake may not be waiting for it any more
        if self._relay is not None:
            self._relay.hub_lost(self)
        self.lost.set_result(None)



def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()).decode()


def _ide_accept_key(request: web.BaseRequest) -> str:
    """Check the IDE's handshake (RFC 6455 §4.2.1) before anything is asked of the hub."""
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


def _offered_protocols(request: web.BaseRequest) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]




async def relay_websocket(request: web.BaseRequest, settings: Settings, hub_transport: HubTransport,
                          hub_token: str, url: URL, relays: OpenRelays,
                          set_cookie: str | None) -> web.StreamResponse:
    """Open ``url`` on the hub as a websocket, accept the IDE with the same subprotocol, relay until closed;
    ``set_cookie`` (the proxy's own) is added to the IDE's handshake answer."""
    accept = _ide_accept_key(request)
    offered = _offered_protocols(request)
    headers = upstream_request_headers(request.headers, hub_token, websocket=True,
                                       gateway_headers=hub_transport.gateway_headers)
    hub, protocol = await _open_hub_websocket(settings, hub_transport, url, offered, headers)
    assert hub.transport is not None
    try:
        response = web.StreamResponse(status=101, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept,
            **({"Sec-WebSocket-Protocol": protocol} if protocol else {}),
            **({"Set-Cookie": set_cookie} if set_cookie else {})})
        response.force_close()
        try:
            ide = await response.prepare(request)
            assert ide is not None
            await ide.drain()
        except ConnectionError:
            raise ProxyError(499, "ide-disconnected", "The IDE closed the connection during the websocket "
                                                      "handshake.") from None
        kernel = _KERNEL_CHANNEL.search(url.raw_path)
        reconnect = functools.partial(_reopen_hub_websocket, settings, hub_transport, url, offered, headers, protocol)
        trace = ((MessageTrace("IDE → hub", kernel.group(1)), MessageTrace("hub → IDE", kernel.group(1)))
                 if kernel and settings.trace else None)
        relay = Relay(request, ide, hub, reconnect if kernel else None, settings.reconnect_seconds,
                      f"The websocket of kernel {kernel.group(1)}" if kernel else "A websocket", trace)
        relay.kernel = kernel.group(1) if kernel else None
    except BaseException:
        hub.transport.abort()
        raise
    hub.attach(relay)
    request.protocol.set_parser(relay)  # type: ignore[arg-type]  # the IDE's bytes now go to the relay
    relays.add(relay)
    try:
        await relay.finished
    finally:
        relays.discard(relay)
        relay.close()
    return response  # aiohttp then closes the IDE's connection


async def _open_hub_websocket(settings: Settings, hub_transport: HubTransport, url: URL, offered: list[str],
                              headers: CIMultiDict[str]) -> tuple[HubConnection, str | None]:
    """A connection to the hub with the websocket handshake done; the subprotocol the hub chose."""
    hub = await hub_transport.open(HubConnection)
    assert hub.transport is not None
    try:
        return hub, await _hub_handshake(settings, hub, url, offered, headers)
    except BaseException:
        hub.transport.abort()
        raise


async def _reopen_hub_websocket(settings: Settings, hub_transport: HubTransport, url: URL, offered: list[str],
                                headers: CIMultiDict[str], protocol: str | None) -> HubConnection:
    """The same websocket again (same URL, so the same session), which must speak the same subprotocol."""
    hub, again = await _open_hub_websocket(settings, hub_transport, url, offered, headers)
    if again != protocol:
        assert hub.transport is not None
        hub.transport.abort()
        raise ProxyError(410, "hub-changed-protocol", "The hub chose another subprotocol on reconnecting.")
    return hub


async def _hub_handshake(settings: Settings, hub: HubConnection, url: URL, offered: list[str],
                         headers: CIMultiDict[str]) -> str | None:
    """Ask the hub for the websocket (no extensions offered); return the subprotocol it chose."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {url.raw_path_qs} HTTP/1.1", f"Host: {url.host_port_subcomponent}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if offered:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(offered)}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    assert hub.transport is not None
    hub.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
    try:
        async with timeout(_transport.ANSWER_TIMEOUT_SECONDS):
            head = await hub.answer
    except asyncio.TimeoutError:
        raise ProxyError(504, "hub-timeout", f"The hub at {settings.hub} did not answer the websocket "
                                             "handshake in time: try again.") from None
    except (ConnectionError, ssl.SSLError) as exc:
        if _transport.refuses_client(exc):  # with TLS 1.3, a missing client certificate is refused after the handshake
            raise _transport.gateway_refused_certificate(settings, str(exc)) from None
        raise ProxyError(502, "hub-disconnected", f"The hub at {settings.hub} broke off the websocket "
                                                  f"handshake ({type(exc).__name__}): try again.") from None
    status, answer = _parse_response_head(settings, head)
    if status != 101:
        raise _handshake_refused(settings, url, status, answer)
    protocol = answer.get("Sec-WebSocket-Protocol")
    if (answer.get("Upgrade", "").lower() != "websocket" or answer.get("Sec-WebSocket-Accept") != accept_key(key)
            or "Sec-WebSocket-Extensions" in answer or (protocol is not None and protocol not in offered)):
        raise ProxyError(502, "hub-bad-websocket", "The hub accepted the websocket with a handshake that breaks "
                                                   "RFC 6455; the proxy closed it.")
    return protocol


def _parse_response_head(settings: Settings, head: bytes) -> tuple[int, CIMultiDict[str]]:
    status_line, *lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    version, _, rest = status_line.partition(" ")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in filter(None, lines):
        name, colon, value = line.partition(":")
        if not colon:
            break
        headers.add(name.strip(), value.strip())
    else:
        if version.startswith("HTTP/1.") and rest[:3].isdigit():
            return int(rest[:3]), headers
    raise ProxyError(502, "hub-bad-websocket", f"The hub at {settings.hub} answered the websocket handshake "
                                               "with something that is not HTTP/1.1.")


def _handshake_refused(settings: Settings, url: URL, status: int, headers: CIMultiDict[str]) -> ProxyError:
    """The hub answered the handshake with something other than 101: tell the IDE what and why."""
    refusal = gateway_refusal(settings, url.raw_path, status, headers.get("Content-Type", ""))
    if refusal is not None:
        return refusal
    client_response_headers(settings, headers)  # raises for a redirect out of the user's server
    return ProxyError(status if status >= 400 else 502, "hub-refused-websocket",
                      f"The hub answered the websocket handshake with HTTP {status} instead of accepting it.")



class OpenRelays:
    """Every relay in progress, so that shutdown can close them with 1001 (going away); a handshake that
    completes after shutdown began is closed the same way at once."""

    def __init__(self) -> None:
        self._relays: set[Relay] = set()
        self._stopping = False

    def add(self, relay: Relay) -> None:
        self._relays.add(relay)
        if self._stopping:
            relay.stop()

    def discard(self, relay: Relay) -> None:
        self._relays.discard(relay)

    def stop_all(self) -> None:
        self._stopping = True
        for relay in list(self._relays):
            relay.stop()

    def kernel_websockets(self) -> list[dict[str, object]]:
        """The open kernel websockets, for the status page: kernel, since when, bytes each way, reconnects."""
        return [{"kernel": relay.kernel, "since": datetime.fromtimestamp(relay.opened_at, timezone.utc).isoformat(
                    timespec="seconds"), "bytes_to_ide": relay.bytes_to_ide, "bytes_to_hub": relay.bytes_to_hub,
                 "reconnects": relay.reconnects}
                for relay in sorted(self._relays, key=lambda r: r.opened_at) if relay.kernel is not None]
