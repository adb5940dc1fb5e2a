"""One websocket (a kernel channel, a terminal): both handshakes (ws_handshake), then bytes relayed both ways; a
kernel channel whose hub side breaks is reconnected while the IDE stays connected, and loses no request silently.

After the two handshakes the proxy relays bytes, not messages. The IDE's frames are masked, as a client's must
be, and the hub's are not, as a server's must not be, so each is valid on the other side unchanged: nothing is
re-framed, whatever the message size, and the closing handshake travels end to end (no extension is negotiated
on either side). The proxy follows frame boundaries (``FrameTracker``) to write frames of its own only between
frames: a close when a side vanishes or the proxy stops, a pong for an IDE that is not reading. A hub frame of
at most 64 KiB reaches the IDE only whole, so a break never leaves the IDE inside a small frame. On a kernel
channel the proxy also reads the header of each message the IDE sends, and of the hub's while a request waits
for its reply (``kernel_messages``), for the request ledger (``kernel_ledger``) and, with ``--trace``, the log.

The relay's states, and everything that moves between them (nothing else decides what may happen next):

    state         event                                  next          what the proxy does
    OPEN          the hub hangs up without a close       RECONNECTING  a kernel channel: hold what the IDE sends,
                  frame                                                answer its pings, open the same websocket
                                                                       again (same session: the server replays)
                                                         CLOSED        anything else, or mid-frame: 1011 to the IDE
    RECONNECTING  the hub answers 101 again              OPEN          first the safe requests in flight again, then
                                                                       what was held, then a probe if requests are
                                                                       in doubt
    RECONNECTING  the hub says the kernel or the server  CLOSED        1011 to the IDE, at once
                  is gone (404, 424, its not-running
                  redirect), or refuses the token
    RECONNECTING  the time is up                         CLOSED        1012 to the IDE (its client reconnects)
    RECONNECTING  the IDE's close frame                  CLOSED        answered at once
    OPEN          a message was lost with a connection   CLOSED        1012 to the IDE, which fails the request
                  (see kernel_ledger)                                  instead of waiting forever
    OPEN          a close frame passes, either way       CLOSING       relayed; each side hangs up in its own time
    any           the IDE hangs up                       CLOSED        1001 to the hub, 5 s for its answer
    any           the proxy stops                        CLOSED        1001 to both sides

Reconnecting is one episode per outage: it starts with one warning and ends with one summary once the new
connection has lived a few seconds. A connection that dies sooner continues the episode — its back-off and its
budget — so a hub that accepts and then drops is not hammered. Each attempt is bounded by a few seconds: a
connection that does not answer is abandoned for a fresh one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from .config import Settings
from .errors import HubLoginRequired, ProxyError, ServerNotRunning
from .kernel_ledger import KernelLedger
from .kernel_messages import KernelMessage, MessageReader
from .timeouts import timeout
from .trace import MessageTrace
from .transport import HubTransport
from .ws_frames import (
    GOING_AWAY,
    INTERNAL_ERROR,
    SERVICE_RESTART,
    FrameTracker,
    Opcode,
    close_payload,
    control_frame,
    data_frame,
)
from .ws_handshake import HubConnection, check_ide_handshake, offered_protocols, open_hub_websocket

log = logging.getLogger("jupyter_dev_proxy")

# How long the hub has to answer the proxy's close frame and hang up before the proxy hangs up itself.
_CLOSE_TIMEOUT_SECONDS = 5.0

# Pauses before the 2nd, 3rd... attempt of an episode (then the last, again), within Settings.reconnect_seconds.
_RECONNECT_BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0)
# How long one attempt (connect, TLS, handshake) may take before it is abandoned for a fresh connection: over a
# 40 ms link it takes ~0.2 s; a connection that gives no answer in seconds is dead (a spare that outlived a VPN
# change, a hub proxy mid-restart). Later attempts of an episode get longer, for a hub that is only slow.
_ATTEMPT_SECONDS = (4.0, 8.0, 15.0)
# A new connection that lives this long ends the episode; one that dies sooner continues it.
_STABLE_SECONDS = 5.0
# What the IDE may send while the hub is away (held), and the frame cut by a break that is sent again whole.
HELD_LIMIT_BYTES = 16 * 1024 * 1024
# Hub frames up to this size reach the IDE only whole (see the module); larger ones stream as they come.
_WHOLE_FRAME_BYTES = 64 * 1024
# Safe requests are kept for sending again up to this size (a kernel_info_request is ~300 bytes).
_RESENDABLE_BYTES = 64 * 1024
# The channel of a kernel: the websocket jupyter_server replays to when its session comes back.
_KERNEL_CHANNEL = re.compile(r"/api/kernels/([^/?]+)/channels$")
_SESSION_ID = re.compile(r"(?:^|&)session_id=([^&]*)")


class RelayState(enum.Enum):
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass
class _Episode:
    """One outage of the hub's side: from the first drop until a new connection has lived _STABLE_SECONDS."""

    started: float
    attempts: int = 0
    drops: int = 1
    held_bytes: int = 0  # what the IDE sent meanwhile, delivered
    took: float = 0.0  # from the first drop to the last new connection


# Opens the same websocket on the hub again: the new connection, given how long the attempt may take.
Reconnect = Callable[[], Awaitable[HubConnection]]


class Relay:
    """Both ends of one spliced websocket: aiohttp feeds it the IDE's bytes, ``HubConnection`` the hub's. Each
    side's bytes are written to the other as they come; when a side cannot take more, the other is paused."""

    # Slots: one Relay per open websocket, and an IDE keeps one per notebook open (a dict would cost ~1 KiB each).
    __slots__ = ("_episode", "_episode_end", "_from_hub", "_from_ide", "_hang_up", "_held", "_held_bytes", "_hub",
                 "_hub_tail", "_hub_transport", "_ide", "_ide_answer", "_ide_mid_frame", "_ide_protocol", "_ide_told",
                 "_ide_transport", "_label", "_ledger", "_probe", "_reconnect", "_reconnect_seconds", "_reconnecting",
                 "_resend", "_resuming", "_session", "_trace", "_unsent", "_unsent_bytes", "bytes_to_hub",
                 "bytes_to_ide", "finished", "kernel", "opened_at", "reconnects", "state", "to_hub", "to_ide")

    def __init__(self, request: web.BaseRequest, ide: AbstractStreamWriter, hub: HubConnection,
                 reconnect: Reconnect | None = None, reconnect_seconds: float = 0.0, label: str = "websocket",
                 ledger: KernelLedger | None = None, session: str = "",
                 trace: tuple[MessageTrace, MessageTrace] | None = None) -> None:
        assert request.transport is not None and hub.transport is not None
        self._ide_protocol = request.protocol
        self._ide_transport = request.transport
        self._ide = ide
        self._hub = hub
        self._hub_transport = hub.transport
        self.state = RelayState.OPEN
        self.to_ide = FrameTracker()  # per hub connection
        self.to_hub = FrameTracker(masked_pings=True)  # the IDE's one stream, across hub connections
        self._hub_tail = b""  # the start of a small hub frame, written to the IDE once whole
        self._ide_mid_frame = False  # the IDE has the start of a frame whose end it has not
        self._hang_up: asyncio.TimerHandle | None = None
        self._ide_told = False  # the proxy sent the IDE a close frame of its own
        self._ide_answer: asyncio.TimerHandle | None = None  # until the IDE answers it
        self._resuming: asyncio.Future[None] | None = None  # while pending, the hub is paused for the IDE
        self._reconnect = reconnect if reconnect_seconds > 0 else None
        self._reconnect_seconds = reconnect_seconds
        self._label = label
        self._unsent: list[bytes] | None = []  # the IDE's bytes since its last frame boundary (None: too many)
        self._unsent_bytes = 0
        self._held: list[bytes] = []  # while reconnecting: the cut frame's start, then all the IDE sends
        self._held_bytes = 0
        self._resend: list[bytes] = []  # safe requests in flight at the break, sent first on the new connection
        self._probe: bytes | None = None  # the ledger's probe, waiting for a boundary of the IDE's frames
        self._reconnecting: asyncio.Task[None] | None = None
        self._episode: _Episode | None = None
        self._episode_end: asyncio.TimerHandle | None = None
        self._ledger = ledger
        self._session = session
        self._from_ide = MessageReader(keep_raw=_RESENDABLE_BYTES) if ledger is not None or trace else None
        self._from_hub: MessageReader | None = None  # started when the hub's messages matter (_hub_reader)
        self._trace = trace  # with --trace: the log of each direction's messages
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # What the status page shows of it.
        self.kernel: str | None = None
        self.opened_at = time.time()
        self.bytes_to_hub = self.bytes_to_ide = self.reconnects = 0

    # -- the IDE's side: aiohttp hands the upgraded connection's bytes to its "parser", which is this ----------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.bytes_to_hub += len(data)
        pings = self.to_hub.feed(data)
        if self._from_ide is not None:
            for message in self._from_ide.feed(data):
                self._note_from_ide(message)
        if self._reconnect is not None:
            self._note_unsent(data)
        if self.state is RelayState.RECONNECTING:
            self._hold(data, pings)
        elif self.state is not RelayState.CLOSED and not self._hub_transport.is_closing():
            self._hub_transport.write(data)  # too much queued: HubConnection.pause_writing pauses the IDE
            if self._probe is not None and self.to_hub.at_message_boundary:
                self._hub_transport.write(self._probe)
                self._probe = None
        if self.to_hub.closed and self.state is RelayState.OPEN:
            self.state = RelayState.CLOSING
        elif self.to_hub.closed and self.state is RelayState.CLOSED:
            self._finish()  # the IDE answered the proxy's close frame
        return False, b""

    def _note_from_ide(self, message: KernelMessage) -> None:
        if self._trace is not None:
            self._trace[0].log(message)
        if self._ledger is not None:
            self._ledger.sent(message, self._ledger.connection, asyncio.get_running_loop().time())

    def _note_unsent(self, data: bytes) -> None:
        """Keep the IDE's bytes since the end of its last whole message (a message sent in fragments is kept from
        its first): if the hub side breaks now, they go again."""
        boundary = self.to_hub.last_message_boundary
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
        reconnecting = self.state is RelayState.RECONNECTING
        self._set_closed()
        if reconnecting or self._ide_told:
            self._finish_now()
        if not reconnecting:
            self.goodbye_to_hub(GOING_AWAY)

    def pause_ide(self) -> None:
        if not self._ide_transport.is_closing():
            self._ide_transport.pause_reading()

    def resume_ide(self) -> None:
        if not self._ide_transport.is_closing():
            self._ide_transport.resume_reading()

    # -- the hub's side ------------------------------------------------------------------------------------------

    def from_hub(self, data: bytes) -> None:
        if self.state is RelayState.CLOSED or self._ide_transport.is_closing():
            return
        self.bytes_to_ide += len(data)
        at_message_boundary = self.to_ide.at_message_boundary
        pings = self.to_ide.feed(data)
        if pings:
            self._pong_to_hub(pings)
        lost: list[str] = []
        reader = self._hub_reader(data, at_message_boundary)
        if reader is not None:
            for message in reader:
                lost += self._note_from_hub(message)
        self._write_whole_frames(data)
        if self.to_ide.closed and self.state is RelayState.OPEN:
            self.state = RelayState.CLOSING
        if lost:
            self._tell_ide_of_loss(lost)
            return
        if self._ide_protocol.writing_paused and not self.hub_paused:
            self._hub_transport.pause_reading()
            self._resuming = asyncio.ensure_future(self._resume_hub_when_drained(self._hub_transport))

    def _hub_reader(self, data: bytes, was_at_message_boundary: bool) -> list[KernelMessage] | None:
        """The hub's messages completed by ``data``, read only while they matter (the trace, or the ledger waiting
        for replies): most of a kernel's traffic is output nobody waits on, and reading it costs a parse each.
        Reading starts at a message boundary, so that it never begins inside a message."""
        wanted = self._trace is not None or (self._ledger is not None and self._ledger.listening)
        if self._from_hub is None:
            if not wanted:
                return None
            if was_at_message_boundary:
                self._from_hub = MessageReader()
            elif self.to_ide.last_message_boundary >= 0:
                self._from_hub = MessageReader()
                data = data[self.to_ide.last_message_boundary:]
            else:
                return None
        messages = self._from_hub.feed(data)
        if not wanted and self.to_ide.at_message_boundary:
            self._from_hub = None
        return messages

    def _note_from_hub(self, message: KernelMessage) -> list[str]:
        if self._trace is not None:
            self._trace[1].log(message)
        if self._ledger is None:
            return []
        return self._ledger.received(message, asyncio.get_running_loop().time()) or []

    def _write_whole_frames(self, data: bytes) -> None:
        """Write the hub's bytes to the IDE, except the start of a small frame, kept until it is whole."""
        out = self._hub_tail + data if self._hub_tail else data
        tracker = self.to_ide
        if tracker.at_boundary:
            self._hub_tail, self._ide_mid_frame = b"", False
            self._ide_transport.write(out)
            return
        if tracker.last_boundary < 0 and self._ide_mid_frame:
            self._ide_transport.write(out)  # the rest of a large frame the IDE has begun
            return
        cut = len(self._hub_tail) + tracker.last_boundary if tracker.last_boundary >= 0 else 0
        if len(out) - cut + tracker.frame_left <= _WHOLE_FRAME_BYTES:
            if cut:
                self._ide_transport.write(out[:cut])
            self._hub_tail, self._ide_mid_frame = out[cut:], False
        else:
            self._ide_transport.write(out)
            self._hub_tail, self._ide_mid_frame = b"", True

    async def _resume_hub_when_drained(self, hub_transport: asyncio.Transport) -> None:
        with suppress(ConnectionError):  # the IDE is gone: its bytes are dropped, the hub's close still read
            await self._ide.drain()
        if not hub_transport.is_closing():
            hub_transport.resume_reading()

    @property
    def hub_paused(self) -> bool:
        return self._resuming is not None and not self._resuming.done()

    def hub_lost(self, hub: HubConnection) -> None:
        """The hub hung up. Without its close frame, a kernel channel that can be is reconnected; else the IDE's
        side is closed (1011)."""
        if hub is not self._hub or self.state in (RelayState.CLOSED, RelayState.RECONNECTING):
            return  # a connection already replaced, or a relay already over
        if (self.state is RelayState.OPEN and self._reconnect is not None and self._unsent is not None
                and not self._ide_mid_frame and not self.to_ide.in_message and self._hang_up is None):
            self._start_reconnecting()
            return
        self.goodbye_to_ide(INTERNAL_ERROR, b"the hub closed the connection")
        self._set_closed()
        self._finish()

    # -- reconnecting the hub's side -----------------------------------------------------------------------------

    def _start_reconnecting(self) -> None:
        loop = asyncio.get_running_loop()
        self.state = RelayState.RECONNECTING
        # At once, not in the task: what the IDE sends from now on is held behind the frame cut by the break.
        self._held, self._held_bytes = list(self._unsent or ()), self._unsent_bytes
        self._hub_tail, self._probe = b"", None
        self.to_ide = FrameTracker()
        self._from_hub = None
        if self._resuming is not None:
            self._resuming.cancel()
        self.resume_ide()  # it may have been paused for the old connection: its bytes are held now
        if self._episode_end is not None:
            self._episode_end.cancel()
        if self._ledger is not None:
            outcome = self._ledger.broke(self._ledger.connection)
            if outcome.lost:
                self._tell_ide_of_loss(outcome.lost)
                return
            self._resend = outcome.resend
        if self._episode is None:
            self._episode = _Episode(started=loop.time())
            log.warning("%s: the connection to the hub broke; reconnecting (the IDE stays connected, what it sends "
                        "is held).", self._label)
        else:
            self._episode.drops += 1  # the last connection died young: the same outage goes on
        self._reconnecting = loop.create_task(self._reconnect_hub(self._episode))

    def _hold(self, data: bytes, pings: list[bytes]) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        if self.to_hub.closed:  # the IDE said goodbye while the hub was away: answered at once
            self.goodbye_to_ide(1000, b"")
            self._end_reconnecting()
            return
        if pings and not self._ide_mid_frame:  # the hub is away: the proxy answers the IDE's pings itself
            self._ide_transport.write(b"".join(control_frame(Opcode.PONG, payload, masked=False) for payload in pings))
        if self._held_bytes > HELD_LIMIT_BYTES:
            log.warning("%s: the IDE sent more than %d MiB while the hub was away; closing it.", self._label,
                        HELD_LIMIT_BYTES // 2 ** 20)
            self.goodbye_to_ide(INTERNAL_ERROR, b"too much to hold while the hub was away")
            self._end_reconnecting()

    async def _reconnect_hub(self, episode: _Episode) -> None:
        """Open the same websocket on the hub again, with back-off, until it answers, the hub says it never will,
        or the time is up."""
        assert self._reconnect is not None
        loop = asyncio.get_running_loop()
        deadline = episode.started + self._reconnect_seconds
        while True:
            if episode.attempts:
                pause = _RECONNECT_BACKOFF[min(episode.attempts - 1, len(_RECONNECT_BACKOFF) - 1)]
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("%s: the hub could not be reached again within %.0f s; the IDE's websocket is closed "
                            "(its client reconnects by itself).", self._label, self._reconnect_seconds)
                self.goodbye_to_ide(SERVICE_RESTART, b"the hub could not be reached again")
                break
            attempt_seconds = _ATTEMPT_SECONDS[min(episode.attempts, len(_ATTEMPT_SECONDS) - 1)]
            episode.attempts += 1
            try:
                async with timeout(min(attempt_seconds, remaining)):
                    hub = await self._reconnect()
            except asyncio.TimeoutError:
                continue  # no answer: a fresh connection next time
            except ProxyError as error:
                final = _final_refusal(error)
                if final is None:
                    continue
                log.warning("%s: %s; the IDE's websocket is closed.", self._label, final)
                self.goodbye_to_ide(INTERNAL_ERROR, final.encode()[:120])
                break
            self._switch_to(hub, episode)
            return
        self._end_reconnecting()

    def _switch_to(self, hub: HubConnection, episode: _Episode) -> None:
        assert hub.transport is not None
        self._reconnecting = None
        self.state = RelayState.OPEN
        self._hub, self._hub_transport = hub, hub.transport
        self.reconnects += 1
        episode.held_bytes += self._held_bytes
        episode.took = asyncio.get_running_loop().time() - episode.started
        out = b"".join(self._resend) + b"".join(self._held)
        self._resend, self._held, self._held_bytes = [], [], 0
        if out:
            self._hub_transport.write(out)  # before attach: if the connection is dead already, the next
        #                                       break finds these bytes in the ledger and _unsent again
        probe = self._ledger.probe(self._session) if self._ledger is not None else None
        if probe is not None:
            frame = data_frame(Opcode.BINARY if self._ledger is not None and self._ledger.binary else Opcode.TEXT, probe,
                               masked=True)
            if self.to_hub.at_message_boundary:
                self._hub_transport.write(frame)
            else:
                self._probe = frame
        self._episode_end = asyncio.get_running_loop().call_later(_STABLE_SECONDS, self._episode_over)
        hub.attach(self)

    def _episode_over(self) -> None:
        """The new connection has lived long enough: the outage is over; say so once."""
        episode, self._episode, self._episode_end = self._episode, None, None
        if episode is None:
            return
        log.info("%s: reconnected to the hub after %.1f s (%d drop%s, %d attempt%s); %d bytes the IDE sent meanwhile "
                 "were delivered.", self._label, episode.took, episode.drops, "s" if episode.drops > 1 else "",
                 episode.attempts, "s" if episode.attempts > 1 else "", episode.held_bytes)

    def _end_reconnecting(self) -> None:
        task, self._reconnecting = self._reconnecting, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._set_closed()
        self._finish()

    def _tell_ide_of_loss(self, lost: list[str]) -> None:
        """A message was lost with a hub connection: close the IDE's websocket (1012), so that its client fails
        what it waits for and reconnects, rather than waiting forever."""
        log.warning("%s: %s the IDE sent was lost when the connection to the hub broke; the IDE's websocket is "
                    "closed so that it knows (its client reconnects by itself).", self._label,
                    ", ".join(sorted(set(lost))))
        self.goodbye_to_ide(SERVICE_RESTART, b"a message was lost when the connection to the hub broke")
        if self.state is RelayState.RECONNECTING:
            self._end_reconnecting()
            return
        self._set_closed()
        self.goodbye_to_hub(GOING_AWAY)
        self._finish()

    # -- frames of the proxy's own -------------------------------------------------------------------------------

    def _pong_to_hub(self, pings: list[bytes]) -> None:
        """Answer the hub's pings for the IDE, as a client that is not reading cannot (the IDE answers too)."""
        if self.to_hub.at_boundary and not self.to_hub.closed and not self._hub_transport.is_closing():
            self._hub_transport.write(b"".join(control_frame(Opcode.PONG, payload, masked=True) for payload in pings))

    def goodbye_to_ide(self, code: int, reason: bytes) -> None:
        """Close the IDE's side with ``code``, unless it cannot take a frame now or the hub's close passed."""
        if (self.state is not RelayState.CLOSED and not self._ide_mid_frame and not self.to_ide.closed
                and not self._ide_transport.is_closing()):
            self._ide_transport.write(control_frame(Opcode.CLOSE, close_payload(code, reason), masked=False))
            self._ide_told = True
        self._set_closed()

    def goodbye_to_hub(self, code: int) -> None:
        """Close the hub's side with ``code`` (unless the IDE's own close passed), and leave the hub a moment to
        answer and hang up first, as RFC 6455 §7.1.1 asks of a client. Mid-frame, just hang up."""
        if self._hang_up is not None or self._hub_transport.is_closing():
            return
        if not self.to_hub.at_boundary:
            self._hub_transport.abort()
            return
        if not self.to_hub.closed:
            self._hub_transport.write(control_frame(Opcode.CLOSE, close_payload(code, b""), masked=True))
        # abort, not close: close() would first wait for the hub to read what is still queued for it.
        self._hang_up = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT_SECONDS, self._hub_transport.abort)

    def stop(self) -> None:
        """The proxy is shutting down: close both sides with 1001 (going away)."""
        reconnecting = self.state is RelayState.RECONNECTING
        self.goodbye_to_ide(GOING_AWAY, b"jupyter-dev-proxy stopped")
        if reconnecting:
            self._end_reconnecting()
            return
        self.goodbye_to_hub(GOING_AWAY)

    def _set_closed(self) -> None:
        self.state = RelayState.CLOSED

    def _finish(self) -> None:
        """End the relay; after a close frame of the proxy's own, once the IDE has answered it (or 5 s on), so that
        its client reads the close code instead of a dropped connection (RFC 6455 §7.1.1)."""
        if self.finished.done():
            return
        if self._ide_told and not self.to_hub.closed and not self._ide_transport.is_closing():
            if self._ide_answer is None:
                self._ide_answer = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT_SECONDS, self._finish_now)
            return
        self._finish_now()

    def _finish_now(self) -> None:
        if self._ide_answer is not None:
            self._ide_answer.cancel()
        if not self.finished.done():
            self.finished.set_result(None)

    def close(self) -> None:
        """The relay is over: drop the hub's connection, unless the hub is still being given its moment to
        answer the proxy's close frame (the IDE hung up): the hang-up timer then drops it."""
        self._set_closed()
        for pending in (self._resuming, self._reconnecting):
            if pending is not None:
                pending.cancel()
        if self._ide_answer is not None:
            self._ide_answer.cancel()
        if self._episode_end is not None:
            self._episode_end.cancel()
            self._episode_over()
        if self._hang_up is not None and not self._hub_transport.is_closing():
            return
        if self._hang_up is not None:
            self._hang_up.cancel()
        self._hub_transport.abort()


def _final_refusal(error: ProxyError) -> str | None:
    """Why reconnecting will never work, as the log says it; None when another attempt may."""
    if isinstance(error, ServerNotRunning) or error.status in (424, 503) and error.reason == "server-not-running":
        return "your server on the hub has stopped (the hub says it is not running)"
    if error.status == 404:
        return f"the hub refused to reconnect it (404 {error.reason}): the kernel is gone"
    if isinstance(error, HubLoginRequired) or error.status in (401, 403):
        return f"the hub refused to reconnect it ({error.status} {error.reason})"
    if error.status == 410:
        return "the hub chose another subprotocol on reconnecting"
    return None


async def relay_websocket(request: web.BaseRequest, settings: Settings, hub_transport: HubTransport,
                          token: Callable[[], str], url: URL, relays: OpenRelays,
                          set_cookie: str | None, to_app: bool = False) -> web.StreamResponse:
    """Open ``url`` on the hub as a websocket, accept the IDE with the same subprotocol, relay until closed;
    ``token`` gives the hub credential at each (re)connection; ``set_cookie`` (the proxy's own) is added to the
    IDE's handshake answer; ``to_app``: a web app's, which gets the browser's cookies but the proxy's."""
    accept = check_ide_handshake(request)
    offered = offered_protocols(request)
    hub, protocol = await open_hub_websocket(settings, hub_transport, url, request.headers, offered, token,
                                             to_app=to_app)
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
        relay = _relay_for(request, settings, hub_transport, token, url, ide, hub, offered, protocol)
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


def _relay_for(request: web.BaseRequest, settings: Settings, hub_transport: HubTransport, token: Callable[[], str],
               url: URL, ide: AbstractStreamWriter, hub: HubConnection, offered: list[str],
               protocol: str | None) -> Relay:
    """A kernel channel is relayed with reconnection, its ledger and (with --trace) its trace; anything else
    (a terminal, the events websocket) as plain bytes."""
    kernel = _KERNEL_CHANNEL.search(url.raw_path)
    if kernel is None:
        return Relay(request, ide, hub)

    async def reconnect() -> HubConnection:
        """The same websocket again (same URL, so the same session), which must speak the same subprotocol."""
        again, chosen = await open_hub_websocket(settings, hub_transport, url, request.headers, offered, token)
        if chosen != protocol:
            assert again.transport is not None
            again.transport.abort()
            raise ProxyError(410, "hub-changed-protocol", "The hub chose another subprotocol on reconnecting.")
        return again

    session = _SESSION_ID.search(url.raw_query_string)
    relay = Relay(request, ide, hub, reconnect, settings.reconnect_seconds,
                  f"The websocket of kernel {kernel.group(1)}", KernelLedger(binary=protocol is not None),
                  session.group(1) if session else "",
                  (MessageTrace("IDE → hub", kernel.group(1)), MessageTrace("hub → IDE", kernel.group(1)))
                  if settings.trace else None)
    relay.kernel = kernel.group(1)
    return relay


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
                 "reconnects": relay.reconnects, "state": relay.state.value}
                for relay in sorted(self._relays, key=lambda r: r.opened_at) if relay.kernel is not None]
