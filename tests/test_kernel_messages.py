"""Kernel messages read off raw websocket frames: both wire formats, however frames and reads cut them, never a
field taken from user content, and a large message costs only what is kept of it. Also frames.py, their reader."""

from __future__ import annotations

import json
import operator
import os
import tracemalloc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1

from jupyter_dev_proxy.ws_frames import read_frame_header, unmask
from jupyter_dev_proxy.kernel_messages import KernelMessage, MessageReader
from tests.kit.frames import frame as _frame
from tests.kit.kernel import encode_v1, request

_TEXT, _BINARY, _CONTINUATION, _PING = 0x1, 0x2, 0x0, 0x9


def _mask(payload: bytes, key: bytes) -> bytes:
    return bytes(map(operator.xor, payload, cycle(key)))


def _fragmented(opcode: int, payload: bytes, masked: bool, cuts: Sequence[int] = (), pings: bool = False) -> bytes:
    """``payload`` as one message cut into fragments at ``cuts``, with a ping between fragments when ``pings``."""
    edges = [0, *sorted({c for c in cuts if 0 < c < len(payload)}), len(payload)]
    wire = b""
    for index, (start, end) in enumerate(zip(edges, edges[1:])):
        if index and pings:
            wire += _frame(_PING, b"ping", masked)
        wire += _frame(opcode if index == 0 else _CONTINUATION, payload[start:end], masked, fin=end == len(payload))
    return wire


def _feed_in_pieces(reader: MessageReader, wire: bytes, cuts: list[int]) -> list[KernelMessage]:
    messages, position = [], 0
    for cut in sorted({c for c in cuts if 0 < c < len(wire)} | {len(wire)}):
        messages += reader.feed(wire[position:cut])
        position = cut
    return messages


@dataclass(frozen=True)
class _Sent:
    """A kernel message as built for a test, and what reading it must give."""

    message: dict[str, Any]
    channel: str

    @property
    def header(self) -> dict[str, Any]:
        return self.message["header"]

    def v1(self) -> bytes:
        return encode_v1(self.channel, self.message)

    def legacy_json(self) -> bytes:
        """jupyter_server's order: header first (and msg_id, msg_type copied up), channel last."""
        m = self.message
        return json.dumps({"header": m["header"], "msg_id": m["header"]["msg_id"], "msg_type": m["header"]["msg_type"],
                           "parent_header": m["parent_header"], "metadata": m["metadata"], "content": m["content"],
                           "buffers": [], "channel": self.channel}).encode()

    def expected(self, size: int, raw: bytes | None = None) -> KernelMessage:
        parent = self.message["parent_header"]
        status = self.channel == "iopub" and self.header["msg_type"] == "status"
        return KernelMessage(self.channel, self.header["msg_type"], self.header["msg_id"], parent.get("msg_id", ""),
                             parent.get("msg_type", ""), size, raw,
                             self.message["content"]["execution_state"] if status else "")


_SESSION = Session(username="ide")


def _sent(channel: str, msg_type: str, content: dict[str, Any], reply_to: dict[str, Any] | None = None) -> _Sent:
    """A message made by jupyter_client itself, so its ids are the real ones."""
    message = _SESSION.msg(msg_type, content=content, parent=reply_to)
    return _Sent(json.loads(json.dumps(message, default=str)), channel)  # a copy, with its dates as text


_REQUEST = _sent("shell", "execute_request", {"code": "print('secret-output')", "silent": False})
_messages = st.builds(
    lambda kind, padding, state: {
        "request": lambda: _sent("shell", "execute_request", {"code": "x = 1  # " + "p" * padding}),
        "status": lambda: _sent("iopub", "status", {"execution_state": state}, _REQUEST.message),
        "stream": lambda: _sent("iopub", "stream", {"name": "stdout", "text": "s" * padding}, _REQUEST.message),
        "reply": lambda: _sent("shell", "execute_reply", {"status": "ok", "pad": "r" * padding}, _REQUEST.message),
        "control": lambda: _sent("control", "interrupt_request", {}),
    }[kind](),
    st.sampled_from(["request", "status", "stream", "reply", "control"]),
    st.sampled_from([0, 50, 200, 65_600, 70_000, 140_000]),
    st.sampled_from(["busy", "idle", "starting"]),
)


@settings(max_examples=150, deadline=None)
@given(sent=st.lists(st.tuples(_messages, st.booleans(), st.lists(st.integers(0, 150_000), max_size=4),
                               st.booleans()), min_size=1, max_size=4),
       masked=st.booleans(), cuts=st.lists(st.integers(0, 600_000), max_size=20),
       keep_raw=st.sampled_from([0, 1_000, 80_000]))
def test_messages_are_read_whole_however_frames_and_reads_cut_them(
        sent: list[tuple[_Sent, bool, list[int], bool]], masked: bool, cuts: list[int], keep_raw: int) -> None:
    wire, expected = b"", []
    for message, binary, fragment_cuts, pings in sent:
        payload = message.v1() if binary else message.legacy_json()
        frames = _fragmented(_BINARY if binary else _TEXT, payload, masked, fragment_cuts, pings)
        wire += frames
        interleaved = pings and any(0 < c < len(payload) for c in fragment_cuts)
        raw = frames if len(frames) <= keep_raw and not interleaved else None
        expected.append(message.expected(len(payload), raw))
        if pings:
            wire += _frame(_PING, b"between messages", masked)
    assert _feed_in_pieces(MessageReader(keep_raw), wire, cuts) == expected


@pytest.mark.parametrize("masked", [False, True], ids=["hub-unmasked", "ide-masked"])
@pytest.mark.parametrize("binary", [True, False], ids=["v1", "legacy-json"])
def test_a_message_fed_one_byte_at_a_time_is_read(masked: bool, binary: bool) -> None:
    status = _sent("iopub", "status", {"execution_state": "idle"}, _REQUEST.message)
    payload = status.v1() if binary else status.legacy_json()
    wire = _fragmented(_BINARY if binary else _TEXT, payload, masked, [3, 40], pings=True)
    reader, messages = MessageReader(), []
    for index in range(len(wire)):
        messages += reader.feed(wire[index:index + 1])
    assert messages == [status.expected(len(payload))]
    assert messages[0].exec_state == "idle" and messages[0].parent_msg_id == _REQUEST.header["msg_id"]


def test_jupyter_servers_own_v1_encoding_is_read_with_its_buffers() -> None:
    reply = _sent("shell", "comm_msg", {"data": {}}, _REQUEST.message)
    packed = [json.dumps(reply.message[part]).encode() for part in ("header", "parent_header", "metadata", "content")]
    payload = serialize_msg_to_ws_v1([*packed, b"buffer-one", b"buffer-two"], "shell")
    assert MessageReader().feed(_frame(_BINARY, payload, masked=False)) == [reply.expected(len(payload))]


def test_ids_made_by_jupyter_clients_pass_the_sanitising_unchanged() -> None:
    kernel_client_request = request("kernel_info_request", {}, str(uuid.uuid4()))
    for message in (_REQUEST.message, kernel_client_request):
        read, = MessageReader().feed(_frame(_BINARY, encode_v1("shell", message), masked=True))
        assert (read.msg_id, read.msg_type) == (message["header"]["msg_id"], message["header"]["msg_type"])
    assert "_" in _REQUEST.header["msg_id"] and "-" in _REQUEST.header["msg_id"]  # <session uuid>_<pid>_<n>


@pytest.mark.parametrize("bad", ["status\ntrace hub → IDE kernel forged", "a" * 101, "idle state", "é", 7, None])
def test_values_that_could_forge_a_log_line_are_replaced(bad: object) -> None:
    message = _sent("iopub", "status", {"execution_state": bad}, _REQUEST.message).message
    message["header"]["msg_type"] = message["header"]["msg_id"] = message["parent_header"]["msg_id"] = bad
    read, = MessageReader().feed(_frame(_BINARY, encode_v1("iopub\n", message), masked=False))
    assert read.channel == "?"
    missing = bad is None
    assert (read.msg_type, read.msg_id, read.parent_msg_id) == ("?", "?", "" if missing else "?")


def test_a_data_message_that_is_not_a_kernel_message_is_counted_as_unknown() -> None:
    reader = MessageReader()
    read = reader.feed(_frame(_TEXT, b"hello", masked=True) + _frame(_BINARY, b"\x01" * 20, masked=False))
    assert [(m.channel, m.msg_type, m.msg_id, m.parent_msg_id, m.size) for m in read] == [
        ("?", "?", "?", "", 5), ("?", "?", "?", "", 20)]


_v1_tables = st.builds(
    lambda count, offsets, rest: count.to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    + rest,
    st.integers(0, 80), st.lists(st.integers(0, 400), max_size=8), st.binary(max_size=300))


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.tuples(st.sampled_from([_TEXT, _BINARY]), st.one_of(st.binary(max_size=300), _v1_tables)),
                         min_size=1, max_size=6),
       masked=st.booleans(), keep_raw=st.sampled_from([0, 100, 80_000]))
def test_any_frame_is_read_the_same_whole_in_one_read_or_byte_by_byte(
        payloads: list[tuple[int, bytes]], masked: bool, keep_raw: int) -> None:
    """A whole frame in one read takes the reader's short way (it stops at a part count no kernel message can
    have); frames cut by reads take the long one: both give the same messages, malformed ones included."""
    wire = b"".join(_frame(opcode, payload, masked) for opcode, payload in payloads)
    whole = MessageReader(keep_raw).feed(wire)
    by_byte = _feed_in_pieces(MessageReader(keep_raw), wire, list(range(len(wire))))
    assert whole == by_byte and len(whole) == len(payloads)


def _large_display_data(size: int) -> tuple[_Sent, dict[str, Any]]:
    """Review #12's reproduction: user output that holds a ``channel`` key, and a ``header`` of its own."""
    user_data = {"channel": "xoxb-SLACK-BOT-TOKEN-from-the-users-output", "rows": "x" * size,
                 "header": {"msg_type": "forged_type", "msg_id": "forged-id"}}
    sent = _sent("iopub", "display_data", {"data": {"application/json": user_data}}, _REQUEST.message)
    return sent, user_data


@pytest.mark.parametrize("masked", [False, True], ids=["hub-unmasked", "ide-masked"])
@pytest.mark.parametrize("fragments", [[], [100, 70_000, 1_100_000]], ids=["one-frame", "fragmented"])
def test_a_large_json_message_takes_no_field_from_its_content(masked: bool, fragments: list[int]) -> None:
    sent, _ = _large_display_data(1_200_000)
    payload = sent.legacy_json()
    wire = _fragmented(_TEXT, payload, masked, fragments, pings=True)
    assert _feed_in_pieces(MessageReader(), wire, list(range(0, len(wire), 65_536))) == [sent.expected(len(payload))]


def test_a_large_json_message_with_its_header_after_the_content_is_unknown_not_forged() -> None:
    """JupyterLab writes content before header: past the kept first bytes, the header cannot be found."""
    sent, _ = _large_display_data(1_200_000)
    m = sent.message
    payload = json.dumps({"buffers": [], "content": m["content"], "header": m["header"], "metadata": {},
                          "parent_header": m["parent_header"], "channel": "iopub"}).encode()
    read, = MessageReader().feed(_frame(_TEXT, payload, masked=False))
    assert (read.channel, read.msg_type, read.msg_id, read.parent_msg_id) == ("iopub", "?", "?", "")


def test_a_json_message_in_any_key_order_is_read_whole_up_to_a_mebibyte() -> None:
    sent, _ = _large_display_data(200_000)
    m = sent.message
    payload = json.dumps({"channel": "iopub", "content": m["content"], "parent_header": m["parent_header"],
                          "metadata": {}, "header": m["header"]}).encode()
    assert MessageReader().feed(_frame(_TEXT, payload, masked=True)) == [sent.expected(len(payload))]


def test_a_20_mb_masked_message_keeps_only_its_first_and_last_bytes() -> None:
    """Only what is read is kept and unmasked: memory stays flat (and, measured by hand, it takes milliseconds)."""
    sent, _ = _large_display_data(0)
    start, end = sent.legacy_json().split(b'"rows": ""')
    start += b'"rows": "' + b" " * (-(len(start) + 9) % 4)  # so that the filler starts on a mask boundary
    end = b'"' + end
    filler = 20_000_000 // 4
    key = os.urandom(4)
    payload_size = len(start) + 4 * filler + len(end)
    head = _frame(_TEXT, b"\0" * 200_000, masked=True)[:2] + payload_size.to_bytes(8, "big") + key
    wire = head + _mask(start, key) + _mask(b"xxxx", key) * filler + _mask(end, key)
    chunks = [wire[i:i + 65_536] for i in range(0, len(wire), 65_536)]
    reader = MessageReader()
    tracemalloc.start()
    try:
        messages = [m for chunk in chunks for m in reader.feed(chunk)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert messages == [sent.expected(payload_size)]
    # The first 64 KiB and last 4 KiB, plus the unmasking of one read (a few copies of 64 KiB); not 1 MiB, nor 20 MB.
    assert peak < 512 * 1024


@pytest.mark.parametrize("size, length_bytes", [(0, 0), (125, 0), (126, 2), (65_535, 2), (65_536, 8)])
@pytest.mark.parametrize("masked", [False, True])
def test_frame_headers_of_every_length_form_are_read_once_whole(size: int, length_bytes: int, masked: bool) -> None:
    frame = _frame(_BINARY, b"\0" * size, masked, fin=False)
    header_size = 2 + length_bytes + (4 if masked else 0)
    assert read_frame_header(frame) == (header_size, size, _BINARY, False, masked)
    assert read_frame_header(b"??" + frame[:header_size], 2) == read_frame_header(frame)
    assert read_frame_header(frame[:header_size - 1]) is None


@pytest.mark.parametrize("phase", [0, 1, 2, 3, 6])
def test_unmasking_from_any_payload_offset_matches_a_byte_by_byte_xor(phase: int) -> None:
    payload, key = os.urandom(1001), os.urandom(4)
    assert unmask(_mask(payload, key)[phase:], key, phase) == payload[phase:]
    assert unmask(b"", key, phase) == b""


def test_raw_is_kept_only_for_small_messages_not_split_by_a_control_frame() -> None:
    small = _fragmented(_BINARY, _REQUEST.v1(), masked=True, cuts=[10])
    split = _fragmented(_BINARY, _REQUEST.v1(), masked=True, cuts=[10], pings=True)
    reader = MessageReader(keep_raw=len(small))
    assert [m.raw for m in reader.feed(small + split + small + b"\x81")] == [small, None, small]
    assert MessageReader(keep_raw=len(small) - 1).feed(small)[0].raw is None
    assert MessageReader().feed(small)[0].raw is None
