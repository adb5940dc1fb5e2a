"""Websocket frame headers (RFC 6455 5.2), read from raw bytes, and payload unmasking. No I/O.

Readers of the raw stream (``kernel_messages.MessageReader``; ``ws_relay.FrameTracker`` still has its own loop) must
agree on where frames start and end: this is the header reader they can share.
"""

from __future__ import annotations

from enum import IntEnum


class Opcode(IntEnum):
    """The data frames' opcodes; any opcode with ``CONTROL_BIT`` is a control frame (close, ping, pong)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2


CONTROL_BIT = 0x08
MAX_FRAME_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask key)


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
