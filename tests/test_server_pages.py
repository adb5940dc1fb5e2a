"""The server's own pages (JupyterLab, Notebook 7) through the proxy, as a browser fetches them, against a real
jupyter_server with JupyterLab: the hub token the server writes into the page is the proxy's when it arrives, and
the page's own calls work with it. (test_lab_in_a_browser.py drives a real browser through a real hub.)"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest

from jupyter_dev_proxy.demo import DemoServer
from jupyter_dev_proxy.token_swap import page_token
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, result_text
from tests.kit.settings import Proxy

pytestmark = pytest.mark.timeout(120)

_CONFIG = re.compile(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)

# What a browser sends when the user opens a URL.
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Accept": "text/html,*/*;q=0.8"}


async def _page(proxy: Proxy, path: str) -> tuple[aiohttp.ClientResponse, str, aiohttp.CookieJar]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(proxy.url / path % {"token": proxy.settings.local_token}, headers=NAVIGATE) as response:
            return response, await response.text(), jar


def _page_token(proxy: Proxy, server: DemoServer) -> str:
    return page_token(proxy.settings.local_token, server.token)


def _page_config(page: str) -> dict[str, Any]:
    found = _CONFIG.search(page)
    assert found, page[:2000]
    return dict(json.loads(found.group(1)))


@pytest.mark.parametrize("path", ["lab", "lab/tree/x.ipynb", "doc/tree/x.ipynb", "tree", "notebooks/x.ipynb"])
async def test_the_page_carries_the_proxys_token_and_never_the_hubs(
        jupyter_proxy: Proxy, jupyter_upstream: DemoServer, path: str) -> None:
    response, page, _ = await _page(jupyter_proxy, path)
    assert response.status == 200
    assert jupyter_upstream.token not in page  # the token the proxy gives the server is the hub token
    token = _page_config(page)["token"]
    # A stand-in for the proxy's token, of the hub token's length: every answer keeps its length.
    assert token == _page_token(jupyter_proxy, jupyter_upstream) and len(token) == len(jupyter_upstream.token)
    assert token != jupyter_proxy.settings.local_token
    # A page holding a credential is kept by no cache (a cached one would hold another run's token).
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    assert jupyter_upstream.token not in str(list(response.headers.items()))


async def test_the_pages_calls_and_websockets_work_with_the_token_it_was_given(
        jupyter_proxy: Proxy, jupyter_upstream: DemoServer) -> None:
    """What JupyterLab does with its page config: calls under its baseUrl with the token as a header, a kernel
    websocket with it in ?token= and the page's Origin."""
    _, page, jar = await _page(jupyter_proxy, "lab")
    config = _page_config(page)
    base, token = config["baseUrl"], config["token"]
    assert base == "/user/alice/"
    origin = str(jupyter_proxy.url.origin())
    async with aiohttp.ClientSession(base_url=jupyter_proxy.url, cookie_jar=jar) as lab:
        headers = {"Authorization": f"token {token}", "Origin": origin}
        async with lab.get(f"{base}api/contents", headers=headers) as response:
            assert response.status == 200
        async with lab.post(f"{base}api/kernels", headers=headers, json={"name": "python3"}) as response:
            assert response.status == 201
            kernel = (await response.json())["id"]
        async with lab.get(f"{base}lab/api/settings", headers=headers) as response:  # a JupyterLab extension's API
            assert response.status == 200
            assert jupyter_upstream.token not in await response.text()
        async with lab.ws_connect(f"{base}api/kernels/{kernel}/channels?session_id=s1&token={token}",
                                  protocols=(KERNEL_PROTOCOL,), origin=origin) as ws:
            assert result_text(await KernelChannel(ws, "s1").execute("6 * 7")) == "42"
        async with lab.delete(f"{base}api/kernels/{kernel}", headers=headers) as response:
            assert response.status == 204


async def test_a_terminal_of_the_page_runs_commands(jupyter_proxy: Proxy) -> None:
    """JupyterLab's terminal: created by an API call, then a websocket under /terminals/ with the page's token."""
    _, page, jar = await _page(jupyter_proxy, "lab")
    config = _page_config(page)
    base, token = config["baseUrl"], config["token"]
    origin = str(jupyter_proxy.url.origin())
    async with aiohttp.ClientSession(base_url=jupyter_proxy.url, cookie_jar=jar) as lab:
        headers = {"Authorization": f"token {token}", "Origin": origin}
        async with lab.post(f"{base}api/terminals", headers=headers) as response:
            assert response.status == 200
            name = (await response.json())["name"]
        async with lab.ws_connect(f"{base}terminals/websocket/{name}?token={token}", origin=origin) as ws:
            await ws.send_json(["stdin", "echo made-$((6 * 7))\r"])
            seen = ""
            while "made-42" not in seen:
                kind, *text = await ws.receive_json(timeout=30)
                seen += "".join(text) if kind == "stdout" else ""
        async with lab.delete(f"{base}api/terminals/{name}", headers=headers) as response:
            assert response.status == 204


async def test_the_static_files_of_the_page_arrive_whole(jupyter_proxy: Proxy) -> None:
    """The page's scripts are text the proxy looks into: large ones arrive whole, byte for byte as served."""
    _, page, jar = await _page(jupyter_proxy, "lab")
    scripts = re.findall(r'src="([^"]+\.js[^"]*)"', page)
    assert scripts
    async with aiohttp.ClientSession(base_url=jupyter_proxy.url, cookie_jar=jar) as lab:
        for script in scripts:
            async with lab.get(script) as response:
                assert response.status == 200, script
                body = await response.read()
            assert body.rstrip().endswith((b";", b"}", b")")) and len(body) > 1000


@pytest.mark.parametrize(("path", "on_the_hub"), [("hub/home", "hub/home"), ("hub/logout", "hub/logout"),
                                                  ("user/bob/lab", None), ("hub", "hub/")])
async def test_a_link_into_the_hub_opens_a_page_that_leads_there(jupyter_proxy: Proxy, path: str,
                                                                 on_the_hub: str | None) -> None:
    """JupyterLab's File → Hub Control Panel and Log Out lead to the hub's pages: a browser following them gets a
    page of the proxy's with the link to the page on the hub (which the proxy never serves)."""
    _, _, jar = await _page(jupyter_proxy, "lab")
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{jupyter_proxy.url}/{path}", headers=NAVIGATE) as response:
            page = await response.text()
    if on_the_hub is None:  # another user's server is refused as before, whoever asks
        assert response.status == 403 and response.content_type == "application/json"
        return
    assert response.status == 404 and response.content_type == "text/html"
    hub_page = f"{jupyter_proxy.settings.hub.origin}/{on_the_hub}"
    assert f'<a href="{hub_page}"' in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert jupyter_proxy.settings.local_token not in page


async def test_a_program_asking_for_the_hub_gets_jupyters_json(jupyter_proxy: Proxy) -> None:
    """VS Code probes /hub/api to tell a hub from a server: it gets JSON without a version, as before."""
    async with jupyter_proxy.session() as client:
        for path in ("/hub/api", "/hub/home"):
            async with client.get(path) as response:
                assert response.status == 404
                assert (await response.json())["reason"] == "outside-your-server"


async def test_a_byte_range_of_a_text_file_arrives_as_the_server_cut_it(
        jupyter_proxy: Proxy, jupyter_upstream: DemoServer) -> None:
    """Range requests (a browser resuming a download, a viewer paging a log) get the exact bytes asked for."""
    text = "".join(f"line {n}\n" for n in range(20_000)).encode()
    (jupyter_upstream.root_dir / "ranged.txt").write_bytes(text)
    async with jupyter_proxy.session() as client:
        for first, last in ((10, 19), (100_000, 150_000)):
            async with client.get("/files/ranged.txt", headers={"Range": f"bytes={first}-{last}"}) as response:
                assert response.status == 206
                assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(text)}"
                assert await response.read() == text[first:last + 1]


async def test_the_status_page_links_to_the_servers_pages_in_the_same_browser(jupyter_proxy: Proxy,
                                                                              jupyter_upstream: DemoServer) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=jupyter_proxy.url, cookie_jar=jar) as browser:
        async with browser.get("/jupyter-dev-proxy/", params={"token": jupyter_proxy.settings.local_token},
                               headers=NAVIGATE) as response:
            status_page = await response.text()
        link = re.search(r'<a href="([^"]+)"[^>]*>Your server\'s pages', status_page)
        assert link, status_page
        async with browser.get(link.group(1), headers=NAVIGATE) as response:  # the status page's cookie is enough
            assert response.status == 200 and response.url.path == "/lab"  # the server's default page, as on a hub
            assert jupyter_upstream.token not in await response.text()
