"""The relay's own HTTP/1.1 exchanges with the hub (hub_http): what aiohttp's client did for it and it now does
itself — the head it writes, informational answers, bodies without a length, HEAD, keep-alive and retiring idle
connections — checked against raw hubs that show the bytes on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from jupyter_dev_proxy import transport
from tests.kit.fakehubs import CountingUpstream, fake_hub
from tests.kit.rawhttp import exchange, request_head
from tests.kit.settings import HUB_TOKEN, LOCAL_TOKEN, Proxy, make_settings

StartProxy = Callable[..., Awaitable[Proxy]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[list[str], bytes]:
    """One request off the wire: its head's lines and its body (by Content-Length)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
    length = next((int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:")), 0)
    return head, await reader.readexactly(length)


async def test_a_small_save_an_empty_post_and_a_get_reach_the_hub_with_exactly_their_bodies(
        start_proxy: StartProxy) -> None:
    seen: list[tuple[list[str], bytes]] = []

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await _read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        except asyncio.IncompleteReadError:
            writer.close()

    body = bytes(range(256)) * 40  # 10 KiB: read whole and sent with the head
    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}"))
        async with proxy.session() as ide:
            for method, data in (("PUT", body), ("POST", None), ("GET", None)):
                async with ide.request(method, "/api/contents/x.ipynb", data=data) as response:
                    assert response.status == 200
    (put_head, put_body), (post_head, post_body), (get_head, get_body) = seen
    assert put_head[0] == "PUT /user/alice/api/contents/x.ipynb HTTP/1.1" and put_body == body
    assert f"Content-Length: {len(body)}" in put_head and f"Host: 127.0.0.1:{port}" in put_head
    assert f"Authorization: token {HUB_TOKEN}" in put_head
    assert "Content-Length: 0" in post_head and post_body == b""
    assert not [line for line in get_head if line.lower().startswith(("content-length", "transfer-encoding"))]
    assert sum(line.lower().startswith("host:") for line in put_head + post_head + get_head) == 3


async def test_an_informational_answer_is_never_passed_on_as_the_answer(start_proxy: StartProxy) -> None:
    """A 103 (a gateway's Early Hints) is skipped, as aiohttp's client session skipped it: the IDE gets the answer
    that follows, never the 103 as its answer."""
    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </static/app.js>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # the answer itself comes later
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"ok\": true}")
        await reader.read()
        writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        answer = await exchange(proxy.url.port, request_head("GET", "/api/status", LOCAL_TOKEN))
    assert (answer.status, answer.json()) == (200, {"ok": True})


async def test_an_answer_without_a_length_is_read_to_the_close_and_its_connection_not_reused(
        start_proxy: StartProxy) -> None:
    connections = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"all of it " * 1000)
        await writer.drain()
        writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        async with proxy.session() as ide:
            for _ in range(2):
                async with ide.get("/files/notes.txt") as response:
                    assert (response.status, await response.read()) == (200, b"all of it " * 1000)
    assert connections == 2


async def test_a_head_answer_has_no_body_and_its_connection_serves_the_next_request(start_proxy: StartProxy) -> None:
    lines: list[str] = []

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, _ = await _read_request(reader)
                lines.append(head[0])
                length = b"Content-Length: 5000\r\n"  # the GET's length, and no body after a HEAD's head
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + length + b"\r\n")
                if head[0].startswith("GET"):
                    writer.write(b"x" * 5000)
        except asyncio.IncompleteReadError:
            writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        async with proxy.session() as ide:
            async with ide.head("/files/data.bin") as response:
                assert (response.status, response.headers["Content-Length"]) == (200, "5000")
            async with ide.get("/files/data.bin") as response:
                assert await response.read() == b"x" * 5000
    assert lines == ["HEAD /user/alice/files/data.bin HTTP/1.1", "GET /user/alice/files/data.bin HTTP/1.1"]


async def test_requests_one_after_another_share_a_connection_which_is_closed_once_idle(
        counting_hub: CountingUpstream, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "IDLE_CONNECTION_SECONDS", 0.3)
    assert counting_hub._server is not None
    port = counting_hub._server.sockets[0].getsockname()[1]
    proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
    async with proxy.session() as ide:
        for _ in range(5):
            async with ide.get("/api/contents") as response:
                assert response.status == 200
    assert {number for number, _, _ in counting_hub.requests} == {0}  # one connection for all five
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while 0 not in counting_hub.closed:  # retired by the proxy, with no request to notice it is old
        assert loop.time() < deadline, "the idle connection was never closed"
        await asyncio.sleep(0.05)
    assert counting_hub.accepted_at == counting_hub.accepted_at[:1]  # and no other was opened
