"""Kernel messages as an IDE sends and reads them, in either wire format jupyter_server offers; bench/ uses the
same encoder and decoder, so a benchmark and a test cannot disagree on the format.

``v1.kernel.websocket.jupyter.org``: binary frames, ``[n][n offsets][channel][header][parent][meta][content]
[buffers...]`` with little-endian uint64 offsets. Legacy (no subprotocol): one JSON text frame per message.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp

from jupyter_dev_proxy import timeouts

KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
_PARTS = ("header", "parent_header", "metadata", "content")


def encode_v1(channel: str, message: dict[str, Any]) -> bytes:
    """One v1 binary frame (no buffers) for ``message`` on ``channel``."""
    parts = [json.dumps(message[k]).encode() for k in _PARTS]
    channel_bytes = channel.encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(channel_bytes))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + channel_bytes + b"".join(parts)


def decode_v1(frame: bytes) -> dict[str, Any]:
    """A v1 binary frame back into a message dict, with its ``channel`` and ``buffers``."""
    count = int.from_bytes(frame[:8], "little")
    offsets = [int.from_bytes(frame[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
    pieces = [frame[offsets[i]:offsets[i + 1]] for i in range(count - 1)]  # the last offset is the frame's end
    message: dict[str, Any] = {k: json.loads(p) for k, p in zip(_PARTS, pieces[1:5])}
    message["channel"] = pieces[0].decode()
    message["buffers"] = pieces[5:]
    return message


def request(msg_type: str, content: dict[str, Any], session: str, username: str = "ide") -> dict[str, Any]:
    """A new shell-channel request with a fresh msg_id."""
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session, "username": username,
                   "version": "5.3", "date": "2026-11-22T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "content": content, "buffers": [], "channel": "shell",
    }


def execute_request(code: str, session: str, username: str = "ide") -> dict[str, Any]:
    """An execute_request for ``code`` as JupyterLab sends it (not silent, no stdin, stop on error)."""
    return request("execute_request", {"code": code, "silent": False, "store_history": False,
                                       "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                   session, username)


class KernelChannel:
    """One open kernel websocket; ``execute`` runs code and collects the replies to it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.binary = ws.protocol == KERNEL_PROTOCOL

    async def send(self, message: dict[str, Any]) -> None:
        if self.binary:
            await self.ws.send_bytes(encode_v1(message["channel"], message))
        else:
            await self.ws.send_str(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        frame = await self.ws.receive()
        if frame.type is aiohttp.WSMsgType.BINARY:
            assert self.binary, "a binary frame on the legacy JSON protocol"
            return decode_v1(frame.data)
        assert frame.type is aiohttp.WSMsgType.TEXT, f"unexpected frame {frame!r}"
        assert not self.binary, "a text frame on the binary v1 protocol"
        return json.loads(frame.data)

    async def start_execute(self, code: str) -> str:
        message = execute_request(code, self.session_id)
        await self.send(message)
        return str(message["header"]["msg_id"])

    async def until(self, msg_id: str, msg_type: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Every message answering ``msg_id`` up to and including the first of type ``msg_type``: a test waits
        for what the kernel says it is doing (``execute_input``: it is running the cell) instead of sleeping."""
        seen: list[dict[str, Any]] = []
        async with timeouts.timeout(timeout):
            while not seen or seen[-1]["header"]["msg_type"] != msg_type:
                message = await self.receive()
                if message["parent_header"].get("msg_id") == msg_id:
                    seen.append(message)
        return seen

    async def replies_to(self, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Every message answering ``msg_id`` until its execute_reply and the kernel's idle status."""
        replies: list[dict[str, Any]] = []
        got_reply = got_idle = False
        async with timeouts.timeout(timeout):
            while not (got_reply and got_idle):
                message = await self.receive()
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                replies.append(message)
                kind = message["header"]["msg_type"]
                got_reply = got_reply or kind == "execute_reply"
                got_idle = got_idle or (kind == "status" and message["content"]["execution_state"] == "idle")
        return replies

    async def execute(self, code: str) -> list[dict[str, Any]]:
        return await self.replies_to(await self.start_execute(code))


def result_text(replies: list[dict[str, Any]]) -> str | None:
    for message in replies:
        if message["header"]["msg_type"] == "execute_result":
            return str(message["content"]["data"]["text/plain"])
    return None


def reply_content(replies: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m["content"] for m in replies if m["header"]["msg_type"] == "execute_reply")
