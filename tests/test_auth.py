"""Browser pages on other origins: CORS off by default, preflights answered by the proxy itself, a cross-origin
request still needing the proxy's token, and websockets accepted only from the proxy's own or an allowed origin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jupyter_dev_proxy.config import CorsPolicy, Settings
from tests.kit.settings import LOCAL_TOKEN, Proxy, make_settings

StartProxy = Callable[[Settings], Awaitable[Proxy]]
DASHBOARD = "https://dash.example.org"


@pytest.fixture
async def cors_proxy(echo_upstream: Any, tls_ca: Any, start_proxy: StartProxy) -> Proxy:
    policy = CorsPolicy(frozenset({DASHBOARD}), "Authorization, Content-Type", "GET, POST, PUT", credentials=False)
    return await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                           cors=policy))


async def test_a_preflight_from_an_allowed_origin_is_answered_by_the_proxy(
        cors_proxy: Proxy, echo_seen: list[web.Request]) -> None:
    async with aiohttp.ClientSession() as browser:
        async with browser.options(cors_proxy.url / "api/contents", headers={
                "Origin": DASHBOARD, "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization"}) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
            assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT"
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        async with browser.options(cors_proxy.url / "api/contents", headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
    assert echo_seen == []  # preflights never reach the hub


async def test_a_cross_origin_request_still_needs_the_token_and_its_answer_is_readable(
        cors_proxy: Proxy, echo_seen: list[web.Request]) -> None:
    async with aiohttp.ClientSession() as browser:
        async with browser.get(cors_proxy.url / "api/contents", headers={"Origin": DASHBOARD}) as response:
            assert response.status == 403  # no token: refused, and the page may read why
            assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
        async with browser.get(cors_proxy.url / "api/contents", headers={
                "Origin": DASHBOARD, "Authorization": f"token {LOCAL_TOKEN}"}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == DASHBOARD
        async with browser.get(cors_proxy.url / "api/contents", headers={
                "Origin": "https://evil.example", "Authorization": f"token {LOCAL_TOKEN}"}) as response:
            assert response.status == 403  # another page, even with the token: refused before the hub
            assert "Access-Control-Allow-Origin" not in response.headers  # the browser keeps it from the page
    assert len(echo_seen) == 1


@pytest.mark.parametrize("origin,accepted", [(None, True), (DASHBOARD, True), ("https://evil.example", False),
                                             ("null", False)])
async def test_a_websocket_is_accepted_from_an_allowed_origin_only(
        cors_proxy: Proxy, echo_seen: list[web.Request], origin: str | None, accepted: bool) -> None:
    headers = {"Origin": origin} if origin else {}
    async with cors_proxy.session() as client:
        if accepted:
            async with client.ws_connect("/ws", headers=headers) as ws:
                await ws.send_str("hello")
                assert await ws.receive_str() == "hello"
        else:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/ws", headers=headers)
            assert refused.value.status == 403
            assert echo_seen == []


async def test_without_cors_settings_a_websocket_from_another_page_is_refused_and_the_proxys_own_accepted(
        echo_proxy: Proxy, echo_seen: list[web.Request]) -> None:
    async with echo_proxy.session() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers={"Origin": DASHBOARD})
        assert refused.value.status == 403
        async with client.ws_connect("/ws", headers={"Origin": str(echo_proxy.url)}) as ws:
            await ws.send_str("same origin")
            assert await ws.receive_str() == "same origin"


async def test_the_hubs_own_cors_headers_never_reach_the_ide(
        aiohttp_server: Callable[..., Awaitable[Any]], start_proxy: StartProxy) -> None:
    async def permissive(request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Access-Control-Allow-Origin": "*",
                                              "Access-Control-Allow-Credentials": "true"})
    app = web.Application()
    app.router.add_get("/user/alice/api/contents", permissive)
    hub = await aiohttp_server(app)
    proxy = await start_proxy(make_settings(f"http://127.0.0.1:{hub.port}"))
    async with proxy.session() as ide:
        async with ide.get("/api/contents", headers={"Origin": str(proxy.url.origin())}) as response:
            assert response.status == 200
            assert not [name for name in response.headers if name.lower().startswith("access-control-")]
