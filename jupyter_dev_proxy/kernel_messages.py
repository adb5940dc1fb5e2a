"""Kernel messages read off one direction of a kernel websocket: raw frames in, ``KernelMessage`` out. No I/O.

Both wire formats jupyter_server speaks are read: ``v1.kernel.websocket.jupyter.org`` (binary frames: a
little-endian uint64 count n, n uint64 offsets, then the parts channel, header, parent_header, metadata, content,
buffers...) and the legacy JSON text frames (``{"header", "parent_header", "metadata", "content", "channel"}`` in
any key order; jupyter_server writes ``header`` first and ``channel`` last). A legacy message with buffers travels
in the server's own binary layout (big-endian offsets), which is not read: it comes out unknown, and the ledger
follows it as a message without a reply.

Only what names a message is read, and only from where the message itself puts it: a value inside ``content``
is user data and never taken for a field. Every string returned is restricted to ``[A-Za-z0-9_.:-]``, so it can
go into a log line or a lookup as it is. Of a large message only its first bytes (and a JSON message's last) are
kept and unmasked, so reading costs little whatever the message size.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from .ws_frames import CONTROL_BIT, MAX_FRAME_HEADER, FrameHeader, Opcode, read_frame_header, unmask


# How much of a message is kept for reading it. A v1 message's channel and headers sit in its first bytes, and a
# header is a few hundred bytes: 64 KiB leaves room for a large parent_header and metadata. A legacy JSON message is
# parsed whole up to 1 MiB (any key order); beyond that its headers are read from the first 64 KiB (jupyter_server
# writes them first) and its channel from the last 4 KiB (jupyter_server writes it last).
_PREFIX_BYTES = 64 * 1024
_JSON_WHOLE_BYTES = 1024 * 1024
_JSON_TAIL_BYTES = 4 * 1024
# A status message's content is ``{"execution_state": "idle"}``; anything much larger is not worth parsing.
_STATUS_CONTENT_BYTES = 4 * 1024
# Parts of a v1 message read here: channel, header, parent_header, metadata, content (and where content ends).
_V1_OFFSETS_READ = 6

# msg_ids are uuids (JupyterLab) or ``<session uuid>_<pid>_<n>`` (jupyter_client); msg_types and channels are words.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
_UNKNOWN = "?"
_CHANNELS = frozenset({"shell", "iopub", "control", "stdin"})
# The channel of a JSON message that ends with it (jupyter_server's order): the key is followed by the outermost
# object's closing brace and nothing else, so it cannot be a key inside content (that would close two objects).
_TRAILING_CHANNEL = re.compile(rb'"channel"\s*:\s*"([^"\\]{0,100})"\s*\}\s*$')


@dataclass(slots=True)  # not frozen: a frozen dataclass costs twice as much to build, once per message
class KernelMessage:
    """One kernel message as it passed. Unknown fields are ``"?"`` (never a real id: do not match on it)."""

    channel: str  # "shell", "iopub", "control", "stdin", or "?" when not known
    msg_type: str  # header.msg_type, "?" when unknown
    msg_id: str  # header.msg_id, "?" when unknown
    parent_msg_id: str  # parent_header.msg_id, "" when none
    parent_msg_type: str  # parent_header.msg_type, "" when none
    size: int  # payload bytes of the whole message
    raw: bytes | None  # its frames as they travelled, when at most ``keep_raw`` bytes and not split by a control frame
    exec_state: str  # for iopub "status" messages: content.execution_state ("busy"/"idle"/...), else ""


def _clean(value: object, missing: str) -> str:
    """``value`` if it is a short string of safe characters; ``missing`` when absent or empty, else "?"."""
    if value is None or value == "":
        return missing
    if isinstance(value, str) and _SAFE_VALUE.fullmatch(value):
        return value
    return _UNKNOWN


def _channel(value: object) -> str:
    return value if isinstance(value, str) and value in _CHANNELS else _UNKNOWN


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_JSON = json.JSONDecoder()


def _loads(data: bytes) -> object:
    """JSON, or None when it is not (or is not whole). Kernel messages are UTF-8 (json.loads would first guess)."""
    try:
        return _JSON.decode(data.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _message(channel: object, header: object, parent: object, content: object, size: int,
             raw: bytes | None) -> KernelMessage:
    header, parent = _as_dict(header), _as_dict(parent)
    clean_channel, msg_type = _channel(channel), _clean(header.get("msg_type"), _UNKNOWN)
    exec_state = ""
    if clean_channel == "iopub" and msg_type == "status":
        exec_state = _clean(_as_dict(content).get("execution_state"), _UNKNOWN)
    return KernelMessage(clean_channel, msg_type, _clean(header.get("msg_id"), _UNKNOWN),
                         _clean(parent.get("msg_id"), ""), _clean(parent.get("msg_type"), ""), size, raw, exec_state)


def _unknown(size: int, raw: bytes | None) -> KernelMessage:
    """Not a kernel message (or not one that can be read): counted, never matched."""
    return KernelMessage(_UNKNOWN, _UNKNOWN, _UNKNOWN, "", "", size, raw, "")


# The v1 count and the first _V1_OFFSETS_READ offsets: little-endian uint64s.
_V1_WORDS = struct.Struct(f"<{_V1_OFFSETS_READ + 1}Q")
_V1_WORD = struct.Struct("<Q")


def _plausible_v1_count(count: int, size: int) -> bool:
    """Whether a v1 message of ``size`` bytes can have ``count`` parts: at least channel, header and parent, and
    its table of offsets (8 bytes each, after the count) inside it."""
    return 3 <= count < size // 8


def _read_v1(head: bytes, size: int, raw: bytes | None) -> KernelMessage:
    """A v1 binary message from its first bytes: [n][n offsets][channel][header][parent][metadata][content]..."""
    if len(head) < 8:
        return _unknown(size, raw)
    count = _V1_WORD.unpack_from(head)[0]
    if not _plausible_v1_count(count, size):
        return _unknown(size, raw)
    if count >= _V1_OFFSETS_READ and len(head) >= _V1_WORDS.size:
        offsets = list(_V1_WORDS.unpack_from(head)[1:])
    elif len(head) >= 8 * (min(count, _V1_OFFSETS_READ) + 1):
        offsets = list(struct.unpack_from(f"<{min(count, _V1_OFFSETS_READ)}Q", head, 8))
    else:
        return _unknown(size, raw)
    if count == len(offsets):
        offsets.append(size)  # the last part runs to the message's end
    if offsets != sorted(offsets) or offsets[-1] > size:
        return _unknown(size, raw)

    def part(index: int, limit: int = _PREFIX_BYTES) -> bytes | None:
        if index + 1 >= len(offsets) or offsets[index + 1] > len(head) or offsets[index + 1] - offsets[index] > limit:
            return None
        return head[offsets[index]:offsets[index + 1]]

    channel_part, header_part = part(0), part(1)
    if channel_part is None or header_part is None:
        return _unknown(size, raw)
    try:
        channel = channel_part.decode("ascii")
    except UnicodeDecodeError:
        return _unknown(size, raw)
    header = _loads(header_part)
    parent_part = part(2)
    parent = _loads(parent_part) if parent_part is not None else None
    content = None
    if channel == "iopub" and _as_dict(header).get("msg_type") == "status":
        content_part = part(4, _STATUS_CONTENT_BYTES)
        content = _loads(content_part) if content_part is not None else None
    return _message(channel, header, parent, content, size, raw)


def _top_level_values(text: str, names: frozenset[str]) -> dict[str, Any]:
    """The values of the outermost object's keys in ``names``, as far as ``text`` (maybe cut short) holds them.

    Each top-level value is decoded whole to step over it, so a key inside ``content`` is never mistaken for one of
    the message's own."""
    decoder, found = json.JSONDecoder(), dict[str, Any]()
    position = len(text) - len(text.lstrip())
    if not text.startswith("{", position):
        return found
    position += 1
    while True:
        try:
            key, position = decoder.raw_decode(text, _skip_space(text, position))
            position = _skip_space(text, position)
            if not isinstance(key, str) or not text.startswith(":", position):
                return found
            value, position = decoder.raw_decode(text, _skip_space(text, position + 1))
        except (ValueError, RecursionError):
            return found  # the text ends inside this value, or is not JSON
        if key in names:
            found[key] = value
        position = _skip_space(text, position)
        if not text.startswith(",", position):
            return found
        position += 1


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


_JSON_FIELDS = frozenset({"header", "parent_header", "channel"})


def _read_json(head: bytes, tail: bytes, size: int, raw: bytes | None) -> KernelMessage:
    """A legacy JSON message: parsed whole when it was kept whole, else read from its first and last bytes."""
    if size <= len(head):
        message = _as_dict(_loads(head))
        return _message(message.get("channel"), message.get("header"), message.get("parent_header"),
                        message.get("content"), size, raw)
    # Too large to keep: a cut may split a UTF-8 sequence, and only whole top-level values count anyway.
    found = _top_level_values(head.decode("utf-8", errors="replace"), _JSON_FIELDS)
    channel = found.get("channel")
    if channel is None:
        trailing = _TRAILING_CHANNEL.search(tail)
        channel = trailing.group(1).decode("ascii", errors="replace") if trailing else None
    return _message(channel, found.get("header"), found.get("parent_header"), None, size, raw)


_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY)


class MessageReader:
    """One direction of one websocket: frames in, complete kernel messages out.

    Frames may be masked (the IDE's) or not (the hub's), fragmented, with control frames between the fragments
    (not part of the message), and ``feed`` may be given any cut of the stream. A data message that is not a
    kernel message comes out with msg_type "?", so it can still be counted.
    """

    __slots__ = ("_keep_raw", "_partial", "_left", "_frame_size", "_frame_offset", "_key", "_fin", "_control",
                 "_opcode", "_size", "_head", "_head_limit", "_tail", "_raw")

    def __init__(self, keep_raw: int = 0) -> None:
        self._keep_raw = keep_raw
        # The frame being read
        self._partial = b""  # the start of a frame header cut by a feed
        self._left: int | None = None  # payload bytes of the frame still to come; None: between frames
        self._frame_size = 0
        self._frame_offset = 0  # payload bytes of the frame read so far (the mask's phase)
        self._key = b""  # the frame's mask key; empty when unmasked
        self._fin = self._control = False
        # The message being put together
        self._opcode: int | None = None  # of its first frame; None: between messages
        self._size = 0
        self._head = bytearray()  # its first bytes, unmasked: all of it up to ``_head_limit``
        self._head_limit = _PREFIX_BYTES
        self._tail = bytearray()  # a JSON message's last bytes, unmasked
        self._raw: bytearray | None = None  # its frames as they came, while they stay within ``keep_raw``

    def feed(self, data: bytes) -> list[KernelMessage]:
        """Note ``data`` as relayed; return the messages it completes."""
        messages: list[KernelMessage] = []
        position, end = 0, len(data)
        while position < end:
            if self._left is None and self._opcode is None and not self._partial:
                # The common case, a whole message in one frame that ``data`` holds: read it where it lies
                header = read_frame_header(data, position)
                if header is not None and header[3] and header[2] in _DATA_OPCODES \
                        and position + header[0] + header[1] <= end:
                    messages.append(self._whole_message(data, position, header))
                    position += header[0] + header[1]
                    continue
            if self._left is None:
                buffer = self._partial + data[position:position + MAX_FRAME_HEADER]
                header = read_frame_header(buffer)
                if header is None:  # then ``buffer`` holds all the rest of ``data``
                    self._partial = buffer
                    break
                position += header[0] - len(self._partial)
                self._partial = b""
                self._start_frame(header, buffer[:header[0]])
            else:
                take = min(self._left, end - position)
                if not self._control:
                    self._take(data, position, take)
                position += take
                self._left -= take
            if self._left == 0:
                self._end_frame(messages)
        return messages

    def _whole_message(self, data: bytes, position: int, header: FrameHeader) -> KernelMessage:
        """The message of the single frame at ``data[position]``, all of which ``data`` holds."""
        length, size, opcode, _, masked = header
        start, stop = position + length, position + length + size
        key = data[start - 4:start] if masked else b""
        raw = data[position:stop] if self._keep_raw and length + size <= self._keep_raw else None
        if opcode == Opcode.BINARY:
            count = int.from_bytes(data[start:start + 8], "little") if size >= 8 else 0
            if key:  # only the count is unmasked: the first 8 payload bytes, the key twice
                count ^= int.from_bytes(key + key, "little")
            if not _plausible_v1_count(count, size):  # not a kernel message: unmask no more of it
                return _unknown(size, raw)
            keep = min(size, _PREFIX_BYTES)
            head = unmask(data[start:start + keep], key) if key else data[start:start + keep]
            return _read_v1(head, size, raw)
        keep = size if size <= _JSON_WHOLE_BYTES else _PREFIX_BYTES  # parsed whole, else read from both ends
        head = unmask(data[start:start + keep], key) if key else data[start:start + keep]
        if keep == size:
            return _read_json(head, b"", size, raw)
        tail_from = size - _JSON_TAIL_BYTES
        tail = data[start + tail_from:stop]
        return _read_json(head, unmask(tail, key, tail_from) if key else tail, size, raw)

    def _start_frame(self, header: FrameHeader, header_bytes: bytes) -> None:
        length, payload, opcode, fin, masked = header
        self._left, self._frame_size, self._frame_offset = payload, payload, 0
        self._key = header_bytes[-4:] if masked else b""
        self._fin, self._control = fin, bool(opcode & CONTROL_BIT)
        if self._control:
            self._raw = None  # a control frame between fragments: the message's bytes are no longer contiguous
            return
        if opcode != Opcode.CONTINUATION or self._opcode is None:  # a new message (or a stray continuation)
            self._opcode, self._size = opcode, 0
            self._head.clear()
            self._tail.clear()
            self._raw = bytearray() if self._keep_raw else None
            whole = opcode == Opcode.TEXT and (not fin or payload <= _JSON_WHOLE_BYTES)
            self._head_limit = _JSON_WHOLE_BYTES if whole else _PREFIX_BYTES
        if self._raw is not None:
            if len(self._raw) + length + payload > self._keep_raw:
                self._raw = None
            else:
                self._raw += header_bytes

    def _take(self, data: bytes, position: int, count: int) -> None:
        """Keep what is needed of ``count`` payload bytes at ``data[position]``; unmask only those."""
        offset = self._frame_offset
        self._frame_offset += count
        self._size += count
        if self._raw is not None:
            self._raw += data[position:position + count]
        if self._size > self._head_limit > _PREFIX_BYTES:  # a fragmented JSON message grew too large to keep
            del self._head[_PREFIX_BYTES:]
            self._head_limit = _PREFIX_BYTES
        wanted = min(count, self._head_limit - len(self._head))
        if wanted > 0:
            self._head += self._unmasked(data, position, wanted, offset)
        if self._opcode == Opcode.TEXT:
            start = max(offset, self._frame_size - _JSON_TAIL_BYTES)  # only a frame's last bytes can be the tail
            if start < offset + count:
                self._tail += self._unmasked(data, position + start - offset, offset + count - start, start)
                del self._tail[:-_JSON_TAIL_BYTES]

    def _unmasked(self, data: bytes, position: int, count: int, offset: int) -> bytes:
        chunk = data[position:position + count]
        return unmask(chunk, self._key, offset) if self._key else bytes(chunk)

    def _end_frame(self, messages: list[KernelMessage]) -> None:
        self._left = None
        if self._control or not self._fin:
            return
        head, raw = bytes(self._head), (bytes(self._raw) if self._raw is not None else None)
        if self._opcode == Opcode.TEXT:
            messages.append(_read_json(head, bytes(self._tail), self._size, raw))
        elif self._opcode == Opcode.BINARY:
            messages.append(_read_v1(head, self._size, raw))
        else:
            messages.append(_unknown(self._size, raw))
        self._opcode, self._raw = None, None
        self._head.clear()
        self._tail.clear()
