"""Messages sent in fragments across a break: replayed from their first fragment, and nothing of the proxy's own
in the middle of one, in either direction (found by the attack review)."""
from __future__ import annotations

import asyncio
import json
import os
from types import SimpleNamespace

import pytest

from jupyter_dev_proxy.kernel_ledger import KernelLedger
from jupyter_dev_proxy.ws_handshake import HubConnection
from jupyter_dev_proxy.ws_relay import HELD_LIMIT_BYTES, Relay, RelayState
from jupyter_dev_proxy.timeouts import timeout
from tests.kit.frames import frame, mask
from tests.kit.kernel import execute_request
from tests.kit.kernel import request as request_message


class T:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
    def write(self, d: bytes) -> None: self.written.append(bytes(d))
    def is_closing(self) -> bool: return self.closing
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: self.closing = True


def raw_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    assert n < 126
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | n)) + key + mask(payload, key)


def frames_of(stream: bytes) -> list[tuple[int, bool, bytes]]:
    out, pos = [], 0
    while pos < len(stream):
        b0, b1 = stream[pos], stream[pos + 1]
        n, h = b1 & 0x7F, 2
        if n == 126:
            n, h = int.from_bytes(stream[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            n, h = int.from_bytes(stream[pos + 2:pos + 10], "big"), 10
        key = stream[pos + h:pos + h + 4]
        out.append((b0 & 0x0F, bool(b0 & 0x80), mask(stream[pos + h + 4:pos + h + 4 + n], key)))
        pos += h + 4 + n
    return out


def check_fragmentation(stream: bytes) -> str | None:
    """RFC 6455 5.4: a continuation must follow a non-final data frame; no data frame inside a fragmented message."""
    inside = False
    for op, fin, _ in frames_of(stream):
        if op & 0x8:
            continue
        if op == 0 and not inside:
            return "a continuation frame with no message started"
        if op != 0 and inside:
            return "a new data frame inside a fragmented message"
        inside = not fin
    return None


def make_relay(ledger: KernelLedger | None):
    request = SimpleNamespace(transport=T(), protocol=SimpleNamespace(writing_paused=False))
    old = HubConnection()
    old.connection_made(T())  # type: ignore[arg-type]
    news: list[HubConnection] = []

    async def reconnect() -> HubConnection:
        new = HubConnection()
        new.connection_made(T())  # type: ignore[arg-type]
        news.append(new)
        return new
    relay = Relay(request, None, old, reconnect, reconnect_seconds=10, label="k",  # type: ignore[arg-type]
                  ledger=ledger, session="s1")
    old.attach(relay)
    return relay, old, news


async def until(cond, seconds=5.0):
    async with timeout(seconds):
        while not cond():
            await asyncio.sleep(0.01)


async def test_a_fragmented_ide_message_cut_between_fragments_reaches_the_new_hub_connection_well_formed() -> None:
    relay, old, news = make_relay(KernelLedger(binary=False))
    relay.feed_data(raw_frame(0x1, b'{"header": {"msg_id": "a1", "msg_type": "comm', fin=False))
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    await until(lambda: relay.state is RelayState.OPEN)
    relay.feed_data(raw_frame(0x0, b'_msg"}, "parent_header": {}, "content": {}, "channel": "shell"}', fin=True))
    stream = b"".join(news[0].transport.written)  # type: ignore[union-attr]
    relay.close()
    assert check_fragmentation(stream) is None, (check_fragmentation(stream), frames_of(stream))


async def test_the_probe_is_not_written_inside_a_fragmented_ide_message() -> None:
    relay, old, news = make_relay(KernelLedger(binary=False))
    relay.feed_data(raw_frame(0x1, json.dumps(execute_request("1", "s1")).encode()[:0] or b"x", fin=True)
                    if False else b"")
    msg = json.dumps(execute_request("1+1", "s1")).encode()
    key = os.urandom(4)
    relay.feed_data(bytes((0x81, 0xFE)) + len(msg).to_bytes(2, "big") + key + mask(msg, key) if len(msg) >= 126
                    else raw_frame(0x1, msg, True))
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    assert relay.state is RelayState.RECONNECTING
    relay.feed_data(raw_frame(0x1, b'{"header": {"msg_id": "b2", "msg_type": "comm', fin=False))  # held
    await until(lambda: relay.state is not RelayState.RECONNECTING)
    relay.feed_data(raw_frame(0x0, b'_msg"}, "parent_header": {}, "content": {}, "channel": "shell"}', fin=True))
    stream = b"".join(news[0].transport.written)  # type: ignore[union-attr]
    relay.close()
    assert check_fragmentation(stream) is None, (check_fragmentation(stream), [f[:2] for f in frames_of(stream)])


def unmasked_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    return bytes(((0x80 if fin else 0) | opcode, len(payload))) + payload


def frames_unmasked(stream: bytes) -> list[tuple[int, bool]]:
    out, pos = [], 0
    while pos < len(stream):
        b0, n = stream[pos], stream[pos + 1] & 0x7F
        out.append((b0 & 0x0F, bool(b0 & 0x80)))
        pos += 2 + n
    return out


async def test_a_hub_message_cut_between_fragments_does_not_leave_the_ide_inside_it() -> None:
    relay, old, news = make_relay(KernelLedger(binary=False))
    old.data_received(unmasked_frame(0x1, b'{"header": {"msg_type": "stream"', fin=False))
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    await until(lambda: relay.state is not RelayState.RECONNECTING)
    if news:  # reconnected: what comes on the new connection must not land inside the IDE's message
        news[0].data_received(unmasked_frame(0x1, b'{"a new": "message"}', fin=True))
    ide = b"".join(relay._ide_transport.written)  # type: ignore[attr-defined]
    relay.close()
    kinds = frames_unmasked(ide)
    inside = False
    for op, fin in kinds:
        if op & 0x8:
            continue
        assert not (inside and op != 0), ("a new data frame inside the IDE's fragmented message", kinds)
        inside = not fin


async def test_past_the_held_bytes_limit_the_ide_is_closed_once_and_it_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review S5: once the IDE has sent more than the proxy holds for an absent hub, its websocket is closed
    (1011) and that is said once, however much more it sends before its side closes."""
    request = SimpleNamespace(transport=T(), protocol=SimpleNamespace(writing_paused=False))
    old = HubConnection()
    old.connection_made(T())  # type: ignore[arg-type]
    hub_never_answers = asyncio.Event()

    async def reconnect() -> HubConnection:
        await hub_never_answers.wait()
        raise AssertionError("unreachable")
    relay = Relay(request, None, old, reconnect, reconnect_seconds=30, label="k",  # type: ignore[arg-type]
                  ledger=None, session="s1")
    old.attach(relay)
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    chunk = frame(0x2, b"x" * 1024 * 1024, masked=True)
    for _ in range(HELD_LIMIT_BYTES // len(chunk) + 8):
        relay.feed_data(chunk)
    to_ide = b"".join(request.transport.written)  # the proxy's own frames, unmasked: only its close
    assert to_ide[0] == 0x88 and int.from_bytes(to_ide[2:4], "big") == 1011 and len(to_ide) == 2 + to_ide[1]
    said = [r for r in caplog.records if "while the hub was away; closing it" in r.getMessage()]
    assert len(said) == 1
    relay.close()


async def test_a_request_held_while_the_hub_was_away_reaches_the_next_connection_when_the_first_new_one_dies(
        ) -> None:
    """Review S9: the first new connection is reset as soon as it is used: a request the IDE sent during the outage
    (written to that dead connection) is sent again on the connection after it (a kernel channel always has its
    ledger; a safe request goes again, anything else would be told to the IDE)."""
    request = SimpleNamespace(transport=T(), protocol=SimpleNamespace(writing_paused=False))
    old = HubConnection()
    old.connection_made(T())  # type: ignore[arg-type]
    news: list[HubConnection] = []

    def reset(connection: HubConnection) -> None:
        connection.transport.closing = True  # type: ignore[union-attr]
        connection.connection_lost(ConnectionResetError())

    async def reconnect() -> HubConnection:
        new = HubConnection()
        new.connection_made(T())  # type: ignore[arg-type]
        news.append(new)
        if len(news) == 1:
            asyncio.get_running_loop().call_soon(reset, new)  # dies right after the switch
        return new
    relay = Relay(request, None, old, reconnect, reconnect_seconds=30, label="k",  # type: ignore[arg-type]
                  ledger=KernelLedger(binary=False), session="s1")
    old.attach(relay)
    reset(old)
    asked = {**request_message("kernel_info_request", {}, "s1"), "channel": "shell"}
    relay.feed_data(frame(0x1, json.dumps(asked).encode(), masked=True))
    await until(lambda: len(news) >= 2 and relay.state is RelayState.OPEN, 10)
    sent_again = [json.loads(payload) for _, _, payload in frames_of(b"".join(news[1].transport.written))]  # type: ignore[union-attr]
    assert [m["header"]["msg_id"] for m in sent_again] == [asked["header"]["msg_id"]]
    assert not request.transport.written  # the IDE was not closed
    relay.close()
