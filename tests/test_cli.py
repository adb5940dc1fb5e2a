"""``python3 proxy.py`` as a user runs it: a subprocess, its banner, its exit status, its memory."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jupyter_dev_proxy.demo import DemoServer
from tests.kit.env import clean_env, server_env
from tests.kit.ide import ide_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, result_text
from tests.kit.process import ProxyProcess, failed_start, run_proxy

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def proxy_env(jupyter_upstream: DemoServer) -> dict[str, str]:
    return server_env(jupyter_upstream)


@pytest.fixture
def running_proxy(proxy_env: dict[str, str], proxies: list[ProxyProcess]) -> ProxyProcess:
    return run_proxy(proxies, proxy_env)


@pytest.mark.parametrize("event_loop", ["auto", "asyncio"], ids=["uvloop-when-installed", "asyncio"])
async def test_banner_prints_a_working_ide_url_and_sigterm_exits_cleanly(
        proxy_env: dict[str, str], proxies: list[ProxyProcess], jupyter_upstream: DemoServer, event_loop: str) -> None:
    running_proxy = run_proxy(proxies, {**proxy_env, "JUPYTER_PROXY_EVENT_LOOP": event_loop})
    url, token = running_proxy.wait_for_banner()
    async with aiohttp.ClientSession() as ide:
        async with ide.get(f"{url}/api/status", params={"token": token}) as response:
            assert response.status == 200
        async with ide.post(f"{url}/api/kernels", params={"token": token}) as response:
            kernel = (await response.json())["id"]
        ws = await ide.ws_connect(f"{url}/api/kernels/{kernel}/channels", params={"token": token})
        started = time.monotonic()
        running_proxy.process.send_signal(signal.SIGTERM)
        message = await ws.receive(timeout=10)
        while message.type is aiohttp.WSMsgType.TEXT:  # the new kernel's status, said before the proxy stopped
            message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        assert await asyncio.to_thread(running_proxy.process.wait, 10) == 0
        assert time.monotonic() - started < 5
    assert jupyter_upstream.token not in running_proxy.output


def test_sigint_exits_with_status_0(running_proxy: ProxyProcess) -> None:
    running_proxy.wait_for_banner()
    running_proxy.process.send_signal(signal.SIGINT)
    assert running_proxy.process.wait(timeout=10) == 0
    assert "Traceback" not in running_proxy.output


@pytest.mark.parametrize("env,flags,words", [
    ({"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.1", "JUPYTER_USERNAME": "alice", "JUPYTER_SERVER_PORT": "eighty"}, (),
     "JUPYTER_SERVER_PORT"),
    ({"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.1", "JUPYTER_USERNAME": "alice"}, ("--ca-cert", "/nonexistent.pem"),
     "JUPYTER_CLUSTER_CA_CERT"),
    ({"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.1", "JUPYTER_USERNAME": "alice"}, ("--env-file", "/nonexistent.env"),
     "--env-file"),
])
def test_bad_settings_exit_2_with_one_sentence_and_no_traceback(
        env: dict[str, str], flags: tuple[str, ...], words: str) -> None:
    assert words in failed_start(clean_env(**env), *flags)


def test_a_ca_file_that_is_not_a_certificate_exits_2(proxy_env: dict[str, str], tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    assert "JUPYTER_CLUSTER_CA_CERT" in failed_start({**proxy_env, "JUPYTER_CLUSTER_CA_CERT": str(bogus)})


def test_a_port_in_use_exits_2_and_names_the_setting(proxy_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        message = failed_start({**proxy_env, "JUPYTER_PROXY_PORT": str(taken.getsockname()[1])}, after_log=True)
    assert "JUPYTER_PROXY_PORT" in message


def test_dotenv_file_configures_the_proxy(jupyter_upstream: DemoServer, tmp_path: Path,
                                          proxies: list[ProxyProcess]) -> None:
    (tmp_path / "settings.env").write_text(
        f"JUPYTER_SERVER_IP_OR_NAME=127.0.0.1\nJUPYTER_SERVER_PORT={jupyter_upstream.url.rsplit(':', 1)[1]}\n"
        f"JUPYTER_USERNAME=alice\nJUPYTER_CLUSTER_CA_CERT={jupyter_upstream.ca_file}\n"
        f"JUPYTERHUB_API_TOKEN={jupyter_upstream.token}\nJUPYTER_PROXY_TOKEN=from-dotenv\n")
    proxy = run_proxy(proxies, clean_env(JUPYTER_PROXY_PORT="0"), "--env-file", str(tmp_path / "settings.env"))
    assert proxy.wait_for_banner()[1] == "from-dotenv"
    assert proxy.stop() == 0


# 3 MiB encodes to base64 without padding, so blocks can be encoded one by one and concatenated.
BLOCK = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)
BLOCKS = 34  # 102 MiB


async def _upload_body() -> AsyncIterator[bytes]:
    """A contents-API save of BLOCKS × BLOCK bytes, generated as it is sent."""
    yield b'{"type": "file", "format": "base64", "content": "'
    for _ in range(BLOCKS):
        yield base64.b64encode(BLOCK)
    yield b'"}'


async def test_100_mb_upload_and_download_byte_identical_with_flat_memory(
        running_proxy: ProxyProcess, jupyter_upstream: DemoServer) -> None:
    size = BLOCKS * len(BLOCK)
    expected = hashlib.sha256()
    for _ in range(BLOCKS):
        expected.update(BLOCK)
    url, token = running_proxy.wait_for_banner()
    async with ide_session(url, token) as ide:
        async with ide.get("/api/status") as response:
            assert response.status == 200
        rss_before = running_proxy.peak_rss_kib()
        async with ide.put("/api/contents/big.bin", data=_upload_body()) as response:
            assert response.status in (200, 201), await response.text()
        rss_after_upload = running_proxy.peak_rss_kib()
        got = hashlib.sha256()
        received = 0
        async with ide.get("/files/big.bin") as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                got.update(chunk)
                received += len(chunk)
        rss_after_download = running_proxy.peak_rss_kib()
    assert received == size and got.hexdigest() == expected.hexdigest()
    # ~140 MB crossed the proxy each way; its peak memory may grow by buffers, never by the body.
    assert rss_after_upload - rss_before < 20 * 1024, (rss_before, rss_after_upload)
    assert rss_after_download - rss_before < 20 * 1024, (rss_before, rss_after_download)
    (jupyter_upstream.root_dir / "big.bin").unlink()


async def test_a_48_mib_kernel_output_crosses_the_websocket_with_flat_memory(
        running_proxy: ProxyProcess, jupyter_upstream: DemoServer) -> None:
    """A cell printing a huge result: one 48 MiB websocket message, relayed as it arrives, never held whole."""
    url, token = running_proxy.wait_for_banner()
    async with ide_session(url, token) as ide:
        async with ide.post("/api/kernels") as response:
            kernel = (await response.json())["id"]
        async with ide.ws_connect(f"/api/kernels/{kernel}/channels", protocols=(KERNEL_PROTOCOL,),
                                  max_msg_size=0) as ws:
            channel = KernelChannel(ws, uuid.uuid4().hex)
            assert result_text(await channel.execute("1 + 1")) == "2"
            rss_before = running_proxy.peak_rss_kib()
            text = result_text(await channel.execute("'y' * (48 * 1024 * 1024)"))
            rss_after = running_proxy.peak_rss_kib()
        async with ide.delete(f"/api/kernels/{kernel}") as response:
            assert response.status == 204
    assert text is not None and len(text) == 48 * 1024 * 1024 + 2  # repr adds the quotes
    assert rss_after - rss_before < 20 * 1024, (rss_before, rss_after)


def test_without_event_loop_signal_handlers_as_on_windows_sigterm_and_ctrl_c_still_stop_it(
        proxy_env: dict[str, str], proxies: list[ProxyProcess], tmp_path: Path) -> None:
    """Windows' event loops have no add_signal_handler: simulated here by a sitecustomize that takes it away
    (the asyncio loop: uvloop's is compiled), so the proxy must fall back to signal.signal."""
    (tmp_path / "sitecustomize.py").write_text(
        "import asyncio\n"
        "def _missing(self, *args, **kwargs):\n"
        "    raise NotImplementedError('no signal handlers on this event loop (as on Windows)')\n"
        "asyncio.AbstractEventLoop.add_signal_handler = _missing\n"
        "asyncio.SelectorEventLoop.add_signal_handler = _missing\n")
    env = {**proxy_env, "PYTHONPATH": str(tmp_path), "JUPYTER_PROXY_EVENT_LOOP": "asyncio"}
    for sig in (signal.SIGTERM, signal.SIGINT):
        proxy = run_proxy(proxies, env)
        proxy.wait_for_banner()
        assert proxy.get("/api/status")[0] == 200
        started = time.monotonic()
        proxy.process.send_signal(sig)
        assert proxy.exit_status(timeout=15) == 0, proxy.output
        assert time.monotonic() - started < 10 and "Traceback" not in proxy.output


def test_the_demo_extra_brings_what_the_demo_needs_and_its_hint_names_it() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, before it joined the standard library
        import tomli as tomllib
    from jupyter_dev_proxy import demo
    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = [line.strip() for line in (root / "requirements-demo.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(extras["demo"]) == sorted(listed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "_DEMO_MODULES", ("no_such_module_for_the_demo",))
        with pytest.raises(demo.DemoUnavailable) as missing:
            demo._check_installed()
    assert 'pip install ".[demo]"' in str(missing.value)
