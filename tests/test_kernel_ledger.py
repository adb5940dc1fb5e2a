"""The kernel ledger against what a real session does: a kernel restarted with requests unanswered, a widget's
comm_msg crossing the kernel's output at a break, and the memory its copies of safe requests may take."""
from __future__ import annotations

import json

from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import serialize_binary_message

from jupyter_dev_proxy.kernel_ledger import KernelLedger
from jupyter_dev_proxy.kernel_messages import MessageReader
from jupyter_dev_proxy.ws_relay import RelayState
from tests.kit.frames import frame, mask
from tests.kit.kernel import execute_request
from tests.test_relay_fragments import frames_of, make_relay, until


def hub_message(msg_type: str, parent: dict, content: dict, channel: str) -> bytes:
    body = {"header": {"msg_id": "h-" + msg_type, "msg_type": msg_type, "session": "k", "username": "k",
                       "version": "5.3", "date": "2026-12-02T00:00:00Z"},
            "parent_header": parent, "metadata": {}, "content": content, "channel": channel}
    return frame(0x1, json.dumps(body).encode(), masked=False)


def ide_text(payload: bytes) -> bytes:
    return frame(0x1, payload, masked=True)


def probe_id(written: bytes) -> str:
    b1 = written[1] & 0x7F
    head = 2 + (2 if b1 == 126 else 8 if b1 == 127 else 0)
    n = b1 if b1 < 126 else int.from_bytes(written[2:head], "big")
    key = written[head:head + 4]
    return json.loads(mask(written[head + 4:head + 4 + n], key))["header"]["msg_id"]


async def test_a_request_the_restarted_kernel_never_answers_does_not_close_the_websocket_at_a_later_break() -> None:
    relay, old, news = make_relay(KernelLedger(binary=False))
    doomed = execute_request("import os; os.kill(os.getpid(), 9)", "s1")
    relay.feed_data(ide_text(json.dumps(doomed).encode()))
    parent = doomed["header"]
    # The kernel died on it; jupyter_server restarts it and says so; no execute_reply will ever come.
    old.data_received(hub_message("status", {}, {"execution_state": "restarting"}, "iopub"))
    old.data_received(hub_message("status", {}, {"execution_state": "starting"}, "iopub"))
    ok = execute_request("1 + 1", "s1")
    relay.feed_data(ide_text(json.dumps(ok).encode()))
    old.data_received(hub_message("execute_reply", ok["header"], {"status": "ok"}, "shell"))
    # Much later, the link breaks while nothing is in flight.
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    await until(lambda: relay.state is not RelayState.RECONNECTING)
    written = b"".join(news[0].transport.written)  # type: ignore[union-attr]
    ide_got = b"".join(relay._ide_transport.written)  # type: ignore[attr-defined]
    state = relay.state
    relay.close()
    assert written == b"", "a probe: the proxy still thinks the dead kernel's execute is in flight"
    assert not [op for op, _, _ in frames_of(ide_got) if op == 0x8] and state is RelayState.OPEN, parent


async def test_a_comm_msg_crossing_the_kernels_output_at_the_break_is_not_lost_silently() -> None:
    """Review #6 for a message without a reply: a widget's comm_msg written just before the break, while a cell
    prints progress (tqdm): the hub's output, sent before it read the comm_msg, crosses it in flight."""
    relay, old, news = make_relay(KernelLedger(binary=False))
    running = execute_request("for i in tqdm(range(10**9)): pass", "s1")
    relay.feed_data(ide_text(json.dumps(running).encode()))
    comm = {"header": {"msg_id": "c1", "msg_type": "comm_msg", "session": "s1", "username": "ide", "version": "5.3",
                       "date": "2026-12-02T00:00:00Z"}, "parent_header": {}, "metadata": {},
            "content": {"comm_id": "w1", "data": {"method": "update", "state": {"value": 42}}}, "channel": "shell"}
    relay.feed_data(ide_text(json.dumps(comm).encode()))  # written into the connection that is about to die
    old.data_received(hub_message("stream", running["header"], {"name": "stderr", "text": "12%"}, "iopub"))
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    await until(lambda: relay.state is not RelayState.RECONNECTING)
    sent_again = b"".join(news[0].transport.written) if news else b""  # type: ignore[union-attr]
    ide_got = b"".join(relay._ide_transport.written)  # type: ignore[attr-defined]
    relay.close()
    assert b"\x88" in ide_got or b"c1" in mask_free(sent_again), "the comm_msg vanished and the IDE was not told"


def test_a_frame_that_is_not_a_kernel_message_is_not_followed() -> None:
    """The server gives no kernel a frame it cannot read as a kernel message, so losing one at a break changes
    nothing: the IDE's websocket is not closed for it, and the hub's messages need not be read for it."""
    ledger = KernelLedger(binary=True)
    for payload in (b"not a kernel message", bytes(range(256)) * 4):
        message, = MessageReader(keep_raw=1_000).feed(frame(0x2, payload, masked=True))
        ledger.sent(message, ledger.connection, 0.0)
    assert not ledger.listening
    assert ledger.broke(ledger.connection).lost == []


def test_a_comm_msg_with_buffers_on_the_legacy_protocol_lost_at_a_break_is_told() -> None:
    """On the legacy protocol a message with binary buffers (a FileUpload widget's file, a canvas's pixels) is a
    binary frame in jupyter_server's own layout, which the server reads and gives the kernel: written just before
    a break it may be lost, and the IDE must be told rather than the widget wait forever."""
    session = Session()
    comm_msg = {**session.msg("comm_msg", {"comm_id": "c1", "data": {"method": "update"}}), "channel": "shell",
                "buffers": [b"the uploaded file"]}
    ledger = KernelLedger(binary=False)
    message, = MessageReader(keep_raw=1_000).feed(frame(0x2, serialize_binary_message(comm_msg), masked=True))
    ledger.sent(message, ledger.connection, 0.0)
    assert ledger.broke(ledger.connection).lost, "the comm_msg was lost at the break and the IDE was not told"


def mask_free(stream: bytes) -> bytes:
    return b"".join(payload for _, _, payload in frames_of(stream)) if stream else b""


async def test_unanswered_safe_requests_keep_little_memory() -> None:
    """1000 inspect_requests of a 60 KB cell, unanswered while a long cell runs: the ledger's copies stay within
    their budget (the attack review measured 67 MiB kept)."""
    ledger = KernelLedger(binary=False)
    relay, old, news = make_relay(ledger)
    code = "x = 1\n" * 10_000
    for i in range(1000):
        message = {"header": {"msg_id": f"i{i}", "msg_type": "inspect_request", "session": "s1", "username": "ide",
                              "version": "5.3", "date": "2026-12-02T00:00:00Z"}, "parent_header": {}, "metadata": {},
                   "content": {"code": code, "cursor_pos": i, "detail_level": 0}, "channel": "shell"}
        relay.feed_data(ide_text(json.dumps(message).encode()))
    relay.close()
    assert ledger.pending == 1000 and ledger.kept_bytes <= 4 * 2 ** 20
