"""The websocket wire (RFC 6455) written and read by hand: what a fake hub on a raw socket speaks, and what a test
feeds the relay's frame tracker. Client libraries hide frame boundaries, which is exactly what these tests look at.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from contextlib import suppress


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` (masking and unmasking are the same), fast enough for megabytes."""
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def frame(opcode: int, payload: bytes, masked: bool, fin: bool = True) -> bytes:
    """One frame as a peer sends it (the last of its message unless ``fin`` is False): a client's masked with a
    random key, a server's not."""
    size = len(payload)
    if size < 126:
        length = bytes((size,))
    elif size < 1 << 16:
        length = bytes((126,)) + size.to_bytes(2, "big")
    else:
        length = bytes((127,)) + size.to_bytes(8, "big")
    first = (0x80 if fin else 0) | opcode
    if not masked:
        return bytes((first,)) + length + payload
    key = os.urandom(4)
    return bytes((first, length[0] | 0x80)) + length[1:] + key + mask(payload, key)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame's opcode and (unmasked) payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if second & 0x80 else b""
    payload = await reader.readexactly(length)
    return first & 0x0F, mask(payload, key) if key else payload


async def answer_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A fake hub's websocket after its handshake: read frames until the proxy's close frame, answer it as a server
    does, and hang up (or stop when the connection is gone). A hub that never answers a close keeps the IDE's
    client waiting out its own close timeout (aiohttp's: 10 s)."""
    try:
        with suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == 0x8:
                    writer.write(frame(0x8, payload, masked=False))
                    await writer.drain()
                    break
    finally:
        writer.close()


async def read_handshake_key(reader: asyncio.StreamReader) -> str:
    """A fake hub's side of a websocket handshake: read the request, return its Sec-WebSocket-Key."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:"))


def switching_protocols(headers: str) -> bytes:
    """A 101 answer with ``headers`` (CRLF-separated lines) added as they are, right or wrong."""
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + headers + "\r\n\r\n").encode()

