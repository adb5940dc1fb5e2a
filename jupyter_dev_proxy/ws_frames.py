"""WebSocket frames (RFC 6455) as the proxy needs them: one header reader and one unmasking for every reader of
the raw stream (``FrameTracker`` on the relay's path, ``kernel_messages.MessageReader`` for the ledger and the
trace), and the few frames the proxy writes itself (close, pong, a probe). Pure: bytes in, values out."""

from __future__ import annotations

import base64
import hashlib
import os
from enum import IntEnum

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2); any opcode with ``CONTROL_BIT`` is a control frame."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


CONTROL_BIT = 0x08
MAX_FRAME_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask key)

# Close codes the proxy sends (RFC 6455 §7.4.1).
GOING_AWAY = 1001  # the proxy stops, or the IDE left without a close frame
INTERNAL_ERROR = 1011  # the hub's side ended and cannot come back (the kernel or the server is gone)
SERVICE_RESTART = 1012  # the hub's side could not be brought back in time, or a request was lost with it: the
#                         IDE's client reconnects by itself and fails what it was waiting for


# A frame header as (its own length in bytes, mask key included and last; payload length; opcode; fin; masked).
# A plain tuple: this is read once per frame on the relay's path, and a NamedTuple costs ~20 times as much to build.
FrameHeader = tuple[int, int, int, bool, bool]


def read_frame_header(buffer: bytes | bytearray, position: int = 0) -> FrameHeader | None:
    """The header of the frame starting at ``buffer[position]``; None while it is not all there yet."""
    available = len(buffer) - position
    if available < 2:
        return None
    second = buffer[position + 1]
    payload, length = second & 0x7F, (6 if second & 0x80 else 2)  # 4 bytes of mask key when masked
    if payload == 126:
        payload, length = int.from_bytes(buffer[position + 2:position + 4], "big"), length + 2
    elif payload == 127:
        payload, length = int.from_bytes(buffer[position + 2:position + 10], "big"), length + 8
    if available < length:
        return None
    first = buffer[position]
    return length, payload, first & 0x0F, first >= 0x80, second >= 0x80


def unmask(data: bytes, key: bytes, phase: int = 0) -> bytes:
    """``data`` XOR the mask ``key``, ``data[0]`` being payload byte ``phase`` of its frame (masking is the same).

    One XOR of two big integers, in C: a per-byte Python loop costs about 80 ms per MB."""
    if not data:
        return b""
    turned = key[phase % 4:] + key[:phase % 4]
    size = len(data)
    mask = (turned * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(size, "little")


class FrameTracker:
    """Follows the frame boundaries of one direction without looking at data payloads.

    A frame of the proxy's own may only go between two frames, and never after that side's close frame.
    Control frames (≤ 125 bytes) are taken whole, so a ping's payload is at hand for the proxy's pong: the
    hub's (unmasked) pings by default, the IDE's (masked, unmasked here) with ``masked_pings``.
    """

    __slots__ = ("_skip", "_partial", "_masked_pings", "_fragmented", "_ends_message", "closed", "last_boundary",
                 "last_message_boundary")

    def __init__(self, masked_pings: bool = False) -> None:
        self._skip = 0  # bytes of the current frame still to come
        self._partial = b""  # the start of a frame cut by a read: its header, or a control frame
        self._masked_pings = masked_pings
        self._fragmented = False  # inside a message sent in fragments (a data frame without FIN came last)
        self._ends_message = True  # the frame being followed ends a message (or is a control frame between two)
        self.closed = False  # a close frame has passed: this direction said goodbye itself
        self.last_boundary = -1  # where in the last data fed the last frame ending in it ended; -1: none did
        self.last_message_boundary = -1  # the same for the last frame that ended a whole message

    @property
    def at_boundary(self) -> bool:
        return self._skip == 0 and not self._partial

    @property
    def at_message_boundary(self) -> bool:
        """Between two whole messages: where a message of the proxy's own, or one sent again, may go."""
        return self.at_boundary and not self._fragmented

    @property
    def in_message(self) -> bool:
        """Inside a message sent in fragments: some of its frames have passed, not its last."""
        return self._fragmented

    def _frame_ended(self, at: int) -> None:
        self.last_boundary = at
        if self._ends_message:
            self.last_message_boundary = at

    @property
    def frame_left(self) -> int:
        """Payload bytes of the current frame still to come (0 at a boundary or inside a frame's header)."""
        return self._skip

    def feed(self, data: bytes) -> list[bytes]:
        """Note ``data`` as relayed; return the payloads of the pings in it (see the class)."""
        pings: list[bytes] = []
        self.last_boundary = self.last_message_boundary = -1
        if self._skip >= len(data):
            self._skip -= len(data)
            if self._skip == 0:
                self._frame_ended(len(data))
            return pings
        carried = len(self._partial)  # bytes before ``data`` in the buffer parsed below
        if self._partial:
            data, pos = self._partial + data, 0
        else:
            pos = self._skip
        end = len(data)
        if carried < pos <= end:  # the frame skipped through ended in this data
            self._frame_ended(pos - carried)
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
                self._ends_message = not self._fragmented
                if first & 0x0F == Opcode.CLOSE:
                    self.closed = True
                elif first & 0x0F == Opcode.PING and (header == 2) != self._masked_pings:
                    payload = data[pos + header:pos + header + length]
                    key = data[pos + 2:pos + 6]
                    pings.append(unmask(payload, key) if header == 6 else payload)
            else:  # a data frame: the message goes on unless FIN is set
                self._ends_message = bool(first & 0x80)
                self._fragmented = not self._ends_message
            pos += header + length
            if carried < pos <= end:
                self._frame_ended(pos - carried)
        self._skip = max(pos - end, 0)
        self._partial = data[pos:] if pos < end else b""
        return pings


def data_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One whole frame of the proxy's own: ``masked`` toward the hub (the proxy is its client), unmasked toward
    the IDE."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, (0x80 if masked else 0) | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, (0x80 if masked else 0) | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, (0x80 if masked else 0) | 127)) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + unmask(payload, key)


def control_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """A close or pong frame (at most 125 bytes of payload)."""
    return data_frame(opcode, payload[:125], masked)


def close_payload(code: int, reason: bytes) -> bytes:
    return code.to_bytes(2, "big") + reason[:123]


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()).decode()
