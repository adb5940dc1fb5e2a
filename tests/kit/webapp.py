"""A small web app on the user's server's side (its machine: the hub spawns servers here), for the tests of
forwarded ports: a page with a relative script, a JSON endpoint that reports what it saw, a redirect, a session
cookie of its own, its own 500 and a websocket echo; and what a browser does with it through the proxy."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from jupyter_dev_proxy.demo import free_port
from tests.kit.process import ProxyProcess

PAGE = '<!DOCTYPE html><html><head><script src="app.js"></script></head><body><a href="api/echo">echo</a></body></html>'


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _script(request: web.Request) -> web.Response:
    return web.Response(text="window.appLoaded = true;", content_type="application/javascript")


# Every request's Authorization and Cookie headers as the app got them (jupyter-server-proxy hands them on).
SEEN = web.AppKey("seen", list[dict[str, str]])


async def _echo(request: web.Request) -> web.Response:
    """What the app saw: its path and Host, and its own session cookie."""
    return web.json_response({"path": request.raw_path, "host": request.host,
                              "session": request.cookies.get("app_session")})


async def _login(request: web.Request) -> web.Response:
    """The app's own session, on the path it thinks is its root."""
    response = web.json_response({"logged_in": True})
    response.set_cookie("app_session", "s3cr3t", path="/")
    return response


async def _fails(request: web.Request) -> web.Response:
    """The app's own 500, whose text happens to quote a refused connection (to its database)."""
    return web.Response(status=500, text="<h1>Error</h1><p>database: [Errno 111] Connection refused</p>",
                        content_type="text/html")


@web.middleware
async def _record(request: web.Request, handler):  # type: ignore[no-untyped-def]
    request.app[SEEN].append({"authorization": request.headers.get("Authorization", ""),
                              "cookie": request.headers.get("Cookie", "")})
    return await handler(request)


@dataclasses.dataclass(frozen=True)
class WebApp:
    port: int
    seen: list[dict[str, str]]  # the headers of each request the app got


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/api/echo?from=redirect")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(f"echo: {message.data}")
    return ws


@contextlib.asynccontextmanager
async def serve_web_app() -> AsyncIterator[WebApp]:
    """The app on 127.0.0.1 at a free port (its port on the user's server)."""
    app = web.Application(middlewares=[_record])
    app[SEEN] = []
    app.add_routes([web.get("/", _page), web.get("/app.js", _script), web.get("/api/echo", _echo),
                    web.get("/redirect", _redirect), web.get("/ws", _ws), web.post("/login", _login),
                    web.get("/fails", _fails),
                    web.get(r"/{prefix:user/.+}/api/echo", _echo)])  # the paths an app under /absolute/ sees
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield WebApp(port, app[SEEN])
    finally:
        await runner.cleanup()


def app_url(proxy: ProxyProcess, port: int) -> tuple[URL, str]:
    """The local URL and token the banner prints for the app on ``port`` of the server."""
    match = proxy.wait_for(rf"Web app on port {port} of your server: (http://\S+/)\?token=(\S+)")
    return URL(match.group(1)), match.group(2)


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def use_web_app(url: URL, token: str) -> dict[str, str]:
    """Open the app at ``url`` with the proxy's token once, as a browser would: the page, its script, its JSON and
    its websocket; what the app's JSON endpoint saw."""
    async with browser() as client:
        async with client.get(url % {"token": token}) as response:
            assert response.status == 200 and await response.text() == PAGE
        async with client.get(url / "app.js") as response:  # the page's relative script, with the cookie only
            assert response.status == 200 and "appLoaded" in await response.text()
        async with client.get(url / "api/echo") as response:
            seen = dict(await response.json())
        async with client.ws_connect(url / "ws", origin=str(url.origin())) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=30)).data == "echo: hello"
    return seen
