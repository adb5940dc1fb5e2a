"""The hub token never reaches the IDE in an answer, however the hub sends it: whole or streamed, cut anywhere,
compressed, in a header; what is not text passes untouched. A fake hub that writes the token it was given into
its page, as a single-user server does, in every way a real server could send it."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jupyter_dev_proxy.config import Settings
from tests.kit.settings import HUB_TOKEN, LOCAL_TOKEN, Proxy, make_settings

pytestmark = pytest.mark.timeout(60)


def _expected(filler: int) -> bytes:
    return b"f" * filler + b'{"token": "' + LOCAL_TOKEN.encode() + b'"}' + b"f" * filler


async def _get(proxy: Proxy, **query: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with proxy.session(auto_decompress=False) as client:
        async with client.get("/written-token", params=query, headers={"Accept-Encoding": "gzip, deflate, br"}) \
                as response:
            return response, await response.read()


# (600 kB in 1-byte writes would take the fake hub a minute: 9-byte writes cut the token as well.)
@pytest.mark.parametrize(("filler", "chunk"), [(0, "1"), (0, "9"), (0, "65536"), (300_000, "9"), (300_000, "65536")],
                         ids=["small-1-byte-writes", "small-9-byte-writes", "small-whole", "streamed-9-byte-writes",
                              "streamed-64k-writes"])
@pytest.mark.parametrize("chunked", ["", "1"], ids=["content-length", "chunked"])
async def test_the_token_a_page_holds_arrives_as_the_proxys(echo_proxy: Proxy, filler: int, chunk: str,
                                                           chunked: str) -> None:
    response, body = await _get(echo_proxy, filler=str(filler), chunk=chunk, chunked=chunked)
    assert response.status == 200
    assert body == _expected(filler)
    assert response.headers["X-Token-Seen"] == LOCAL_TOKEN
    assert response.headers["Cache-Control"] == "no-store" and "ETag" not in response.headers


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("filler", [0, 3_000_000], ids=["small", "streamed"])
async def test_a_compressed_page_is_inflated_when_it_holds_the_token(echo_proxy: Proxy, encoding: str,
                                                                    filler: int) -> None:
    response, body = await _get(echo_proxy, filler=str(filler), encoding=encoding, chunk="4000")
    assert "Content-Encoding" not in response.headers  # sent inflated: the IDE is on this machine
    assert body == _expected(filler)


async def test_a_compressed_text_without_the_token_passes_compressed(echo_proxy: Proxy) -> None:
    async with echo_proxy.session(auto_decompress=False) as client:
        async with client.get("/gzip", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await response.read()) == b"x" * 10_000


async def test_a_text_in_a_coding_the_proxy_cannot_open_is_refused(echo_proxy: Proxy) -> None:
    response, body = await _get(echo_proxy, encoding="br")
    assert response.status == 502
    assert HUB_TOKEN.encode() not in body and b"cannot open" in body


async def test_what_is_not_text_passes_byte_for_byte(echo_proxy: Proxy) -> None:
    """Downloads of binary files are not looked into: no cost, and the length they were sent with."""
    response, body = await _get(echo_proxy, filler="300000", type="application/octet-stream", chunk="65536")
    assert response.headers["Content-Length"] == str(len(body)) and response.headers["ETag"] == '"v1"'
    assert body.startswith(b"f" * 300_000) and len(body) == 600_000 + len(b'{"token": ""}') + len(HUB_TOKEN)


async def test_the_hub_is_asked_only_for_codings_the_proxy_can_open(echo_proxy: Proxy,
                                                                   echo_seen: list[web.Request]) -> None:
    async with echo_proxy.session() as client:
        async with client.get("/echo", headers={"Accept-Encoding": "gzip, deflate, br, zstd"}):
            pass
        async with client.get("/echo", headers={"Accept-Encoding": "br"}):
            pass
    assert [r.headers["Accept-Encoding"] for r in echo_seen[-2:]] == ["gzip, deflate", "identity"]


async def test_a_head_answer_keeps_no_token_in_its_headers(echo_proxy: Proxy) -> None:
    async with echo_proxy.session() as client:
        async with client.head("/written-token") as response:
            assert response.status == 200
            assert response.headers["X-Token-Seen"] == LOCAL_TOKEN


async def test_with_the_ides_own_token_nothing_is_swapped(
        echo_upstream: Any, tls_ca: Any, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    """When the IDE's token is the hub's (no hub token set), the page holds the token the IDE gave: its own."""
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            hub_token=None))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url / "written-token" % {"token": "the-ides-hub-token"}) as response:
            assert b'"the-ides-hub-token"' in await response.read()
            assert response.headers["ETag"] == '"v1"'


def test_deflate_here_is_the_zlib_stream_http_means() -> None:
    """RFC 9110 §8.4.1.2: "deflate" is a zlib stream (what the fake hub sends), not raw deflate."""
    assert zlib.decompress(zlib.compress(b"x")) == b"x"
