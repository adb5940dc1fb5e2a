"""Attacks on the relay's own HTTP/1.1 client (hub_http, commit 26f0cba): hubs that frame their answers oddly,
answers the hub sends unasked, informational answers, and IDE request bodies that aiohttp's server changes before
the relay sees them. Raw hubs show the bytes on the wire; each test names what must hold."""

from __future__ import annotations

import asyncio
import gzip
import random
from collections.abc import Awaitable, Callable

import pytest

from jupyter_dev_proxy import transport
from tests.kit.fakehubs import fake_hub
from tests.kit.rawhttp import exchange, request_head
from tests.kit.settings import LOCAL_TOKEN, Proxy, make_settings

StartProxy = Callable[..., Awaitable[Proxy]]

HubRequest = tuple[list[str], bytes]


async def _read_request(reader: asyncio.StreamReader) -> HubRequest:
    """One request off the wire: its head's lines and its body (by Content-Length, none without one)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
    length = next((int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:")), 0)
    return head, await reader.readexactly(length)


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _answer_naming(head: list[str]) -> bytes:
    """An answer that says which request it answers: a mix-up between requests shows in the body."""
    return _answer(b"answer to " + head[0].split()[1].encode())


# What a hub (or something in front of it) would slip in as a second answer on the connection.
_SMUGGLED = _answer(b"SMUGGLED")


async def test_an_answer_longer_than_its_length_never_answers_the_next_request(start_proxy: StartProxy) -> None:
    """The bytes past the Content-Length form a whole answer: the next request on that connection would take it
    for its own. The connection must be closed instead of pooled."""
    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, _ = await _read_request(reader)
            writer.write(_answer_naming(head) + _SMUGGLED)
            while True:
                head, _ = await _read_request(reader)
                writer.write(_answer_naming(head))
        except asyncio.IncompleteReadError:
            writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        async with proxy.session() as ide:
            for path in ("/api/first", "/api/second"):
                async with ide.get(path) as response:
                    assert await response.read() == b"answer to /user/alice" + path.encode()


async def test_an_answer_the_hub_sends_unasked_on_an_idle_connection_never_answers_the_next_request(
        start_proxy: StartProxy) -> None:
    """aiohttp's session (the relay's client before 26f0cba) handed such an answer to the next request sent on the
    pooled connection: one request's answer given to another. hub_http must keep not doing that."""
    first_answered, unasked_sent = asyncio.Event(), asyncio.Event()

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, _ = await _read_request(reader)
            writer.write(_answer_naming(head))
            await first_answered.wait()  # the proxy is done with the answer: the connection waits in its pool
            writer.write(_SMUGGLED)
            await writer.drain()
            unasked_sent.set()
            while True:
                head, _ = await _read_request(reader)
                writer.write(_answer_naming(head))
        except asyncio.IncompleteReadError:
            writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        async with proxy.session() as ide:
            async with ide.get("/api/first") as response:
                assert await response.read() == b"answer to /user/alice/api/first"
            first_answered.set()
            await unasked_sent.wait()
            async with ide.get("/api/second") as response:
                assert await response.read() == b"answer to /user/alice/api/second"


_INFORMATIONAL = {
    "100-continue": b"HTTP/1.1 100 Continue\r\n\r\n",
    "103-early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </static/lab/main.js>; rel=preload; as=script\r\n\r\n",
}


@pytest.mark.parametrize("informational", sorted(_INFORMATIONAL))
@pytest.mark.parametrize("together", [True, False], ids=["same-write", "separate-writes"])
async def test_an_informational_answer_is_skipped_and_the_answer_after_it_relayed(
        start_proxy: StartProxy, informational: str, together: bool) -> None:
    """A front of the hub speaking HTTP/1.1 may send 103 Early Hints before a page (Node's writeEarlyHints, Akamai
    for navigations), and some a stray 100 Continue: aiohttp's session read past them to the answer, so the relay
    must too, never pass the 1xx on as the answer, nor fail the request."""
    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await _read_request(reader)
        writer.write(_INFORMATIONAL[informational])
        if not together:
            await writer.drain()
        writer.write(_answer_naming(head))
        writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        answer = await exchange(proxy.url.port, request_head("GET", "/lab", LOCAL_TOKEN))
    assert (answer.status, answer.body) == (200, b"answer to /user/alice/lab")


async def test_a_hub_silent_after_an_informational_answer_gets_the_answer_timeout(
        start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 504 answer timeout holds for the answer that is to follow a 1xx, as for any answer's head."""
    monkeypatch.setattr(transport, "ANSWER_TIMEOUT_SECONDS", 0.3)

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_INFORMATIONAL["100-continue"])
        await reader.read()  # and nothing more
        writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        answer = await exchange(proxy.url.port, request_head("GET", "/api/status", LOCAL_TOKEN), timeout=5)
    assert (answer.status, answer.json()["reason"]) == (504, "hub-timeout")


async def test_an_answer_with_no_header_at_all_is_relayed(start_proxy: StartProxy) -> None:
    """'HTTP/1.1 204 No Content' and nothing else is a whole, valid answer; the header check must not take an empty
    set of headers for a bad one (it raised StopIteration: a 500 proxy-bug and a traceback)."""
    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        answer = await exchange(proxy.url.port, request_head("DELETE", "/api/sessions/s1", LOCAL_TOKEN))
    assert answer.status == 204


def _compressed_bodies() -> dict[str, bytes]:
    notebook = b'{"type": "notebook", "content": {"cells": []}}'
    return {
        "small": gzip.compress(notebook),
        # Under 64 KiB as sent (read whole, in hand), over aiohttp's 1 MiB request limit once inflated.
        "inflates-past-1MiB": gzip.compress(notebook + b" " * (3 * 1024 * 1024)),
        # Over 64 KiB as sent: streamed through aiohttp's session.
        "streamed": gzip.compress(random.Random(0).randbytes(100 * 1024) + b"\0" * (100 * 1024)),
    }


@pytest.mark.parametrize("kind", sorted(_compressed_bodies()))
async def test_a_compressed_upload_reaches_the_hub_as_sent(start_proxy: StartProxy, kind: str) -> None:
    """An IDE's body with Content-Encoding: gzip must reach the hub as it was sent, with its Content-Encoding and
    its length, as it would reach a Jupyter server the IDE talked to directly. The proxy's IDE-side server inflated
    it (aiohttp's auto_decompress) and forwarded the inflated bytes still labelled gzip: in hand with their new
    length, streamed cut to the old one; and a small one that inflates past 1 MiB failed as a 500 proxy-bug."""
    body = _compressed_bodies()[kind]
    seen: list[HubRequest] = []

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # every request on the connection: a body the proxy sent too long shows as another
                seen.append(await _read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        except asyncio.IncompleteReadError:
            writer.close()

    async with fake_hub(hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
        answer = await exchange(proxy.url.port, request_head(
            "PUT", "/api/contents/x.ipynb", LOCAL_TOKEN, "Content-Type: application/json", "Content-Encoding: gzip",
            f"Content-Length: {len(body)}") + body)
    assert answer.status == 200, answer.body
    [(head, received)] = seen
    assert "Content-Encoding: gzip" in head and f"Content-Length: {len(body)}" in head
    assert received == body
