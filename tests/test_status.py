"""See what the proxy sees, against a real JupyterHub: the status page (as JSON, and in a real headless Chromium),
refused without the proxy's token; and ``jupyter-dev-proxy doctor`` against a healthy hub and each broken link
that can be produced here."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from jupyter_dev_proxy import doctor
from jupyter_dev_proxy.demo import free_port
from jupyter_dev_proxy.hubapi import FixedToken, hub_client
from jupyter_dev_proxy.transport import HubTransport
from tests.kit.hub import Hub, module_hub, require_real_servers
from tests.kit.hub import hub_env as status_env
from tests.kit.ide import ide_session, new_notebook, start_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, result_text
from tests.kit.process import PROXY, ProxyProcess, run_proxy
from tests.kit.settings import HUB_TOKEN, make_settings

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers("chromium")
hub = module_hub()


# -- the status page ----------------------------------------------------------------------------------------------

async def test_the_status_json_shows_hub_user_server_token_and_kernel_websockets_never_the_token(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice")
    proxy = run_proxy(proxies, status_env(hub, token))
    url, local = proxy.wait_for_banner()
    assert f"Status page: {url}/jupyter-dev-proxy/?token={local}" in proxy.output
    async with ide_session(url, local) as ide:
        ids = await start_session(ide, await new_notebook(ide))
        async with ide.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                  protocols=(KERNEL_PROTOCOL,)) as ws:
            assert result_text(await KernelChannel(ws, ids["session"]).execute("6 * 7")) == "42"
            async with ide.get("/api/contents/no-such-file") as response:
                assert response.status == 404  # the server's own answer: not an error of the proxy's
            async with ide.get("/hub/api") as response:
                assert response.status == 404  # refused by the proxy: an error it counts
            async with ide.get("/jupyter-dev-proxy/api/status") as response:
                assert response.status == 200
                raw = await response.text()
    status = json.loads(raw)
    assert status["user"] == "alice" and status["hub"]["version"] == hub.version
    assert status["hub"]["reached"] == "directly" and status["server"]["state"] == "running"
    assert status["server"]["last_activity"] and status["token"]["owner"] == "alice"
    assert status["token"]["scopes"] and status["token"]["from"] == "JUPYTERHUB_API_TOKEN"
    [socket] = status["websockets"]
    assert socket["kernel"] == ids["kernel"] and socket["bytes_to_ide"] > 0 and socket["bytes_to_hub"] > 0
    assert status["requests"] >= 5 and status["errors"] == 1
    assert status["recent_errors"][0]["reason"] == "outside-your-server"
    assert token not in raw and local not in raw


async def test_the_status_page_is_refused_without_the_proxys_token(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, status_env(hub, hub.make_token("alice")))
    url, _ = proxy.wait_for_banner()
    for path in ("/jupyter-dev-proxy/", "/jupyter-dev-proxy/api/status", "/jupyter-dev-proxy/api/status?token=x"):
        proxy.token = "not-the-token"
        status, body = proxy.get(path)
        assert status == 403 and body["reason"] in ("token-wrong", "token-required"), (path, body)


def test_the_status_page_in_a_real_browser_shows_user_hub_version_and_server_state(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, status_env(hub, hub.make_token("alice")))
    url, local = proxy.wait_for_banner()
    page = f"{url}/jupyter-dev-proxy/?token={local}"
    dom = _chromium("--dump-dom", page)
    assert "alice" in dom and f"JupyterHub {hub.version}" in dom
    assert 'id="server-state" class="ok">running<' in dom
    with tempfile.TemporaryDirectory() as directory:
        shot = Path(directory) / "status.png"
        _chromium(f"--screenshot={shot}", "--window-size=1100,800", page)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _chromium(*args: str) -> str:
    """Debian's chromium, headless, with nothing of its own reaching the network (this machine has none)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


# -- doctor -------------------------------------------------------------------------------------------------------------

def _doctor(env: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(PROXY), "doctor"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


def test_doctor_against_a_healthy_hub_passes_every_link_and_prints_no_secret(hub: Hub) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice")
    status, output = _doctor(status_env(hub, token, JUPYTER_PROXY_TOKEN="local-secret-of-the-doctor-test"))
    lines = output.strip().splitlines()
    assert status == 0, output
    assert [line.split(":")[0] for line in lines] == [
        "✓ settings", "✓ name", "✓ TCP", "✓ TLS", "✓ hub API", "✓ sign-in", "✓ token", "✓ server", "✓ kernelspecs",
        "✓ websocket"]
    assert f"JupyterHub {hub.version}" in output and "alice's, from JUPYTERHUB_API_TOKEN" in output
    assert "JUPYTERHUB_URL=" in output and "(environment)" in output
    assert token not in output and "local-secret-of-the-doctor-test" not in output


def test_doctor_names_each_broken_link(hub: Hub, tmp_path: Path) -> None:
    token = hub.make_token("alice")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    cases = {
        "wrong CA": (status_env(hub, token, JUPYTER_CLUSTER_CA_CERT=str(other_ca)), "✗ TLS",
                     "JUPYTER_CLUSTER_CA_CERT"),
        "unreachable hub": (status_env(hub, token, JUPYTERHUB_URL=f"https://127.0.0.1:{free_port()}"), "✗ TCP",
                            "could not be reached"),
        "wrong token": (status_env(hub, "not-a-token"), "✗ token", "/hub/token"),
    }
    for name, (env, line, words) in cases.items():
        status, output = _doctor(env)
        assert status == 1, (name, output)
        failed = [row for row in output.splitlines() if row.startswith("✗")]
        assert failed and failed[0].startswith(line) and words in failed[0], (name, output)
    hub.ensure_stopped("alice")
    status, output = _doctor(status_env(hub, token))
    assert status == 1 and "✗ server: default server /user/alice/ is not running" in output
    assert "✗ kernelspecs" not in output  # a stopped server is the first broken link; nothing after it is tried


async def test_doctor_names_a_front_that_does_not_pass_websockets(aiohttp_server: Any) -> None:
    """Behind an ingress that drops the Upgrade header, jupyter_server answers the handshake as a plain GET:
    400 'Can "Upgrade" only to "WebSocket".' The doctor opens the websocket as the relay does and names the cause."""
    async def kernelspecs(request: web.Request) -> web.Response:
        return web.json_response({"default": "python3", "kernelspecs": {"python3": {}}})

    async def subscribe(request: web.Request) -> web.Response:
        return web.Response(status=400, text='Can "Upgrade" only to "WebSocket".')

    app = web.Application()
    app.router.add_get("/user/alice/api/kernelspecs", kernelspecs)
    app.router.add_get("/user/alice/api/events/subscribe", subscribe)
    server = await aiohttp_server(app)
    settings = make_settings(f"http://127.0.0.1:{server.port}")
    out = io.StringIO()
    report = doctor._Report(out)
    async with hub_client(settings, FixedToken(HUB_TOKEN)) as hub:
        await doctor._kernelspecs_and_websocket(report, hub, HubTransport(settings))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("✓ kernelspecs: 1 kernels")
    assert lines[1].startswith("✗ websocket: a handshake with /user/alice/api/events/subscribe failed: The hub "
                               "answered the websocket handshake with HTTP 400")
    assert "may not pass websockets" in lines[1] and not report.healthy
