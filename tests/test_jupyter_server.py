"""The IDE's whole lifecycle through the proxy, against a real jupyter_server + ipykernel over TLS.

The sequence is the one of ../shared/reference/seeds/jupyter-server-api-walkthrough.md: contents, kernelspecs,
sessions, the kernel websocket in both wire formats, interrupt, restart, delete.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator

import pytest

from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.demo import DemoServer, start_demo_server
from jupyter_dev_proxy.timeouts import timeout
from tests.kit.ide import new_notebook, start_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, reply_content, result_text
from tests.kit.settings import Proxy, make_settings

pytestmark = pytest.mark.timeout(180)

PING_SECONDS = 0.5  # how often the impatient server pings; it gives up after two of these without a pong


async def test_notebook_contents_create_rename_save_and_read(jupyter_proxy: Proxy) -> None:
    async with jupyter_proxy.session() as client:
        async with client.get("/api/contents") as response:
            assert response.status == 200
            assert (await response.json())["type"] == "directory"
        name = await new_notebook(client)  # created, renamed, saved with a cell, read back
        async with client.get(f"/api/contents/{name}") as response:
            saved = await response.json()
        assert saved["content"]["cells"][0]["source"] == "1 + 1"


async def test_kernelspec_logo_urls_are_followed_as_given(jupyter_proxy: Proxy) -> None:
    async with jupyter_proxy.session() as client:
        async with client.get("/api/kernelspecs") as response:
            specs = await response.json()
        logo = specs["kernelspecs"]["python3"]["resources"]["logo-64x64"]
        assert logo.startswith("/user/alice/kernelspecs/")  # absolute, with the server's base URL
        async with client.get(logo) as response:
            assert response.status == 200
            assert response.content_type == "image/png"
            assert (await response.read()).startswith(b"\x89PNG")
        async with client.get(logo.removeprefix("/user/alice")) as response:
            assert response.status == 200


async def test_api_root_and_tree_pages_are_served(jupyter_proxy: Proxy) -> None:
    async with jupyter_proxy.session() as client:
        async with client.get("/api") as response:
            assert "version" in await response.json()
        async with client.get("/", allow_redirects=False) as response:
            assert response.status in (200, 302)
            assert not response.headers.get("Location", "/").startswith(("/user", "http"))


@pytest.mark.parametrize("protocols", [(KERNEL_PROTOCOL,), ()], ids=["v1-binary", "legacy-json"])
async def test_execute_over_the_kernel_websocket(jupyter_proxy: Proxy, protocols: tuple[str, ...]) -> None:
    async with jupyter_proxy.session() as client:
        ids = await start_session(client, await new_notebook(client))
        async with client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                     protocols=protocols) as ws:
            assert ws.protocol == (protocols[0] if protocols else None)
            channel = KernelChannel(ws, ids["session"])
            assert result_text(await channel.execute("1 + 1")) == "2"
        async with client.delete(f"/api/sessions/{ids['session']}") as response:
            assert response.status == 204


async def test_interrupt_restart_and_delete_a_kernel(jupyter_proxy: Proxy) -> None:
    async with jupyter_proxy.session() as client:
        ids = await start_session(client, await new_notebook(client))
        kernel = f"/api/kernels/{ids['kernel']}"
        async with client.ws_connect(f"{kernel}/channels?session_id={ids['session']}",
                                     protocols=(KERNEL_PROTOCOL,)) as ws:
            channel = KernelChannel(ws, ids["session"])
            assert result_text(await channel.execute("40 + 2")) == "42"
            msg_id = await channel.start_execute("import time; time.sleep(60)")
            await channel.until(msg_id, "execute_input")  # the kernel is running the cell: interrupt it there
            async with client.post(f"{kernel}/interrupt") as response:
                assert response.status == 204
            assert reply_content(await channel.replies_to(msg_id))["ename"] == "KeyboardInterrupt"

        async with client.post(f"{kernel}/restart") as response:
            assert response.status == 200
        async with client.ws_connect(f"{kernel}/channels?session_id={ids['session']}",
                                     protocols=(KERNEL_PROTOCOL,)) as ws:
            channel = KernelChannel(ws, ids["session"])
            assert result_text(await channel.execute("'x' in dir()")) == "False"  # a fresh kernel

        async with client.delete(f"/api/sessions/{ids['session']}") as response:
            assert response.status == 204
        async with client.delete(kernel) as response:
            assert response.status in (204, 404)  # deleting the session may already have stopped it
        async with client.get("/api/kernels") as response:
            assert ids["kernel"] not in [k["id"] for k in await response.json()]


async def test_terminal_websocket_outside_api_is_routed(jupyter_proxy: Proxy) -> None:
    async with jupyter_proxy.session() as client:
        async with client.post("/api/terminals") as response:
            assert response.status == 200, await response.text()
            name = (await response.json())["name"]
        async with client.ws_connect(f"/terminals/websocket/{name}") as ws:
            await ws.send_str(json.dumps(["stdin", "echo through-the-$((6*7))-proxy\r"]))
            seen = ""
            async with timeout(30):
                while "through-the-42-proxy" not in seen:
                    message = json.loads(await ws.receive_str())
                    if message[0] == "stdout":
                        seen += message[1]
        async with client.delete(f"/api/terminals/{name}") as response:
            assert response.status == 204


async def test_large_kernel_output_crosses_the_4_mib_default_cap(jupyter_proxy: Proxy) -> None:
    async with jupyter_proxy.session() as client:
        ids = await start_session(client, await new_notebook(client))
        async with client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                     protocols=(KERNEL_PROTOCOL,), max_msg_size=0) as ws:
            channel = KernelChannel(ws, ids["session"])
            text = result_text(await channel.execute("'y' * (12 * 1024 * 1024)"))
            assert text is not None and len(text) == 12 * 1024 * 1024 + 2  # repr adds the quotes
        async with client.delete(f"/api/sessions/{ids['session']}") as response:
            assert response.status == 204


@pytest.fixture(scope="module")
def impatient_upstream() -> Iterator[DemoServer]:
    """A real server that pings every 0.5 s and drops a websocket after 1 s without a pong."""
    # jupyter_server's kernel websocket reads these two (in ms), not ServerApp.websocket_ping_*. Short, so that
    # idling through several timeouts is quick; not shorter, so that a busy CI machine does not miss a pong.
    server = start_demo_server("alice", extra_args=(
        f"--ServerApp.tornado_settings={{'ws_ping_interval': {PING_SECONDS * 1000:.0f}, "
        f"'ws_ping_timeout': {2 * PING_SECONDS * 1000:.0f}}}",))
    try:
        yield server
    finally:
        server.stop()


async def test_an_idle_kernel_websocket_outlives_the_servers_ping_timeout(
        impatient_upstream: DemoServer, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    proxy = await start_proxy(make_settings(impatient_upstream.url, impatient_upstream.ca_file,
                                            impatient_upstream.tls_name, hub_token=impatient_upstream.token))
    async with proxy.session() as client:
        ids = await start_session(client, await new_notebook(client))
        async with client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                     protocols=(KERNEL_PROTOCOL,), autoping=True) as ws:
            channel = KernelChannel(ws, ids["session"])
            assert result_text(await channel.execute("1 + 1")) == "2"
            await asyncio.sleep(3 * 2 * PING_SECONDS)  # idle for three of the server's ping timeouts
            assert not ws.closed
            assert result_text(await channel.execute("2 + 2")) == "4"


@pytest.mark.parametrize("protocols", [(KERNEL_PROTOCOL,), ()], ids=["v1-binary", "legacy-json"])
async def test_the_trace_logs_one_line_per_kernel_message_and_never_its_content(
        jupyter_upstream: DemoServer, start_proxy: Callable[[Settings], Awaitable[Proxy]],
        caplog: pytest.LogCaptureFixture, protocols: tuple[str, ...]) -> None:
    proxy = await start_proxy(make_settings(jupyter_upstream.url, jupyter_upstream.ca_file, jupyter_upstream.tls_name,
                                            hub_token=jupyter_upstream.token, trace=True))
    async with proxy.session() as client:
        ids = await start_session(client, await new_notebook(client))
        async with client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                     protocols=protocols) as ws:
            channel = KernelChannel(ws, ids["session"])
            msg_id = await channel.start_execute("print('secret-output-' + 'x' * 3)")
            await channel.replies_to(msg_id)
        async with client.delete(f"/api/sessions/{ids['session']}") as response:
            assert response.status == 204
    traced = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trace ")]
    kernel = ids["kernel"][:8]
    assert any(line.startswith(f"trace IDE → hub kernel {kernel} shell") and "execute_request" in line
               and msg_id[:8] in line for line in traced), traced
    for kind in ("status", "execute_input", "stream", "execute_reply"):
        assert any(line.startswith(f"trace hub → IDE kernel {kernel}") and f" {kind} " in line
                   for line in traced), (kind, traced)
    assert all(line.endswith(" bytes") for line in traced)
    assert not [r for r in caplog.records if "secret-output" in r.getMessage() or "print(" in r.getMessage()]


async def test_without_the_trace_nothing_is_decoded(jupyter_proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    async with jupyter_proxy.session() as client:
        ids = await start_session(client, await new_notebook(client))
        async with client.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                     protocols=(KERNEL_PROTOCOL,)) as ws:
            assert result_text(await KernelChannel(ws, ids["session"]).execute("1 + 1")) == "2"
    assert not [r for r in caplog.records if r.getMessage().startswith("trace ")]
