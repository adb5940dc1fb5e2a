"""Kernel websockets that survive the hub side breaking: a real jupyter_server + ipykernel behind the link emulator
(bench/linkemu.py), whose connections the tests reset or hold; and a fake hub for what a real one cannot show (a
frame the IDE was sending, cut by the break)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import struct
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from yarl import URL

from bench.linkemu import LinkEmulator
from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.config import Settings, TokenKind, TokenSource
from jupyter_dev_proxy.demo import DemoServer
from jupyter_dev_proxy.timeouts import timeout
from jupyter_dev_proxy.ws_frames import SERVICE_RESTART, accept_key
from jupyter_dev_proxy.ws_handshake import HubConnection
from jupyter_dev_proxy.ws_relay import Relay, RelayState
from tests.kit.fakehubs import fake_hub
from tests.kit.frames import answer_until_closed, frame, read_frame, switching_protocols
from tests.kit.ide import new_notebook, start_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, decode_v1, encode_v1, reply_content, request
from tests.kit.settings import Proxy, make_settings

pytestmark = [pytest.mark.timeout(120), pytest.mark.waits]

StartProxy = Callable[[Settings], Awaitable[Proxy]]

# A cell that prints a numbered line every 0.5 s for 12 s: a break anywhere in it must lose no line.
COUNTING_CELL = "import time\nfor i in range(24):\n    print(f'line {i}', flush=True)\n    time.sleep(0.25)"
ALL_LINES = "".join(f"line {i}\n" for i in range(24))


@asynccontextmanager
async def _through_a_link(server: DemoServer, start_proxy: StartProxy,
                          **overrides: Any) -> AsyncIterator[tuple[LinkEmulator, Proxy]]:
    port = int(server.url.rsplit(":", 1)[1])
    async with LinkEmulator("127.0.0.1", port, delay=0.002) as link:
        proxy = await start_proxy(make_settings(f"https://127.0.0.1:{link.port}", server.ca_file, server.tls_name,
                                                hub_token=server.token, **overrides))
        yield link, proxy


@asynccontextmanager
async def _ide_facing(hub: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                      start_proxy: StartProxy, **overrides: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """An IDE's session through the proxy to the fake ``hub``, with no ready connections (the tests count the
    hub's connections themselves)."""
    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0, **overrides))
        async with proxy.session() as client:
            yield client


def _stream_text(replies: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in replies if m["header"]["msg_type"] == "stream")


async def _open_channel(client: aiohttp.ClientSession, ids: dict[str, str]) -> KernelChannel:
    ws = await client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                 protocols=(KERNEL_PROTOCOL,), max_msg_size=0)
    return KernelChannel(ws, ids["session"])


@pytest.mark.parametrize("fault", ["reset", "hold"])
async def test_a_client_that_never_reconnects_gets_every_line_through_a_break(
        jupyter_upstream: DemoServer, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    async with _through_a_link(jupyter_upstream, start_proxy) as (link, proxy):
        async with proxy.session() as client:
            ids = await start_session(client, await new_notebook(client))
            channel = await _open_channel(client, ids)
            counting = asyncio.ensure_future(channel.replies_to(await channel.start_execute(COUNTING_CELL), 90))
            await asyncio.sleep(1.6)  # between two lines
            if fault == "reset":
                link.reset_all()  # a hub proxy restart, an ingress reload, a VPN reconnect
                await asyncio.sleep(0.2)
                answer = await channel.start_execute("40 + 2")  # sent while the hub side is away: held
            else:
                link.hold(6)  # a link that goes silent for 6 s without a reset
                answer = await channel.start_execute("40 + 2")
            replies = await counting
            assert _stream_text(replies) == ALL_LINES
            assert reply_content(replies)["status"] == "ok"
            assert reply_content(await channel.replies_to(answer))["status"] == "ok"
            assert not channel.ws.closed
            if fault == "reset":  # the episode's summary comes once the new connection has lived 5 s
                await _until(lambda: any("reconnected to the hub after" in r.getMessage() for r in caplog.records))
            await channel.ws.close()
    broke = [r.getMessage() for r in caplog.records if "the connection to the hub broke" in r.getMessage()]
    recovered = [r.getMessage() for r in caplog.records if "reconnected to the hub after" in r.getMessage()]
    assert (len(broke), len(recovered)) == ((1, 1) if fault == "reset" else (0, 0))


async def test_a_kernel_deleted_while_the_hub_was_away_closes_the_ides_websocket(
        jupyter_upstream: DemoServer, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    async with _through_a_link(jupyter_upstream, start_proxy) as (link, proxy):
        async with proxy.session() as client:
            ids = await start_session(client, await new_notebook(client))
            channel = await _open_channel(client, ids)
            link.refuse_new(True)
            link.reset_all()
            await asyncio.to_thread(_delete_kernel_directly, jupyter_upstream, ids["kernel"])
            link.refuse_new(False)
            message = await channel.ws.receive(timeout=30)
            assert message.type is aiohttp.WSMsgType.CLOSE and channel.ws.close_code == 1011
    assert any("refused to reconnect it (404" in r.getMessage() for r in caplog.records)


def _delete_kernel_directly(server: DemoServer, kernel: str) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.check_hostname = False
    request = urllib.request.Request(f"{server.base_url}api/kernels/{kernel}", method="DELETE",
                                     headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        assert response.status == 204


async def test_when_the_hub_stays_away_a_client_that_reconnects_itself_keeps_working(
        jupyter_upstream: DemoServer, start_proxy: StartProxy) -> None:
    """What @jupyterlab/services does after a close: a new websocket with the same session id, to which
    jupyter_server replays what the kernel said meanwhile."""
    async with _through_a_link(jupyter_upstream, start_proxy, reconnect_seconds=2) as (link, proxy):
        async with proxy.session() as client:
            ids = await start_session(client, await new_notebook(client))
            channel = await _open_channel(client, ids)
            msg_id = await channel.start_execute(COUNTING_CELL)
            collecting = asyncio.ensure_future(_messages_until_closed(channel.ws))
            await asyncio.sleep(2)
            link.refuse_new(True)
            link.reset_all()
            first = await asyncio.wait_for(collecting, 30)
            assert channel.ws.close_code == SERVICE_RESTART  # the proxy gave up after 2 s: "reconnect"
            link.refuse_new(False)
            again = await _open_channel(client, ids)  # the same session id
            rest = await again.replies_to(msg_id, 90)
            await again.ws.close()
    assert _stream_text(first + rest) == ALL_LINES


async def _messages_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    return [decode_v1(frame.data) async for frame in ws if frame.type is aiohttp.WSMsgType.BINARY]


# -- a frame cut by the break is sent again whole ------------------------------------------------------------------------

async def test_the_frame_the_ide_was_sending_when_the_hub_broke_arrives_whole(start_proxy: StartProxy) -> None:
    received: list[tuple[int, str]] = []  # (connection, sha256 of each complete message it read)
    connections = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        writer.write(_upgrade((await reader.readuntil(b"\r\n\r\n")).decode()))
        if number == 1:
            await reader.readexactly(100_000)  # part of the IDE's frame, then the connection breaks
            writer.transport.abort()
            return
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8:
                break
            received.append((number, hashlib.sha256(payload).hexdigest()))
        writer.close()

    # Larger than the socket buffers between proxy and hub can hold (a few MiB each way), so that the frame is
    # still being written when the hub breaks, whichever event loop writes it.
    big, small = b"x" * 12_000_000, b"after the break"
    async with _ide_facing(hub, start_proxy) as client:
        ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
        await ws.send_bytes(big)
        await ws.send_bytes(small)
        await asyncio.sleep(1)
        await ws.close()
    # The hub saw each message once, whole, on the new connection.
    assert received == [(2, hashlib.sha256(big).hexdigest()), (2, hashlib.sha256(small).hexdigest())]


# -- faults the first version did not survive (review-2026-12 #2, #4, #5, #6, S7, S8; audit P3, P5, P6) ------------------

def _upgrade(head: str, protocol: str | None = None) -> bytes:
    """The fake hub's 101 to the handshake ``head`` (with ``protocol`` chosen)."""
    chosen = f"\r\nSec-WebSocket-Protocol: {protocol}" if protocol else ""
    return switching_protocols(f"Sec-WebSocket-Accept: {accept_key(_header(head, 'Sec-WebSocket-Key'))}{chosen}")


def _header(head: str, name: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                 if line.lower().startswith(name.lower() + ":")), "")


def _hub_frame(payload: bytes) -> bytes:
    """A binary frame as a server sends it (unmasked)."""
    return frame(0x2, payload, masked=False)


def _reply_to(request: dict[str, Any], msg_type: str, channel: str = "shell") -> bytes:
    message = {"header": {"msg_id": f"reply-{request['header']['msg_id']}", "msg_type": msg_type, "session": "k",
                          "username": "kernel", "version": "5.3", "date": "2026-12-02T00:00:00Z"},
               "parent_header": request["header"], "metadata": {}, "content": {"status": "ok"}}
    return _hub_frame(encode_v1(channel, message))


KernelAnswer = Callable[[int, dict[str, Any], asyncio.StreamWriter], bool]


def _kernel_hub(answer: KernelAnswer) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A fake hub speaking v1 that hands each message the IDE sends, with the number of its connection, to
    ``answer``; an answer of False breaks that connection (a reset)."""
    connections = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        writer.write(_upgrade((await reader.readuntil(b"\r\n\r\n")).decode(), KERNEL_PROTOCOL))
        while True:
            try:
                opcode, payload = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if opcode == 0x8:  # the IDE's close, relayed: answered as a server does
                writer.write(frame(0x8, payload, masked=False))
                writer.close()
                return
            if opcode != 0x2:
                return
            if not answer(number, decode_v1(payload), writer):
                writer.transport.abort()
                return
    return hub


async def _v1_channel(client: aiohttp.ClientSession) -> KernelChannel:
    ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1", protocols=(KERNEL_PROTOCOL,))
    return KernelChannel(ws, "s1")


async def test_a_hub_that_accepts_and_drops_every_reconnection_is_not_hammered(
        start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Review #2: every new connection is accepted (101) and dropped at once; the reconnection backs off across
    drops instead of starting over (3,379 handshakes in 3 s), and says so once."""
    connections = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(_upgrade((await reader.readuntil(b"\r\n\r\n")).decode()))
        await writer.drain()
        if connections == 1:
            await asyncio.sleep(0.3)
        writer.transport.abort()

    async with _ide_facing(hub, start_proxy, reconnect_seconds=60) as client:
        ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
        await asyncio.sleep(3.0)
        assert not ws.closed
        await ws.close()
    assert connections < 12, connections
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "kernel k1" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_a_reconnection_after_the_token_changed_carries_the_new_token(
        start_proxy: StartProxy, tmp_path: Path) -> None:
    """Review #4: the handshake's Authorization is read at each connection, not frozen at the first."""
    token_file = tmp_path / "token"
    token_file.write_text("old-token-0001\n")
    seen: list[str] = []
    drop_first = asyncio.Event()

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(_header(head, "Authorization"))
        if seen[-1] != "token " + token_file.read_text().strip():
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            writer.close()
            return
        writer.write(_upgrade(head))
        await writer.drain()
        if len(seen) == 1:
            await drop_first.wait()
            writer.transport.abort()
            return
        await answer_until_closed(reader, writer)

    async with fake_hub(hub) as port:
        settings = make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0, hub_token="old-token-0001",
                                 token_source=TokenSource(TokenKind.FILE, token_file))
        runner = ProxyRunner(settings)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy = Proxy(URL(f"http://127.0.0.1:{runner.addresses[0][1]}"), settings)
        async with proxy.session() as client:
            ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
            token_file.write_text("new-token-0002\n")
            assert runner.credential is not None and await runner.credential.reload("the test wrote a new token")
            drop_first.set()
            await _until(lambda: len(seen) >= 2)
            await asyncio.sleep(0.2)
            assert not ws.closed
            await ws.close()
        await runner.cleanup()
    assert seen[:2] == ["token old-token-0001", "token new-token-0002"]


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with timeout(seconds):
        while not condition():
            await asyncio.sleep(0.02)


class _FakeTransport:
    """A transport that records what is written, for driving a Relay by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def abort(self) -> None:
        self.closing = True


async def test_a_frame_the_ide_sends_in_the_same_instant_as_the_break_is_delivered() -> None:
    """Review #5: bytes the IDE sends between the hub's drop and the reconnection's first step are held, not
    overwritten when the reconnection starts."""
    request = SimpleNamespace(transport=_FakeTransport(), protocol=SimpleNamespace(writing_paused=False))
    old, new = HubConnection(), HubConnection()
    old.connection_made(_FakeTransport())  # type: ignore[arg-type]

    async def reconnect() -> HubConnection:
        new.connection_made(_FakeTransport())  # type: ignore[arg-type]
        return new
    relay = Relay(request, None, old, reconnect, reconnect_seconds=10, label="k")  # type: ignore[arg-type]
    old.attach(relay)
    second = frame(0x2, b"execute_request #2", masked=True)
    relay.feed_data(frame(0x2, b"execute_request #1", masked=True))
    old.transport.closing = True  # type: ignore[union-attr]
    old.connection_lost(ConnectionResetError())
    relay.feed_data(second)  # the same loop iteration as the drop
    await _until(lambda: relay.state is RelayState.OPEN)
    assert b"".join(new.transport.written) == second  # type: ignore[union-attr]
    relay.close()


async def test_a_safe_request_in_flight_at_the_break_is_sent_again_and_answered(start_proxy: StartProxy) -> None:
    """A kernel_info_request the first connection read but never answered is sent again on the next."""
    asked: list[tuple[int, str]] = []

    def answer(number: int, message: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        asked.append((number, message["header"]["msg_type"]))
        if number == 1:
            return False  # read, never answered: the answer was "lost" with the connection
        writer.write(_reply_to(message, "kernel_info_reply", message["channel"]))
        return True
    hub = _kernel_hub(answer)

    async with _ide_facing(hub, start_proxy) as client:
        channel = await _v1_channel(client)
        message = request("kernel_info_request", {}, "s1")
        message["channel"] = "control"
        await channel.send(message)
        reply = await asyncio.wait_for(channel.receive(), 10)
        assert reply["parent_header"]["msg_id"] == message["header"]["msg_id"]
        assert not channel.ws.closed
        await channel.ws.close()
    assert asked[:2] == [(1, "kernel_info_request"), (2, "kernel_info_request")]


async def test_an_execute_whose_reply_was_lost_with_the_connection_closes_the_ides_websocket(
        start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Review #6/S8: the first connection reads an execute_request and breaks before its reply reaches the IDE;
    the server never replays it. The proxy's probe is answered on the next connection, the execute is still
    unanswered: the IDE is told (1012) instead of leaving the cell running forever."""
    probes: list[str] = []

    def answer(number: int, message: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        if number == 1:
            return False
        if message["header"]["msg_type"] == "kernel_info_request":
            probes.append(message["header"]["msg_id"])
            writer.write(_reply_to(message, "kernel_info_reply"))
        return True
    hub = _kernel_hub(answer)

    async with _ide_facing(hub, start_proxy) as client:
        channel = await _v1_channel(client)
        await channel.start_execute("40 + 2")
        closing = await asyncio.wait_for(channel.ws.receive(), 10)
        while closing.type is aiohttp.WSMsgType.BINARY:  # the probe's answer reaches the IDE too
            closing = await asyncio.wait_for(channel.ws.receive(), 10)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert channel.ws.close_code == SERVICE_RESTART
    assert len(probes) == 1 and probes[0].startswith("jupyter-dev-proxy-probe-")
    assert any("execute_request the IDE sent was lost" in r.getMessage() for r in caplog.records)


async def test_an_execute_still_running_across_a_break_is_not_given_up(start_proxy: StartProxy) -> None:
    """The probe waits behind the execute on the shell channel: its reply, sent after the break, arrives before
    the probe's, and the IDE's websocket stays open."""
    running: dict[str, Any] = {}

    def answer(number: int, message: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        if number == 1:  # the execute starts running, then the link breaks
            running["execute"] = message
            return False
        # shell replies in order: first the execute's (finished meanwhile), then the probe's
        writer.write(_reply_to(running["execute"], "execute_reply") + _reply_to(message, "kernel_info_reply"))
        return True
    hub = _kernel_hub(answer)

    async with _ide_facing(hub, start_proxy) as client:
        channel = await _v1_channel(client)
        msg_id = await channel.start_execute("import time; time.sleep(1)")
        reply = await asyncio.wait_for(channel.receive(), 10)
        assert reply["header"]["msg_type"] == "execute_reply"
        assert reply["parent_header"]["msg_id"] == msg_id
        probe_reply = await asyncio.wait_for(channel.receive(), 10)
        assert probe_reply["parent_header"]["msg_id"].startswith("jupyter-dev-proxy-probe-")
        await asyncio.sleep(0.3)
        assert not channel.ws.closed
        await channel.ws.close()


async def test_a_server_stopped_from_the_hub_closes_the_ides_websocket_within_seconds(
        start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Audit P3: the hub side ends without a close frame and the hub then sends the server's URLs to its
    not-running page: the reconnection ends at once (60 s before)."""
    handshakes = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        handshakes += 1
        if handshakes == 1:
            writer.write(_upgrade(head))
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.close()  # the single-user server exits: FIN, no close frame
            return
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /hub/user/alice/api/kernels/k1/channels\r\n"
                     b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with _ide_facing(hub, start_proxy, reconnect_seconds=60) as client:
        ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1011
    assert any("your server on the hub has stopped" in r.getMessage() for r in caplog.records)


async def test_a_reconnection_that_gets_no_answer_is_abandoned_for_a_fresh_connection(
        start_proxy: StartProxy) -> None:
    """Audit P5: the first attempt lands on a connection that never answers; a few seconds later a fresh one
    is tried (it used to wait for the whole budget, then 1012)."""
    handshakes = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        handshakes += 1
        if handshakes == 2:
            await reader.read()  # never answers
            return
        writer.write(_upgrade(head))
        await writer.drain()
        if handshakes == 1:
            await asyncio.sleep(0.3)
            writer.transport.abort()
            return
        await answer_until_closed(reader, writer)

    async with _ide_facing(hub, start_proxy, reconnect_seconds=30) as client:
        ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
        await _until(lambda: handshakes >= 3, 12)
        await asyncio.sleep(0.2)
        assert not ws.closed
        await ws.close()


@pytest.mark.parametrize("gap", ["same-instant", "one-iteration-later"])
async def test_a_spare_reset_just_after_the_kernel_connection_is_not_handed_to_the_reconnection(
        start_proxy: StartProxy, tls_ca: tuple[trustme.CA, Path], gap: str) -> None:
    """Audit P6: over TLS, a spare's reset is queued for the spare's protocol one loop iteration after the kernel
    connection's; the reconnection must not be handed that spare (it then waited out the whole budget)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca[0].issue_cert("jupyterhub", "127.0.0.1").configure_cert(context)
    idle: list[asyncio.StreamWriter] = []
    websockets: list[asyncio.StreamWriter] = []

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        idle.append(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        idle.remove(writer)
        writer.write(_upgrade(head))
        await writer.drain()
        websockets.append(writer)
        await answer_until_closed(reader, writer)

    def rst(writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(hub, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = await start_proxy(make_settings(f"https://127.0.0.1:{port}", tls_ca[1], "jupyterhub",
                                                reconnect_seconds=20))
        async with proxy.session() as client:
            ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
            await _until(lambda: bool(websockets and idle))
            spares = list(idle)
            rst(websockets[0])
            if gap == "same-instant":
                for spare in spares:
                    rst(spare)
            else:
                asyncio.get_running_loop().call_soon(lambda: [rst(spare) for spare in spares])
            started = time.monotonic()
            await _until(lambda: len(websockets) >= 2, 8)
            assert time.monotonic() - started < 6
            assert not ws.closed
            await ws.close()
    finally:
        server.close()


async def test_the_ides_close_while_the_hub_is_away_is_answered_at_once(start_proxy: StartProxy) -> None:
    """Review S7: the IDE closes its websocket while the proxy reconnects: its close is answered at once, not
    after the reconnection (or 60 s)."""
    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        if "GET /user/alice/api/kernels" in head and not hub_state:
            hub_state.append("first")
            writer.write(_upgrade(head))
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.transport.abort()
            return
        await reader.read()  # later connections never answer: the proxy stays reconnecting
    hub_state: list[str] = []

    async with _ide_facing(hub, start_proxy, reconnect_seconds=60) as client:
        ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
        await asyncio.sleep(0.6)
        started = time.monotonic()
        await asyncio.wait_for(ws.close(), 3)
        assert time.monotonic() - started < 2


async def test_a_safe_request_in_flight_at_a_link_reset_is_answered_by_the_real_kernel(
        jupyter_upstream: DemoServer, start_proxy: StartProxy) -> None:
    """Sent again, the request must differ from its first copy: the kernel's Session drops a message whose
    signature it has seen, and jupyter_server signs the same bytes the same way."""
    async with _through_a_link(jupyter_upstream, start_proxy) as (link, proxy):
        async with proxy.session() as client:
            ids = await start_session(client, await new_notebook(client))
            channel = await _open_channel(client, ids)
            assert reply_content(await channel.execute("1 + 1"))["status"] == "ok"
            link.delay = 0.3  # from now on: a slow link, so that the reply is still on its way at the reset
            message = request("kernel_info_request", {}, ids["session"])
            message["channel"] = "control"
            await channel.send(message)
            await asyncio.sleep(0.45)  # through the proxy, on the link (0.3 s each way), the reply not yet back
            link.reset_all()
            async with timeout(20):
                while True:
                    reply = await channel.receive()
                    if (reply["parent_header"].get("msg_id") == message["header"]["msg_id"]
                            and reply["header"]["msg_type"] == "kernel_info_reply"):
                        break
            assert reply["content"]["status"] == "ok"
            assert not channel.ws.closed
            await channel.ws.close()


async def test_a_message_written_whole_into_the_connection_that_broke_is_told_not_dropped(
        start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Review #6: a message the proxy wrote whole into the hub's connection before it broke, with no answer from
    the hub since, may or may not have arrived: the IDE is told (1012), never left waiting. (A widget's comm_msg:
    it has no reply, and sending it twice could apply a change twice.)"""
    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_upgrade((await reader.readuntil(b"\r\n\r\n")).decode()))
        await read_frame(reader)  # the IDE's message, read, never answered
        writer.transport.abort()

    async with _ide_facing(hub, start_proxy) as client:
        ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
        await ws.send_str(json.dumps({**request("comm_msg", {"comm_id": "w1", "data": {"value": 42}}, "s1"),
                                      "channel": "shell"}))
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == SERVICE_RESTART
    assert any("was lost when the connection to the hub broke" in r.getMessage() for r in caplog.records)
