"""Kernel websockets through a real JupyterHub (TLS, configurable-http-proxy): a server stopped from the hub
closes the IDE's websocket within seconds, and a link that resets under a running cell loses no line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from bench.linkemu import LinkEmulator
from jupyter_dev_proxy.config import Settings
from tests.kit.settings import Proxy, make_settings
from tests.kit.hub import Hub, module_hub, require_real_servers
from tests.kit.ide import new_notebook, start_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, reply_content

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers()
hub = module_hub()

StartProxy = Callable[[Settings], Awaitable[Proxy]]

# A cell that prints a numbered line every 0.25 s for 6 s.
COUNTING_CELL = "import time\nfor i in range(24):\n    print(f'line {i}', flush=True)\n    time.sleep(0.25)"
ALL_LINES = "".join(f"line {i}\n" for i in range(24))


async def _kernel_channel(client: aiohttp.ClientSession) -> KernelChannel:
    ids = await start_session(client, await new_notebook(client))
    ws = await client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                 protocols=(KERNEL_PROTOCOL,), max_msg_size=0)
    return KernelChannel(ws, ids["session"])


async def test_a_server_stopped_from_the_hub_closes_the_ides_kernel_websocket_within_seconds(
        hub: Hub, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    hub.ensure_running("alice")
    proxy = await start_proxy(make_settings(hub.address, hub.ca_file, hub.tls_name, hub_token=hub.make_token("alice")))
    async with proxy.session() as client:
        channel = await _kernel_channel(client)
        assert reply_content(await channel.execute("1 + 1"))["status"] == "ok"
        await asyncio.to_thread(hub.ensure_stopped, "alice")  # what the idle culler does
        stopped_at = time.monotonic()
        message = await channel.ws.receive(timeout=30)
        while message.type is aiohttp.WSMsgType.BINARY:  # the kernel's last words
            message = await channel.ws.receive(timeout=30)
        closed_after = time.monotonic() - stopped_at
    assert message.type is aiohttp.WSMsgType.CLOSE and channel.ws.close_code == 1011
    assert closed_after < 5, closed_after
    assert any("your server on the hub has stopped" in r.getMessage() for r in caplog.records)


async def test_a_link_reset_under_a_running_cell_loses_no_line_through_the_hubs_proxy(
        hub: Hub, start_proxy: StartProxy) -> None:
    """The reconnection against the real thing: configurable-http-proxy in front, the hub's auth on every handshake."""
    hub.ensure_running("alice")
    port = int(hub.url.rsplit(":", 1)[1])
    async with LinkEmulator("127.0.0.1", port, delay=0.005) as link:
        address = f"https://127.0.0.1:{link.port}{hub.base.rstrip('/')}"
        proxy = await start_proxy(make_settings(address, hub.ca_file, hub.tls_name, hub_token=hub.make_token("alice")))
        async with proxy.session() as client:
            channel = await _kernel_channel(client)
            counting = asyncio.ensure_future(channel.replies_to(await channel.start_execute(COUNTING_CELL), 90))
            await asyncio.sleep(2)
            link.reset_all()
            await asyncio.sleep(1.5)
            link.reset_all()
            replies = await counting
            text = "".join(m["content"]["text"] for m in replies if m["header"]["msg_type"] == "stream")
            assert reply_content(replies)["status"] == "ok"
            assert not channel.ws.closed
            await channel.ws.close()
    lines = text.splitlines()
    assert lines == sorted(set(lines), key=lambda line: int(line.split()[1]))  # no duplicate, no reordering
    assert len(lines) >= 22, text  # a line in flight at each reset may be lost
