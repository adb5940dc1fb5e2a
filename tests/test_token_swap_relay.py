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
from jupyter_dev_proxy.token_swap import page_token
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
    if not filler and not chunked:  # read whole: known to hold the token, so no cache keeps it
        assert response.headers["Cache-Control"] == "no-store" and "ETag" not in response.headers
        assert response.headers["Content-Length"] == str(len(body))
    else:  # streamed: sent before the token is seen; a large text keeps its validators (scripts stay cached)
        assert response.headers["ETag"] == '"v1"' and "Content-Length" not in response.headers


# JupyterHub's tokens: 32 hex digits.
HEX_HUB_TOKEN = "8f14e45fceea167a5a36dedd4bea2543"


@pytest.mark.parametrize("filler", [0, 300_000], ids=["small", "streamed"])
async def test_for_a_hub_token_of_hex_digits_the_page_gets_a_stand_in_of_its_length(
        echo_upstream: Any, tls_ca: Any, start_proxy: Callable[[Settings], Awaitable[Proxy]], filler: int) -> None:
    """Every answer keeps its length (a download its progress, a HEAD the GET's headers), and the stand-in is
    accepted as the proxy's token, by itself and in no other spelling."""
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            hub_token=HEX_HUB_TOKEN))
    response, body = await _get(proxy, filler=str(filler), chunk="65536")
    stand_in = page_token(LOCAL_TOKEN, HEX_HUB_TOKEN)
    assert len(stand_in) == len(HEX_HUB_TOKEN) and stand_in != LOCAL_TOKEN
    assert body == _expected(filler).replace(LOCAL_TOKEN.encode(), stand_in.encode())
    assert response.headers["Content-Length"] == str(len(body))
    async with aiohttp.ClientSession() as client:
        async with client.head(proxy.url / "written-token", params={"filler": str(filler)},
                               headers={"Authorization": f"token {stand_in}"}) as head:
            assert head.status == 200 and head.headers["Content-Length"] == str(len(body))
        for wrong in (stand_in.upper(), stand_in[:-1] + ("0" if stand_in[-1] != "0" else "1"), stand_in[:20]):
            async with client.get(proxy.url / "echo", headers={"Authorization": f"token {wrong}"}) as refused:
                assert refused.status == 403


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


@pytest.mark.parametrize("encoding", ["raw-deflate", "gzip-cut", "gzip-bad-crc", "gzip-twice"])
async def test_a_small_compressed_text_that_does_not_inflate_cleanly_is_refused(echo_proxy: Proxy,
                                                                               encoding: str) -> None:
    """Not passed on as it came: a browser's lenient decoder reads such bodies, hub token included (review)."""
    response, body = await _get(echo_proxy, encoding=encoding)
    assert response.status == 502 and b"hub-bad-answer" in body
    assert HUB_TOKEN.encode() not in body


@pytest.mark.parametrize("filler", [10, 300_000], ids=["small", "streamed"])
async def test_gzip_members_one_after_another_are_all_inflated(echo_proxy: Proxy, filler: int) -> None:
    """RFC 1952: a gzip body may be several members; the token in the second is swapped, none is dropped."""
    response, body = await _get(echo_proxy, filler=str(filler), encoding="gzip-members", chunk="4000")
    assert response.status == 200 and "Content-Encoding" not in response.headers
    assert body == _expected(filler)


async def test_identity_beside_a_coding_is_no_coding(echo_proxy: Proxy) -> None:
    response, body = await _get(echo_proxy, filler="10", encoding="gzip-identity")
    assert response.status == 200 and body == _expected(10)


async def test_an_empty_compressed_text_is_an_empty_answer(echo_proxy: Proxy) -> None:
    async with echo_proxy.session(auto_decompress=False) as client:
        async with client.get("/empty-gzip") as response:
            assert response.status == 200 and await response.read() == b""
