"""Web apps on the user's server (TensorBoard, Dash, Streamlit...) on local ports of their own, through a real
JupyterHub whose user servers have jupyter-server-proxy, with a small app on the server's side: a page with a
relative script, a JSON endpoint that reports what it saw, a redirect and a websocket echo."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from jupyter_dev_proxy.auth import COOKIE_NAME
from jupyter_dev_proxy.demo import free_port
from tests.kit.hub import Hub, hub_env, module_hub
from tests.kit.process import ProxyProcess, run_proxy
from tests.kit.webapp import WebApp, app_url, browser, serve_web_app, use_web_app

pytestmark = [pytest.mark.timeout(240), pytest.mark.waits]

hub = module_hub()


@pytest.fixture
async def web_app() -> AsyncIterator[WebApp]:
    async with serve_web_app() as app:
        yield app


@pytest.fixture
def running(hub: Hub) -> Iterator[Hub]:
    hub.ensure_running("alice")
    yield hub


def _apps_tokens(hub: Hub) -> list[dict[str, Any]]:
    status, listed = hub.api("GET", "/users/alice/tokens")
    assert status == 200, listed
    return [token for token in listed["api_tokens"] if "web apps" in (token.get("note") or "")]


async def test_an_app_is_at_the_root_of_its_local_port_after_the_token_once(
        running: Hub, web_app: WebApp, proxies: list[ProxyProcess]) -> None:
    token = running.make_token("alice")
    proxy = run_proxy(proxies, hub_env(running, token, JUPYTER_PROXY_FORWARD=f"{web_app.port}:0"))
    url, local_token = app_url(proxy, web_app.port)
    seen = await use_web_app(url, local_token)
    assert seen["path"] == "/api/echo"  # at its root: jupyter-server-proxy removed the prefix
    async with browser() as client:
        async with client.get(url / "redirect" % {"token": local_token}, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/api/echo?from=redirect"


async def test_the_app_gets_a_token_of_its_own_that_reaches_only_the_server(
        running: Hub, web_app: WebApp, proxies: list[ProxyProcess]) -> None:
    """jupyter-server-proxy hands every header on to the app: the proxy's hub token (which may reach the user's
    whole account) must never be among them (attack review F1)."""
    token = running.make_token("alice")
    proxy = run_proxy(proxies, hub_env(running, token, JUPYTER_PROXY_FORWARD=f"{web_app.port}:0"))
    await use_web_app(*app_url(proxy, web_app.port))
    handed_on = {seen["authorization"] for seen in web_app.seen}
    assert handed_on and all(token not in value for value in handed_on)
    (apps_token,) = _apps_tokens(running)
    # That one server, and what the hub adds to every token: reading the owner's own name and groups.
    assert set(apps_token["scopes"]) <= {"access:servers!server=alice/", "read:users:name!user=alice",
                                         "read:users:groups!user=alice"}
    assert "access:servers!server=alice/" in apps_token["scopes"]
    assert proxy.stop() == 0
    assert _apps_tokens(running) == []  # revoked when the proxy stops


async def test_the_apps_own_cookies_go_to_it_and_the_proxys_do_not(
        running: Hub, web_app: WebApp, proxies: list[ProxyProcess]) -> None:
    """An app's session (a login, Streamlit's XSRF cookie) works on its port (attack review F2)."""
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app.port}:0"))
    url, local_token = app_url(proxy, web_app.port)
    async with browser() as client:
        async with client.post(url / "login" % {"token": local_token}, headers={"Origin": str(url.origin())}) \
                as response:
            assert response.status == 200
        async with client.get(url / "api/echo") as response:
            assert (await response.json())["session"] == "s3cr3t"
    assert all(COOKIE_NAME not in seen["cookie"] for seen in web_app.seen)


async def test_an_app_port_refuses_what_the_proxys_port_refuses(
        running: Hub, web_app: WebApp, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"), JUPYTER_PROXY_FORWARD=f"{web_app.port}:0"))
    url, local_token = app_url(proxy, web_app.port)
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
        running: Hub, web_app: WebApp, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app.port}:0/absolute"))
    url, local_token = app_url(proxy, web_app.port)
    prefix = f"/user/alice/proxy/absolute/{web_app.port}/"
    async with browser() as client:
        for path in ("api/echo", f"{prefix[1:]}api/echo"):  # the app's own links carry its whole path
            async with client.get(url / path % {"token": local_token}) as response:
                assert (await response.json())["path"] == f"{prefix}api/echo"


async def test_nothing_listening_on_the_servers_port_is_explained(
        running: Hub, web_app: WebApp, proxies: list[ProxyProcess]) -> None:
    idle = free_port()
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app.port}:0,{idle}:0"))
    url, local_token = app_url(proxy, idle)
    status_url, _ = proxy.wait_for_banner()
    async with browser() as client:
        status = f"{status_url}/jupyter-dev-proxy/api/status"
        async with client.get(status, params={"token": local_token}) as response:
            apps = {app["port"]: app for app in (await response.json())["apps"]}
        assert apps[idle]["state"] == apps[web_app.port]["state"] == "not opened yet"
        assert web_app.seen == []  # the status page never asks an app itself: its server would count it as use
        async with client.get(url % {"token": local_token}) as response:
            assert response.status == 502
            answer = await response.json()
        assert answer["reason"] == "app-not-listening"
        assert f"Nothing listens on port {idle} of your server" in answer["message"]
        app, _ = app_url(proxy, web_app.port)
        async with client.get(app / "fails") as response:  # the app's own 500 is the app's, whatever its words
            assert response.status == 500 and "database" in await response.text()
        async with client.get(status) as response:
            apps = {app["port"]: app for app in (await response.json())["apps"]}
        async with client.get(f"{status_url}/jupyter-dev-proxy/") as response:
            page = await response.text()
    assert apps[idle]["state"] == "nothing listening" and apps[web_app.port]["state"] == "answering"
    assert "Web apps on your server (2)" in page and f"port {idle}" in page and "nothing listening" in page
    assert re.fullmatch(r"http://\S+:\d+/", apps[idle]["url"])
    assert any(f"{idle}" in line and "nothing listens" in line.lower() for line in proxy.lines)
