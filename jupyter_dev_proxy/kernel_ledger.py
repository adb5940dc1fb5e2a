"""What the IDE has asked a kernel and what it has been answered, so that no request is lost silently when the
hub's side of a kernel websocket breaks.

A byte relay cannot tell what was in flight when a connection broke: a request written into the dying
connection may never have reached the kernel, and a reply the server wrote into it never reaches the IDE
(jupyter_server replays only what the kernel says after it noticed the close). The ledger follows the kernel
protocol's requests (``*_request``, by ``msg_id``) and replies (``*_reply``, by parent ``msg_id``) and decides,
at each break, what becomes of every request still unanswered:

    safe to repeat (kernel_info, complete, inspect,   sent again on the new connection (with a mark in its
    is_complete, history, comm_info)                  metadata: the kernel drops a message whose signature it
                                                      has seen, and the server signs the same bytes the same
                                                      way); a second answer to one of these changes nothing
    anything else (execute, comm_info, shutdown...)   in doubt: the proxy sends its own kernel_info_request on
                                                      the shell channel, which the kernel answers only after
                                                      every shell request before it; a doubtful request still
                                                      unanswered then is lost, and the IDE is told (its
                                                      websocket closed with 1012, so its client fails the
                                                      request and reconnects) instead of waiting forever
    messages without a reply (comm_msg, input_reply)  lost for certain when written after the hub last said
                                                      anything on the connection that broke: the IDE is told
    v1 frames that are not kernel messages            not followed: the server cannot give them to a kernel,
                                                      so losing one changes nothing (on the legacy protocol
                                                      they are followed as messages without a reply: the
                                                      server reads a message with buffers, which is binary,
                                                      and one without a channel)

Pure: messages in, decisions out; the relay does the I/O.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .kernel_messages import KernelMessage
from .ws_frames import CONTROL_BIT, Opcode, data_frame, read_frame_header, unmask

# Requests whose second copy does no harm: they read state and change nothing (the kernel answers each).
SAFE_TO_REPEAT = frozenset({
    "kernel_info_request", "complete_request", "inspect_request", "is_complete_request", "history_request",
    "comm_info_request",
})

# The proxy's own probe requests carry this prefix in their msg_id; the IDE never sent them.
PROBE_PREFIX = "jupyter-dev-proxy-probe-"
# The metadata key that makes a request sent again differ from its first copy (the kernel's Session refuses a
# signature it has seen: "Duplicate Signature").
RESENT_MARK = "jupyter_dev_proxy_sent_again"
_V1_METADATA = 3  # channel, header, parent_header, metadata, content, buffers...
# Bounds on what is remembered, for a client that never gets (or never wants) answers: the oldest is forgotten.
_MAX_PENDING = 4096
_MAX_UNANSWERABLE = 256
# What the copies of safe requests may hold in all (a 60 KB inspect_request each time the IDE's help updates).
_MAX_RAW_BYTES = 4 * 1024 * 1024
# A message without a reply written this long before the hub's connection still carried something has arrived: a
# connection that breaks loses what was in flight, a few round trips' worth, not what went seconds earlier.
_DELIVERED_AFTER_SECONDS = 5.0
# The iopub execution states of a kernel (re)starting: requests to the kernel before it will never be answered.
_KERNEL_STARTS = frozenset({"starting", "restarting", "dead"})


@dataclass
class _Request:
    msg_type: str
    raw: bytes | None  # the request's frames as the IDE sent them, when small enough to send again
    connection: int  # the hub connection it was last written on


@dataclass
class BreakOutcome:
    """What to do about the requests in flight when a hub connection broke."""

    resend: list[bytes] = field(default_factory=list)  # safe requests' frames, to write first on the new connection
    lost: list[str] = field(default_factory=list)  # msg_types of messages certainly lost: tell the IDE


class KernelLedger:
    """The unanswered requests of one kernel websocket, and the decisions a break calls for (see the module)."""

    __slots__ = ("binary", "_pending", "_raw_bytes", "_doubtful", "_unanswerable", "_sequence", "_sent", "_probe",
                 "connection")

    def __init__(self, binary: bool) -> None:
        self.binary = binary  # the v1 protocol (binary frames); else legacy JSON text frames
        self._pending: dict[str, _Request] = {}
        self._raw_bytes = 0  # what the safe requests' copies hold
        self._doubtful: set[str] = set()  # unsafe requests that were in flight at a break
        # Messages without a reply (sequence number, msg_type) not yet known to have been read by the kernel, and
        # the sequence number of every recent message with an id: a reply or status whose parent was sent after
        # one of them shows that the kernel read it (it reads a channel in order).
        # A list, not a deque: it is short (at most _MAX_UNANSWERABLE) and usually empty, and an empty deque takes
        # a 0.5 KiB block on every open kernel websocket.
        self._unanswerable: list[tuple[int, float, str]] = []  # in sending order
        self._sequence: dict[str, int] = {}
        self._sent = 0
        self._probe: tuple[str, int] | None = None  # the probe's msg_id and the connection it went on
        self.connection = 0  # the hub connection the IDE's bytes go to now

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def listening(self) -> bool:
        """Whether the hub's messages matter now: a request waits for its reply, a message without one is not
        known to have been read, or the probe is out."""
        return bool(self._pending or self._unanswerable or self._probe)

    @property
    def kept_bytes(self) -> int:
        """What the copies of safe requests hold (at most _MAX_RAW_BYTES)."""
        return self._raw_bytes

    def sent(self, message: KernelMessage, connection: int, now: float) -> None:
        """The IDE sent ``message`` at ``now``; its bytes go to hub connection ``connection``."""
        if message.channel == "?" and self.binary:
            return  # not a v1 kernel message: the server gives it to no kernel (see the module's table)
        self._sent += 1
        if message.msg_id != "?":
            self._sequence[message.msg_id] = self._sent
            if len(self._sequence) > _MAX_PENDING:
                del self._sequence[next(iter(self._sequence))]
        if message.msg_type.endswith("_request") and message.msg_id != "?":
            raw = message.raw if message.msg_type in SAFE_TO_REPEAT else None
            if raw is not None and self._raw_bytes + len(raw) > _MAX_RAW_BYTES:
                raw = None  # past the budget a safe request is treated as any other: in doubt at a break
            self._raw_bytes += len(raw or b"")
            self._pending[message.msg_id] = _Request(message.msg_type, raw, connection)
            if len(self._pending) > _MAX_PENDING:
                self._forget(next(iter(self._pending)))
        elif len(self._unanswerable) < _MAX_UNANSWERABLE:
            kind = message.msg_type if message.msg_type != "?" else "a message the proxy could not read"
            self._unanswerable.append((self._sent, now, kind))

    def _forget(self, msg_id: str) -> _Request | None:
        request = self._pending.pop(msg_id, None)
        if request is not None:
            self._raw_bytes -= len(request.raw or b"")
        self._doubtful.discard(msg_id)
        return request

    def received(self, message: KernelMessage, now: float) -> list[str] | None:
        """The hub sent ``message`` to the IDE at ``now``. When it answers the proxy's probe: the msg_types of the
        doubtful requests still unanswered (lost; [] when none). None otherwise."""
        parent = message.parent_msg_id
        read_up_to = self._sequence.get(parent, 0) if parent else 0
        unanswerable = self._unanswerable  # read by the kernel: before a message it answered, or long enough ago
        read = 0
        while read < len(unanswerable) and (unanswerable[read][0] <= read_up_to
                                            or now - unanswerable[read][1] >= _DELIVERED_AFTER_SECONDS):
            read += 1
        del unanswerable[:read]
        if message.exec_state in _KERNEL_STARTS:  # a restarted kernel answers nothing asked of the old one
            for msg_id in list(self._pending):
                self._forget(msg_id)
            self._unanswerable.clear()
            return None
        if not message.msg_type.endswith("_reply") or not parent:
            return None
        if self._probe is not None and parent == self._probe[0]:
            self._probe = None
            lost = [request.msg_type for msg_id in sorted(self._doubtful) if (request := self._forget(msg_id))]
            self._doubtful.clear()
            return lost
        self._forget(parent)
        return None

    def broke(self, connection: int) -> BreakOutcome:
        """Hub connection ``connection`` broke; the IDE's bytes go to ``connection + 1`` from now on."""
        outcome = BreakOutcome(lost=[kind for _, _, kind in self._unanswerable])
        self._unanswerable.clear()
        self.connection = connection + 1
        for msg_id, request in self._pending.items():
            if request.connection > connection:
                continue  # held during the break: it goes on the new connection anyway
            again = _marked_again(request.raw, self.binary, self.connection) if request.raw is not None else None
            if again is not None:
                outcome.resend.append(again)
                request.connection = self.connection
            else:
                self._doubtful.add(msg_id)
        if self._probe is not None and self._probe[1] <= connection:
            self._probe = None  # lost with its connection: a new one is sent
        return outcome

    def probe(self, session: str) -> bytes | None:
        """The payload of a probe to send on the new connection when requests are in doubt (None: none needed):
        a kernel_info_request on the shell channel, answered after every shell request sent before it."""
        if not self._doubtful or self._probe is not None:
            return None
        msg_id = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        self._probe = (msg_id, self.connection)
        header = {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "jupyter-dev-proxy",
                  "session": session, "date": datetime.now(timezone.utc).isoformat(), "version": "5.3"}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
        if not self.binary:
            return json.dumps({**message, "buffers": [], "channel": "shell"}).encode()
        parts = [b"shell"] + [json.dumps(message[key]).encode() for key in
                              ("header", "parent_header", "metadata", "content")]
        offsets, position = [], 8 * (len(parts) + 2)  # the count, then where each part starts and where the last ends
        for part in parts:
            offsets.append(position)
            position += len(part)
        offsets.append(position)
        return (len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
                + b"".join(parts))


def _marked_again(raw: bytes, binary: bool, connection: int) -> bytes | None:
    """The request in ``raw`` (the IDE's masked frames) as one new masked frame whose metadata carries
    RESENT_MARK; None when it cannot be read back (it is then treated as in doubt)."""
    payload, position = b"", 0
    while position < len(raw):
        header = read_frame_header(raw, position)
        if header is None:
            return None
        length, size, opcode, _, masked = header
        body = raw[position + length:position + length + size]
        if not opcode & CONTROL_BIT:
            payload += unmask(body, raw[position + length - 4:position + length]) if masked else body
        position += length + size
    try:
        if binary:
            count = int.from_bytes(payload[:8], "little")
            offsets = [int.from_bytes(payload[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
            parts = [payload[start:end] for start, end in zip(offsets, offsets[1:] + [len(payload)])]
            metadata = json.loads(parts[_V1_METADATA])
            metadata[RESENT_MARK] = connection
            parts[_V1_METADATA] = json.dumps(metadata).encode()
            new_offsets, at = [], 8 * (len(parts) + 1)
            for part in parts:
                new_offsets.append(at)
                at += len(part)
            again = (len(new_offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in new_offsets)
                     + b"".join(parts))
        else:
            message = json.loads(payload)
            message.setdefault("metadata", {})[RESENT_MARK] = connection
            again = json.dumps(message).encode()
    except (ValueError, IndexError, TypeError, AttributeError):
        return None
    return data_frame(Opcode.BINARY if binary else Opcode.TEXT, again, masked=True)
