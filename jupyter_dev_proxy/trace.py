"""The kernel-message trace (``--trace``): one log line per message on a kernel websocket — direction, channel,
``msg_type``, a short ``msg_id``, size — never the content. Only built when tracing is on: without it the relay
stays a byte relay.

``MessageTrace`` follows one direction's frames (unmasking the IDE's), puts a message's fragments together, and
reads the header of both wire formats: ``v1.kernel.websocket.jupyter.org`` (binary: offsets, channel, header...)
and the legacy JSON text frames.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

log = logging.getLogger("jupyter_dev_proxy")

# What of a message is kept for reading its header: a v1 header sits in its first bytes; a legacy JSON message is
# read whole up to the larger bound, and beyond it its fields are looked for in the first bytes and the last.
_V1_PREFIX_BYTES = 64 * 1024
_JSON_WHOLE_BYTES = 1024 * 1024
_JSON_TAIL_BYTES = 4096
_FIELD = {name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*"([^"]{0,100})"')
          for name in ("channel", "msg_type", "msg_id")}
_TEXT, _BINARY, _CONTINUATION = 0x1, 0x2, 0x0


@dataclass(frozen=True)
class KernelMessage:
    channel: str
    msg_type: str
    msg_id: str
    size: int


def read_v1(prefix: bytes, size: int) -> KernelMessage | None:
    """The channel and header of a v1 binary message: [n][n offsets][channel][header][parent][metadata]..."""
    try:
        count = int.from_bytes(prefix[:8], "little")
        offsets = [int.from_bytes(prefix[8 * (i + 1):8 * (i + 2)], "little") for i in range(min(count, 3))]
        channel = prefix[offsets[0]:offsets[1]].decode()
        header = json.loads(prefix[offsets[1]:offsets[2]])
        return KernelMessage(channel, str(header.get("msg_type", "?")), str(header.get("msg_id", "?")), size)
    except (ValueError, IndexError, AttributeError, UnicodeDecodeError):
        return None


def read_json(kept: bytes, tail: bytes, size: int) -> KernelMessage | None:
    """The channel and header of a legacy JSON message (whole, or its first and last bytes when it is large)."""
    if size <= _JSON_WHOLE_BYTES:
        try:
            message = json.loads(kept)
            header = message.get("header") or {}
            return KernelMessage(str(message.get("channel", "?")), str(header.get("msg_type", "?")),
                                 str(header.get("msg_id", "?")), size)
        except (ValueError, AttributeError):
            return None
    found = {name: (pattern.search(kept) or pattern.search(tail)) for name, pattern in _FIELD.items()}
    if found["msg_type"] is None:
        return None
    channel, msg_type, msg_id = (m.group(1).decode(errors="replace") if m else "?" for m in found.values())
    return KernelMessage(channel, msg_type, msg_id, size)


class MessageTrace:
    """One direction of one kernel websocket, read frame by frame for the trace."""

    def __init__(self, direction: str, kernel: str) -> None:
        self._direction = direction
        self._kernel = kernel[:8]
        self._head = bytearray()  # the current frame's header, while it is incomplete
        self._left: int | None = None  # payload bytes of the current frame still to come; None: between frames
        self._mask = b""
        self._offset = 0  # position in the current frame's payload (for unmasking)
        self._fin = self._control = False
        self._opcode = _BINARY  # of the message being put together
        self._kept = bytearray()  # the message's first bytes (all of a JSON message up to the bound)
        self._tail = bytearray()  # a large JSON message's last bytes
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Note ``data`` as relayed; log each kernel message it completes."""
        position = 0
        while position < len(data):
            if self._left is None:
                after_head = self._read_head(data, position)
                if after_head is None:
                    return
                position = after_head
            else:
                chunk = data[position:position + self._left]
                position += len(chunk)
                self._left -= len(chunk)
                if not self._control:
                    self._payload(chunk)
            if self._left == 0:
                self._left = None
                if self._fin and not self._control:
                    self._log_message()

    def _read_head(self, data: bytes, position: int) -> int | None:
        """Take the frame header from the bytes kept and ``data[position:]``; where the payload starts, or None
        when the header is not whole yet."""
        need = 2
        while True:
            missing = need - len(self._head)
            if missing > 0:
                self._head += data[position:position + missing]
                position = min(position + missing, len(data))
                if len(self._head) < need:
                    return None
            second = self._head[1]
            size = 2 + {126: 2, 127: 8}.get(second & 0x7F, 0) + (4 if second & 0x80 else 0)
            if size == need:
                break
            need = size
        head = bytes(self._head)
        self._head.clear()
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(head[2:4], "big")
        elif length == 127:
            length = int.from_bytes(head[2:10], "big")
        self._mask = head[-4:] if second & 0x80 else b""
        opcode = head[0] & 0x0F
        self._fin, self._control, self._left, self._offset = bool(head[0] & 0x80), bool(opcode & 0x08), length, 0
        if opcode in (_TEXT, _BINARY):  # a new message (else a continuation, or a control frame between)
            self._opcode, self._size = opcode, 0
            self._kept.clear()
            self._tail.clear()
        return position

    def _payload(self, chunk: bytes) -> None:
        limit = _JSON_WHOLE_BYTES if self._opcode == _TEXT else _V1_PREFIX_BYTES
        wanted = len(self._kept) < limit or self._opcode == _TEXT  # its start, or a JSON message's tail
        if self._mask and wanted:
            mask, start = self._mask, self._offset
            chunk = bytes(b ^ mask[(start + i) % 4] for i, b in enumerate(chunk))
        self._offset += len(chunk)
        self._size += len(chunk)
        if len(self._kept) < limit:
            self._kept += chunk[:limit - len(self._kept)]
        if self._opcode == _TEXT:
            self._tail = (self._tail + chunk)[-_JSON_TAIL_BYTES:]

    def _log_message(self) -> None:
        kept = bytes(self._kept)
        message = (read_json(kept, bytes(self._tail), self._size) if self._opcode == _TEXT
                   else read_v1(kept, self._size))
        if message is None:
            log.info("trace %s kernel %s: a %d-byte frame that is not a kernel message", self._direction,
                     self._kernel, self._size)
        else:
            log.info("trace %s kernel %s %-7s %-22s %s %d bytes", self._direction, self._kernel, message.channel,
                     message.msg_type, message.msg_id[:8], message.size)
