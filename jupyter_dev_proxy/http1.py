"""HTTP/1 answer heads the proxy reads itself, off a raw connection: a company proxy's answer to CONNECT, the hub's
answer to a websocket handshake, the doctor's probe. One reader and one size limit for all three, as h11 has one
``maybe_extract_lines`` ("everything up to the first blank line") for every answer. Pure: bytes in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

# The longest head read (a status line and headers): what nginx allows a request's headers by default (4 x 8 KiB)
# twice over; a real answer to CONNECT or to a handshake is a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024


class HeadTooLong(ValueError):
    """More than MAX_HEAD_BYTES came without the blank line that ends a head."""


@dataclass(frozen=True)
class AnswerHead:
    status: int
    reason: str
    headers: CIMultiDict[str]


def take_head(buffer: bytearray) -> bytes | None:
    """The head at the start of ``buffer``, with its blank line, removed from it once it is whole; None until then."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HeadTooLong(f"no end of the head in {len(buffer)} bytes")
        return None
    head = bytes(buffer[:end + 4])
    del buffer[:end + 4]
    return head


def parse_answer_head(head: bytes) -> AnswerHead | None:
    """The status, reason and headers of an HTTP/1.x answer's head; None when it is not one."""
    status_line, *lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in filter(None, lines):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            return None
        headers.add(name.strip(), value.strip())
    return AnswerHead(int(code), reason.strip(), headers)
