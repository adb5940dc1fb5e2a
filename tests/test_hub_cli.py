"""``python proxy.py`` where no JupyterHub runs: no hub configured, a hub that cannot be reached, a plain Jupyter
server without a hub API, and ``--demo`` from start to a clean Ctrl-C."""

from __future__ import annotations

import getpass
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from jupyter_dev_proxy.demo import DemoServer, free_port
from tests.kit.env import clean_env, upstream_env
from tests.kit.process import ProxyProcess, failed_start, run_proxy

pytestmark = pytest.mark.timeout(180)


def test_a_hub_that_refuses_connections_is_unreachable() -> None:
    port = free_port()  # nothing listens there
    message = failed_start(clean_env(JUPYTERHUB_URL=f"https://127.0.0.1:{port}", JUPYTERHUB_API_TOKEN="t"))
    assert f"The hub at https://127.0.0.1:{port} could not be reached" in message
    assert "check the hub address and your network or VPN" in message


def test_a_hub_name_that_does_not_resolve_is_named() -> None:
    message = failed_start(clean_env(JUPYTERHUB_URL="https://hub.invalid", JUPYTERHUB_API_TOKEN="t"))
    assert "The hub's name hub.invalid could not be resolved" in message


def test_a_server_without_a_hub_api_is_proxied_as_a_plain_server_with_one_log_line(
        jupyter_upstream: DemoServer, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, upstream_env(jupyter_upstream.url, jupyter_upstream.ca_file, jupyter_upstream.token,
                                            JUPYTER_USERNAME="alice"))
    proxy.wait_for_banner()
    assert len(re.findall("is a plain Jupyter server, not a JupyterHub", proxy.output)) == 1
    assert "Upstream: a plain Jupyter server at /user/alice/ (no hub API), running." in proxy.output
    assert proxy.get("/api/status")[0] == 200
    assert jupyter_upstream.token not in proxy.output


def test_a_plain_server_needs_the_username_of_its_path(jupyter_upstream: DemoServer) -> None:
    message = failed_start(upstream_env(jupyter_upstream.url, jupyter_upstream.ca_file, jupyter_upstream.token))
    assert "has no hub API" in message and "set JUPYTER_USERNAME" in message


def test_a_plain_server_under_another_path_is_reported(jupyter_upstream: DemoServer) -> None:
    message = failed_start(upstream_env(jupyter_upstream.url, jupyter_upstream.ca_file, jupyter_upstream.token,
                                        JUPYTER_USERNAME="zed"))
    assert f"Nothing answers at {jupyter_upstream.url}/user/zed/" in message


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _port_is_free(port: int) -> bool:
    """Nothing listens on it (connections of the past may linger in TIME_WAIT, as after any server)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("demo_flag", [("--demo",), ()], ids=["--demo", "no-hub-configured"])
def test_demo_serves_a_working_jupyter_and_ctrl_c_leaves_no_process_port_or_file(
        tmp_path: Path, demo_flag: tuple[str, ...], proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, clean_env(), *demo_flag, "--listen-host", "127.0.0.1", "--listen-port", "0",
                      cwd=tmp_path)
    proxy.wait_for_banner()
    root = Path(proxy.wait_for(r"its files in (\S+) are deleted").group(1))
    workdir = root.parent
    server_port = int(proxy.wait_for(r"→ https://127\.0\.0\.1:(\d+)/user/").group(1))
    proxy_port = int(proxy.url.rsplit(":", 1)[1])
    login = re.escape(getpass.getuser())
    assert re.search(rf"/user/{login}/ \(certificate checked for 'jupyterhub'\)", proxy.output)
    assert proxy.get("/api/status")[0] == 200
    status, kernel = proxy.post_json("/api/kernels")
    assert status == 201, kernel
    deadline = time.monotonic() + 30
    while len(_processes_mentioning(str(workdir))) < 2:  # the server and its kernel
        assert time.monotonic() < deadline, "the kernel never started"
        time.sleep(0.1)
    proxy.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert proxy.exit_status(timeout=30) == 0
    assert "Traceback" not in proxy.output
    assert _processes_mentioning(str(workdir)) == []
    assert not workdir.exists()
    assert _port_is_free(server_port) and _port_is_free(proxy_port)
    assert list(tmp_path.iterdir()) == []  # nothing written where it was started either
