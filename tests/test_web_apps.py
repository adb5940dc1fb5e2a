"""Web apps on the user's server (TensorBoard, Dash, Streamlit...) on local ports of their own, through a real
JupyterHub whose user servers have jupyter-server-proxy, with a small app on the server's side: a page with a
relative script, a JSON endpoint that reports what it saw, a redirect and a websocket echo."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from yarl import URL

from jupyter_dev_proxy.demo import free_port
from tests.kit.hub import Hub, hub_env, module_hub
from tests.kit.process import ProxyProcess, run_proxy

pytestmark = [pytest.mark.timeout(240), pytest.mark.waits]

hub = module_hub()

PAGE = '<!DOCTYPE html><html><head><script src="app.js"></script></head><body><a href="api/echo">echo</a></body></html>'


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _script(request: web.Request) -> web.Response:
    return web.Response(text="window.appLoaded = true;", content_type="application/javascript")


async def _echo(request: web.Request) -> web.Response:
    """What the app saw: its path and Host (and the Authorization jupyter-server-proxy passes on)."""
    return web.json_response({"path": request.raw_path, "host": request.host,
                              "authorization": request.headers.get("Authorization")})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/api/echo?from=redirect")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(f"echo: {message.data}")
    return ws


@pytest.fixture
async def web_app() -> AsyncIterator[int]:
    """The app on the server's side: on this machine, where the hub spawns the user's server."""
    app = web.Application()
    app.add_routes([web.get("/", _page), web.get("/app.js", _script), web.get("/api/echo", _echo),
                    web.get("/redirect", _redirect), web.get("/ws", _ws),
                    web.get(r"/{prefix:user/.+}/api/echo", _echo)])  # the paths an app under /absolute/ sees
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
def running(hub: Hub) -> Iterator[Hub]:
    hub.ensure_running("alice")
    yield hub


def _app_url(proxy: ProxyProcess, port: int) -> tuple[URL, str]:
    match = proxy.wait_for(rf"Web app on port {port} of your server: (http://\S+/)\?token=(\S+)")
    return URL(match.group(1)), match.group(2)


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_an_app_is_at_the_root_of_its_local_port_after_the_token_once(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    token = running.make_token("alice")
    proxy = run_proxy(proxies, hub_env(running, token, JUPYTER_PROXY_FORWARD=f"{web_app}:0"))
    url, local_token = _app_url(proxy, web_app)
    origin = str(url.origin())
    async with _browser() as browser:
        async with browser.get(url % {"token": local_token}) as response:
            assert response.status == 200 and await response.text() == PAGE
        async with browser.get(url / "app.js") as response:  # the page's relative script, with the cookie only
            assert response.status == 200 and "appLoaded" in await response.text()
        async with browser.get(url / "api/echo") as response:
            seen = await response.json()
        assert seen["path"] == "/api/echo"  # at its root: jupyter-server-proxy removed the prefix
        assert token not in json.dumps(seen)  # whatever the app echoes, the hub token does not come back
        async with browser.get(url / "redirect", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/api/echo?from=redirect"
        async with browser.ws_connect(url / "ws", origin=origin) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=30)).data == "echo: hello"


async def test_an_app_port_refuses_what_the_proxys_port_refuses(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"), JUPYTER_PROXY_FORWARD=f"{web_app}:0"))
    url, local_token = _app_url(proxy, web_app)
    async with _browser() as browser:
        async with browser.get(url / "api/echo") as response:  # no token, no cookie
            assert response.status == 403 and (await response.json())["reason"] == "token-required"
        async with browser.get(url / "api/echo" % {"token": local_token},
                               headers={"Host": f"evil.example:{url.port}"}) as response:  # DNS rebinding
            assert response.status == 403 and (await response.json())["reason"] == "host-not-allowed"
        async with browser.get(url / "api/echo" % {"token": "wrong"}) as response:
            assert response.status == 403
        async with browser.get(url % {"token": local_token}):
            pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # a page of another site, with the cookie
            async with browser.ws_connect(url / "ws", origin="https://evil.example"):
                pass
        assert refused.value.status == 403
        async with browser.get(url / "jupyter-dev-proxy/api/status") as response:  # the proxy's pages: not here
            assert "uptime_seconds" not in await response.text()


async def test_an_app_that_knows_its_whole_path_gets_it(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app}:0/absolute"))
    url, local_token = _app_url(proxy, web_app)
    prefix = f"/user/alice/proxy/absolute/{web_app}/"
    async with _browser() as browser:
        for path in ("api/echo", f"{prefix[1:]}api/echo"):  # the app's own links carry its whole path
            async with browser.get(url / path % {"token": local_token}) as response:
                assert (await response.json())["path"] == f"{prefix}api/echo"


async def test_nothing_listening_on_the_servers_port_is_explained(
        running: Hub, web_app: int, proxies: list[ProxyProcess]) -> None:
    idle = free_port()
    proxy = run_proxy(proxies, hub_env(running, running.make_token("alice"),
                                       JUPYTER_PROXY_FORWARD=f"{web_app}:0,{idle}:0"))
    url, local_token = _app_url(proxy, idle)
    async with _browser() as browser:
        async with browser.get(url % {"token": local_token}) as response:
            assert response.status == 502
            answer = await response.json()
        assert answer["reason"] == "app-not-listening"
        assert f"Nothing listens on port {idle} of your server" in answer["message"]
        status_url, _ = proxy.wait_for_banner()
        async with browser.get(f"{status_url}/jupyter-dev-proxy/api/status",
                               params={"token": local_token}) as response:
            apps = {app["port"]: app for app in (await response.json())["apps"]}
    assert apps[idle]["state"] == "nothing listening" and apps[web_app]["state"] == "answering"
    assert re.fullmatch(r"http://\S+:\d+/", apps[idle]["url"])
    assert any(f"{idle}" in line and "nothing listens" in line.lower() for line in proxy.lines)
