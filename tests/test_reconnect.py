"""Kernel websockets that survive the hub side breaking: a real jupyter_server + ipykernel behind the link emulator
(bench/linkemu.py), whose connections the tests reset or hold; and a fake hub for what a real one cannot show (a
frame the IDE was sending, cut by the break)."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bench.linkemu import LinkEmulator
from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.demo import DemoServer
from jupyter_dev_proxy.ws_relay import SERVICE_RESTART, accept_key
from tests.kit.fakehubs import fake_hub
from tests.kit.ide import new_notebook, start_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, decode_v1, reply_content
from tests.kit.settings import Proxy, make_settings

pytestmark = pytest.mark.timeout(120)

StartProxy = Callable[[Settings], Awaitable[Proxy]]

# A cell that prints a numbered line every 0.5 s for 12 s: a break anywhere in it must lose no line.
COUNTING_CELL = "import time\nfor i in range(24):\n    print(f'line {i}', flush=True)\n    time.sleep(0.5)"
ALL_LINES = "".join(f"line {i}\n" for i in range(24))


@asynccontextmanager
async def _through_a_link(server: DemoServer, start_proxy: StartProxy,
                          **overrides: Any) -> AsyncIterator[tuple[LinkEmulator, Proxy]]:
    port = int(server.url.rsplit(":", 1)[1])
    async with LinkEmulator("127.0.0.1", port, delay=0.002) as link:
        proxy = await start_proxy(make_settings(f"https://127.0.0.1:{link.port}", server.ca_file, server.tls_name,
                                                hub_token=server.token, **overrides))
        yield link, proxy


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
            await asyncio.sleep(3)
            if fault == "reset":
                link.reset_all()  # a hub proxy restart, an ingress reload, a VPN reconnect
                await asyncio.sleep(0.2)
                answer = await channel.start_execute("40 + 2")  # sent while the hub side is away: held
            else:
                link.hold(10)  # a link that goes silent for 10 s without a reset
                answer = await channel.start_execute("40 + 2")
            replies = await counting
            assert _stream_text(replies) == ALL_LINES
            assert reply_content(replies)["status"] == "ok"
            assert reply_content(await channel.replies_to(answer))["status"] == "ok"
            assert not channel.ws.closed
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
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode())
        if number == 1:
            await reader.readexactly(100_000)  # part of the IDE's frame, then the connection breaks
            writer.transport.abort()
            return
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
            if first & 0x0F == 0x8:
                break
            received.append((number, hashlib.sha256(payload).hexdigest()))
        writer.close()

    big, small = b"x" * 3_000_000, b"after the break"
    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        async with proxy.session() as client:
            ws = await client.ws_connect("/api/kernels/k1/channels?session_id=s1")
            await ws.send_bytes(big)
            await ws.send_bytes(small)
            await asyncio.sleep(1)
            await ws.close()
    # The hub saw each message once, whole, on the new connection.
    assert received == [(2, hashlib.sha256(big).hexdigest()), (2, hashlib.sha256(small).hexdigest())]
