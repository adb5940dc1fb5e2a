"""Web apps on the user's server (TensorBoard, Dash, Streamlit...) on local ports of their own, through a real
JupyterHub whose user servers have jupyter-server-proxy, with a small app on the server's side: a page with a
relative script, a JSON endpoint that reports what it saw, a redirect and a websocket echo."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from jupyter_dev_proxy.demo import free_port
from tests.kit.hub import Hub, hub_env, module_hub
from tests.kit.process import ProxyProcess, run_proxy
from tests.kit.webapp import app_url, browser, serve_web_app, use_web_app

pytestmark = [pytest.mark.timeout(240), pytest.mark.waits]

hub = module_hub()


@pytest.fixture
async def web_app() -> AsyncIterator[int]:
    async with serve_web_app() as port:
        yield port


@pytest.fixture
def running(hub: Hub) -> Iterator[Hub]:
    hub.ensure_running("alice")
    yield hub




async def test_an_app_is_at_the_root_of_its_local_port_after_the_token_once(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    token = running.make_token("alice")
    proxy = run_proxy(proxies, hub_env(running, token, JUPYTER_PROXY_FORWARD=f"{web_app}:0"))
    url, local_token = app_url(proxy, web_app)
    seen = await use_web_app(url, local_token)
    assert seen["path"] == "/api/echo"  # at its root: jupyter-server-proxy removed the prefix
    assert token not in str(seen)  # whatever the app echoes, the hub token does not come back
    async with browser() as client:
        async with client.get(url / "redirect" % {"token": local_token}, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/api/echo?from=redirect"


async def test_an_app_port_refuses_what_the_proxys_port_refuses(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"), JUPYTER_PROXY_FORWARD=f"{web_app}:0"))
    url, local_token = app_url(proxy, web_app)
    async with browser() as client:
        async with client.get(url / "api/echo") as response:  # no token, no cookie
            assert response.status == 403 and (await response.json())["reason"] == "token-required"
        async with client.get(url / "api/echo" % {"token": local_token},
                               headers={"Host": f"evil.example:{url.port}"}) as response:  # DNS rebinding
            assert response.status == 403 and (await response.json())["reason"] == "host-not-allowed"
        async with client.get(url / "api/echo" % {"token": "wrong"}) as response:
            assert response.status == 403
        async with client.get(url % {"token": local_token}):
            pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # a page of another site, with the cookie
            async with client.ws_connect(url / "ws", origin="https://evil.example"):
                pass
        assert refused.value.status == 403
        async with client.get(url / "jupyter-dev-proxy/api/status") as response:  # the proxy's pages: not here
            assert "uptime_seconds" not in await response.text()


async def test_an_app_that_knows_its_whole_path_gets_it(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app}:0/absolute"))
    url, local_token = app_url(proxy, web_app)
    prefix = f"/user/alice/proxy/absolute/{web_app}/"
    async with browser() as client:
        for path in ("api/echo", f"{prefix[1:]}api/echo"):  # the app's own links carry its whole path
            async with client.get(url / path % {"token": local_token}) as response:
                assert (await response.json())["path"] == f"{prefix}api/echo"


async def test_nothing_listening_on_the_servers_port_is_explained(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    idle = free_port()
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app}:0,{idle}:0"))
    url, local_token = app_url(proxy, idle)
    async with browser() as client:
        async with client.get(url % {"token": local_token}) as response:
            assert response.status == 502
            answer = await response.json()
        assert answer["reason"] == "app-not-listening"
        assert f"Nothing listens on port {idle} of your server" in answer["message"]
        status_url, _ = proxy.wait_for_banner()
        async with client.get(f"{status_url}/jupyter-dev-proxy/api/status",
                               params={"token": local_token}) as response:
            apps = {app["port"]: app for app in (await response.json())["apps"]}
    assert apps[idle]["state"] == "nothing listening" and apps[web_app]["state"] == "answering"
    assert re.fullmatch(r"http://\S+:\d+/", apps[idle]["url"])
    assert any(f"{idle}" in line and "nothing listens" in line.lower() for line in proxy.lines)
