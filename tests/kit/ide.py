"""An IDE's session through a proxy, step by step, as ../shared/reference/seeds/jupyter-server-api-walkthrough.md
lays it out: the steps each test of a path to a hub (a base path, a company proxy, a gateway) walks, so every path
is proven with the same real traffic.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
from yarl import URL

from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, result_text


def ide_session(url: str | URL, token: str, **kwargs: Any) -> aiohttp.ClientSession:
    """A client that talks to the proxy at ``url`` as an IDE does (Authorization: token ...); ``headers`` in
    ``kwargs`` are added to that one. The steps below ask for paths relative to ``url``, which may have a path of
    its own (``http://localhost:8000/gpu/``, a profile of a proxy serving several)."""
    headers = {"Authorization": f"token {token}", **kwargs.pop("headers", {})}
    return aiohttp.ClientSession(base_url=url, headers=headers, **kwargs)


async def new_notebook(client: aiohttp.ClientSession) -> str:
    """Create an untitled notebook, rename it, save a cell into it and read it back; its path. The server answers
    the creation with its own absolute URL: the IDE must see it without the server's prefix."""
    async with client.post("api/contents", json={"type": "notebook"}) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
        assert response.headers["Location"] == f"{response.url.path}/{created['path']}"  # /api/contents/<path>
    name = f"nb-{uuid.uuid4().hex[:8]}.ipynb"
    async with client.patch(f"api/contents/{created['path']}", json={"path": name}) as response:
        assert response.status == 200
    async with client.get(f"api/contents/{created['path']}") as response:
        assert response.status == 404  # renamed: the server's own answer, passed through as it is
    async with client.get(f"api/contents/{name}") as response:
        notebook = (await response.json())["content"]
    notebook["cells"].append({"cell_type": "code", "id": "c0", "metadata": {}, "source": "1 + 1", "outputs": [],
                              "execution_count": None})
    async with client.put(f"api/contents/{name}", json={"type": "notebook", "content": notebook}) as response:
        assert response.status == 200
    async with client.get(f"api/contents/{name}") as response:
        assert (await response.json())["content"]["cells"][0]["source"] == "1 + 1"
    return name


async def kernelspec_logo(client: aiohttp.ClientSession) -> str:
    """Follow the python3 kernelspec's logo URL as the server handed it out (absolute, with its prefix)."""
    async with client.get("api/kernelspecs") as response:
        specs = await response.json()
    logo = str(specs["kernelspecs"]["python3"]["resources"]["logo-64x64"])
    async with client.get(logo) as response:
        assert response.status == 200 and (await response.read()).startswith(b"\x89PNG")
    return logo


async def start_session(client: aiohttp.ClientSession, path: str) -> dict[str, str]:
    """A notebook session on ``path`` with a python3 kernel; its ``session`` and ``kernel`` ids."""
    async with client.post("api/sessions", json={"kernel": {"name": "python3"}, "name": path, "path": path,
                                                   "type": "notebook"}) as response:
        assert response.status == 201, await response.text()
        model = await response.json()
    return {"session": model["id"], "kernel": model["kernel"]["id"]}


async def execute_on_both_protocols(client: aiohttp.ClientSession, ids: dict[str, str]) -> None:
    """``1 + 1`` → ``2`` over the kernel websocket, in the v1 binary protocol and in the legacy JSON one."""
    for protocols in ((KERNEL_PROTOCOL,), ()):
        async with client.ws_connect(f"api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                     protocols=protocols) as ws:
            assert ws.protocol == (protocols[0] if protocols else None)
            assert result_text(await KernelChannel(ws, ids["session"]).execute("1 + 1")) == "2"


async def whole_lifecycle(url: str, token: str) -> str:
    """Contents, kernelspecs and their logo, a session, execute over both protocols, delete; the logo's URL."""
    async with ide_session(url, token) as client:
        async with client.get("api/status") as response:
            assert response.status == 200
        name = await new_notebook(client)
        logo = await kernelspec_logo(client)
        ids = await start_session(client, name)
        await execute_on_both_protocols(client, ids)
        async with client.delete(f"api/sessions/{ids['session']}") as response:
            assert response.status == 204
    return logo
