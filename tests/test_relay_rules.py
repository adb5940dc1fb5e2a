"""Header, body and websocket rules, checked by what really reached an echo upstream over TLS."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from jupyter_dev_proxy import transport
from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.timeouts import timeout
from jupyter_dev_proxy.ws_frames import accept_key
from tests.kit.fakehubs import CLOSE_CODES, StaleConnectionUpstream, echo_app, fake_hub
from tests.kit.frames import read_handshake_key, switching_protocols
from tests.kit.kernel import KERNEL_PROTOCOL
from tests.kit.settings import HUB_TOKEN, LOCAL_TOKEN, Proxy, make_settings


def _headers(echo: dict[str, Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


async def test_hub_token_replaces_the_clients_credentials(echo_proxy: Proxy, echo_seen: list[web.Request]) -> None:
    async with echo_proxy.session() as client:
        raw = URL(f"{echo_proxy.url}/echo/a%20b?x=1&token={LOCAL_TOKEN}&y=%2F", encoded=True)
        async with client.get(raw, headers={
            "Cookie": "jupyterhub-session=abc", "Origin": str(echo_proxy.url.origin()),
            "Referer": f"http://localhost:8888/tree?token={LOCAL_TOKEN}", "Connection": "keep-alive, X-Private",
            "X-Private": "hop", "Keep-Alive": "timeout=5", "TE": "trailers", "X-Kept": "1",
        }) as response:
            echo = await response.json()
    headers = _headers(echo)
    assert echo["raw_path"] == "/user/alice/echo/a%20b?x=1&y=%2F"
    assert echo_seen[-1].headers.getall("Authorization") == [f"token {HUB_TOKEN}"]
    assert headers["authorization"] == [f"token {LOCAL_TOKEN}"]  # the echo, as the IDE reads it: no hub token
    for dropped in ("cookie", "origin", "referer", "x-private", "keep-alive", "te"):
        assert dropped not in headers, dropped
    assert headers["x-kept"] == ["1"]


async def test_token_in_query_alone_is_accepted_and_never_forwarded(echo_proxy: Proxy,
                                                                     echo_seen: list[web.Request]) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(echo_proxy.url / "api/kernels" % {"token": LOCAL_TOKEN}) as response:
            echo = await response.json()
    assert echo["raw_path"] == "/user/alice/api/kernels"
    arrived = echo_seen[-1]
    assert LOCAL_TOKEN not in arrived.raw_path + str(list(arrived.headers.items()))


async def test_without_a_hub_token_the_ides_token_is_sent_as_a_header(
        echo_upstream: Any, tls_ca: Any, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            hub_token=None))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url / "api/status" % {"token": "the-ides-hub-token", "v": "1"}) as response:
            echo = await response.json()
        async with client.get(proxy.url / "api/status") as response:
            assert response.status == 403
    assert _headers(echo)["authorization"] == ["token the-ides-hub-token"]
    assert echo["raw_path"] == "/user/alice/api/status?v=1"


@pytest.mark.parametrize("how", ["none", "wrong-header", "wrong-query", "wrong-cookie"])
async def test_requests_without_the_local_token_are_refused_locally(
        echo_proxy: Proxy, echo_seen: list[web.Request], how: str) -> None:
    kwargs: dict[str, Any] = {
        "none": {},
        "wrong-header": {"headers": {"Authorization": "token not-it"}},
        "wrong-query": {"params": {"token": "not-it"}},
        "wrong-cookie": {"headers": {"Cookie": "jupyter-dev-proxy-session=not-it"}},
    }[how]
    async with aiohttp.ClientSession() as client:
        async with client.get(echo_proxy.url / "api/contents", **kwargs) as response:
            assert response.status == 403
            body = await response.json()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(echo_proxy.url / "ws", **kwargs)
    assert refused.value.status == 403
    assert set(body) == {"message", "reason"} and "token" in body["message"]
    assert echo_seen == []


async def test_a_browser_keeps_access_through_a_cookie_but_other_sites_do_not(echo_proxy: Proxy) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(echo_proxy.url / "tree" % {"token": LOCAL_TOKEN}) as response:
            assert response.status == 200
            cookie = response.cookies["jupyter-dev-proxy-session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with browser.get(echo_proxy.url / "api/contents") as response:
            assert response.status == 200
        for origin in ("https://evil.example", "http://[::1"):  # the second is not even a URL
            async with browser.post(echo_proxy.url / "api/contents", headers={"Origin": origin}) as response:
                assert response.status == 403
                assert (await response.json())["reason"] == "cross-origin"


async def test_redirects_are_mapped_back_and_never_leave_the_server(echo_proxy: Proxy) -> None:
    hub = f"https://jupyterhub:{echo_proxy.settings.hub.origin.port}"
    cases = {
        f"{hub}/user/alice/tree?x=1": (302, "/tree?x=1"),
        "/user/alice/lab": (302, "/lab"),
        "/hub/user/alice/api/kernels": (424, None),
        "/hub/login?next=%2Fuser%2Falice%2F": (403, None),
        "https://evil.example/user/alice/": (403, None),
    }
    async with echo_proxy.session() as client:
        for target, (status, location) in cases.items():
            async with client.get("/redirect", params={"to": target}, allow_redirects=False) as response:
                assert response.status == status, target
                assert response.headers.get("Location") == location
                if location is None:
                    assert set(await response.json()) == {"message", "reason"}


async def test_cookie_paths_are_mapped_and_foreign_cookies_dropped(echo_proxy: Proxy) -> None:
    async with echo_proxy.session() as client:
        async with client.get("/cookies") as response:
            cookies = response.headers.getall("Set-Cookie")
    assert cookies == ["own=1; Path=/api; HttpOnly", "root=3; Path=/"]


async def test_compressed_bodies_pass_untouched(echo_proxy: Proxy) -> None:
    async with echo_proxy.session(auto_decompress=False) as client:
        async with client.get("/gzip", headers={"Accept-Encoding": "gzip"}) as response:
            body = await response.read()
            assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"x" * 10_000


async def test_head_answers_without_a_body(echo_proxy: Proxy) -> None:
    async with echo_proxy.session() as client:
        async with client.head("/echo") as response:
            assert response.status == 200
            assert await response.read() == b""


async def _generated(size: int, block: int = 256 * 1024) -> AsyncIterator[bytes]:
    chunk = bytes(range(256)) * (block // 256)
    while size > 0:
        yield chunk[:size]
        size -= block


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_request_bodies_stream_through_intact(echo_proxy: Proxy, chunked: bool) -> None:
    size = 24 * 1024 * 1024
    expected = hashlib.sha256()
    async for chunk in _generated(size):
        expected.update(chunk)
    headers = {} if chunked else {"Content-Length": str(size)}
    async with echo_proxy.session() as client:
        async with client.put("/api/contents/big.bin", data=_generated(size), headers=headers) as response:
            echo = await response.json()
    assert (echo["body_len"], echo["body_sha256"]) == (size, expected.hexdigest())
    assert ("transfer-encoding" in _headers(echo)) is chunked


@pytest.mark.parametrize("token,first_answer", [(LOCAL_TOKEN, "100"), ("wrong", "403")])
async def test_expect_100_continue_is_answered_only_for_an_allowed_request(
        echo_proxy: Proxy, token: str, first_answer: str) -> None:
    """curl sends Expect: 100-continue for uploads over 1 MiB and waits for the go-ahead before the body."""
    body = b"x" * 2_000_000
    reader, writer = await asyncio.open_connection(echo_proxy.url.host, echo_proxy.url.port)
    try:
        writer.write((f"PUT /api/contents/big.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: token {token}\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
        async with timeout(5):
            status_line = await reader.readline()
            assert status_line.split()[1].decode() == first_answer
            if first_answer != "100":
                return
            assert await reader.readline() == b"\r\n"
            writer.write(body)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            echo = json.loads(await reader.readexactly(length))
        assert echo["body_len"] == len(body) and "expect" not in _headers(echo)
    finally:
        writer.close()


async def test_chunked_downloads_arrive_complete(echo_proxy: Proxy) -> None:
    size = 5 * 1024 * 1024 + 17
    async with echo_proxy.session() as client:
        async with client.get("/stream", params={"size": str(size)}) as response:
            body = await response.read()
    assert len(body) == size


async def test_an_answer_broken_off_by_the_hub_reaches_the_ide_broken(
        echo_proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    async with echo_proxy.session() as client:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with client.get("/break-off") as response:
                await response.read()
        async with client.get("/echo") as response:  # the proxy is still fine
            assert response.status == 200
    assert any("broke off" in r.getMessage() for r in caplog.records)


async def test_websocket_keeps_the_kernel_subprotocol_and_relays_both_frame_kinds(
        echo_proxy: Proxy) -> None:
    async with echo_proxy.session() as client:
        async with client.ws_connect("/ws?report=1&token=" + LOCAL_TOKEN, protocols=(KERNEL_PROTOCOL, "other"),
                                     max_msg_size=0) as ws:
            assert ws.protocol == KERNEL_PROTOCOL
            report = await ws.receive_json()
            assert report["protocol"] == KERNEL_PROTOCOL
            assert report["raw_path"] == "/user/alice/ws?report=1"
            handshake = _headers(report)
            assert handshake["authorization"] == [f"token {HUB_TOKEN}"]
            assert "origin" not in handshake and "cookie" not in handshake
            frames: list[str | bytes] = ["text é", b"\x00\xffbinary", "x" * (6 * 1024 * 1024), b"\x01" * 5_000_000]
            for frame in frames:
                await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
            for frame in frames:
                message = await ws.receive()
                assert message.data == frame
                assert message.type is (aiohttp.WSMsgType.TEXT if isinstance(frame, str) else aiohttp.WSMsgType.BINARY)


async def test_websocket_without_subprotocol_gets_none(echo_proxy: Proxy) -> None:
    async with echo_proxy.session() as client:
        async with client.ws_connect("/ws") as ws:
            assert ws.protocol is None
            await ws.send_str("ping?")
            assert await ws.receive_str() == "ping?"


async def _read_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()
    writer.close()


async def test_no_websocket_extension_is_negotiated_on_either_side(echo_proxy: Proxy) -> None:
    """Bytes are relayed as they are: a compressed frame would mean something else to the other side."""
    async with echo_proxy.session() as client:
        async with client.ws_connect("/ws?report=1", compress=15) as ws:  # the IDE offers permessage-deflate
            assert ws.compress == 0
            report = await ws.receive_json()
            assert "sec-websocket-extensions" not in _headers(report)
            await ws.send_str("plain " * 1000)
            assert await ws.receive_str() == "plain " * 1000


@pytest.mark.parametrize("answer", [
    "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate",
    "Sec-WebSocket-Accept: d3Jvbmcga2V5IGhlcmU=",
    "Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: never-offered",
], ids=["extension", "wrong-accept", "unoffered-subprotocol"])
async def test_a_hub_breaking_the_websocket_handshake_is_a_502(
        start_proxy: Callable[[Settings], Awaitable[Proxy]], answer: str) -> None:
    async def crooked_hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await read_handshake_key(reader)
        writer.write(switching_protocols(answer.format(accept=accept_key(key))))
        await _read_and_say_nothing(reader, writer)

    async with fake_hub(crooked_hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", None, None))
        async with proxy.session() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/api/kernels/1/channels")
            assert refused.value.status == 502


async def test_websocket_close_codes_cross_both_ways(echo_proxy: Proxy, echo_upstream: Any) -> None:
    async with echo_proxy.session() as client:
        async with client.ws_connect("/ws?close=4001") as ws:
            await ws.send_str("bye")
            assert (await ws.receive_str()) == "bye"
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4001
        ws = await client.ws_connect("/ws")
        await ws.close(code=4002)
    async with timeout(5):
        while 4002 not in echo_upstream.app[CLOSE_CODES]:
            await asyncio.sleep(0.01)


async def test_when_one_side_vanishes_the_other_is_closed_promptly(echo_proxy: Proxy, echo_upstream: Any) -> None:
    async with echo_proxy.session() as client:
        async with client.ws_connect("/ws?vanish=1") as ws:
            await ws.send_str("last words")
            assert await ws.receive_str() == "last words"
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1011

        ide = await client.ws_connect("/ws")
        await ide.send_str("hello")
        assert await ide.receive_str() == "hello"
        assert ide._response.connection is not None
        ide._response.connection.transport.abort()  # the IDE is gone without a close frame
    async with timeout(5):
        while len(echo_upstream.app[CLOSE_CODES]) < 2:
            await asyncio.sleep(0.01)
    assert echo_upstream.app[CLOSE_CODES][-1] in (1001, 1011)


async def test_websocket_refused_by_the_hub_is_reported_as_json(echo_proxy: Proxy) -> None:
    async with echo_proxy.session() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as stopped:
            await client.ws_connect("/redirect?to=/hub/user/alice/api/kernels/1/channels")
        assert stopped.value.status == 424
        with pytest.raises(aiohttp.WSServerHandshakeError) as not_websocket:
            await client.ws_connect("/not-a-websocket")
        assert not_websocket.value.status == 502


@pytest.mark.parametrize("method,retried", [("GET", True), ("PUT", True), ("POST", False), ("DELETE", False)])
async def test_a_dead_pooled_connection_is_retried_only_when_safe(
        start_proxy: Callable[[Settings], Awaitable[Proxy]], method: str, retried: bool) -> None:
    upstream = StaleConnectionUpstream()
    port = await upstream.start()
    try:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", None, None))
        async with proxy.session() as client:
            for _ in range(2):  # the 2nd request finds the pooled connection dead
                async with client.request(method, "/api/contents/x", data=b"{}") as response:
                    status = response.status
                    reason = (await response.json())["reason"] if status != 200 else None
        assert (status, reason) == ((200, None) if retried else (502, "hub-disconnected"))
        assert len(upstream.answered) == (2 if retried else 1)
    finally:
        await upstream.close()


async def test_wrong_ca_or_name_is_a_clear_502_and_the_proxy_stays_up(
        echo_upstream: Any, tls_ca: Any, tmp_path: Any,
        start_proxy: Callable[[Settings], Awaitable[Proxy]], caplog: pytest.LogCaptureFixture) -> None:
    import trustme
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    hub = f"https://127.0.0.1:{echo_upstream.port}"
    cases = [(other_ca, "jupyterhub", "JUPYTER_CLUSTER_CA_CERT"), (None, "jupyterhub", "JUPYTER_CLUSTER_CA_CERT"),
             (tls_ca[1], "not-the-name", "JUPYTER_SERVER_NAME")]
    for ca_file, tls_name, setting in cases:
        proxy = await start_proxy(make_settings(hub, ca_file, tls_name))
        async with proxy.session() as client:
            for _ in range(2):
                async with client.get("/api/status") as response:
                    assert response.status == 502
                    body = await response.json()
        assert body["reason"] == "tls-verification-failed" and setting in body["message"]
    assert any("tls-verification-failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("code", [424, 503, 404, 500])
async def test_the_hubs_own_error_answers_pass_through_untouched(echo_proxy: Proxy, code: int) -> None:
    async with echo_proxy.session() as client:
        async with client.get("/status", params={"code": str(code)}) as response:
            assert response.status == code
            assert await response.json() == {"message": f"status {code} from upstream", "reason": None}


async def test_a_hub_that_never_completes_the_handshake_is_a_504(
        monkeypatch: pytest.MonkeyPatch, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    monkeypatch.setattr(transport, "CONNECT_TIMEOUT_SECONDS", 0.5)
    async with fake_hub(_read_and_say_nothing) as port:
        proxy = await start_proxy(make_settings(f"https://127.0.0.1:{port}", None, "jupyterhub"))
        async with proxy.session() as client:
            async with client.get("/api/status") as response:
                assert response.status == 504
                assert (await response.json())["reason"] == "hub-timeout"


async def test_a_hub_on_an_ipv6_address_is_reached_over_http_and_websockets(
        aiohttp_server: Callable[..., Awaitable[Any]], start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    hub = await aiohttp_server(echo_app(), host="::1")
    proxy = await start_proxy(make_settings(f"http://[::1]:{hub.port}", None, None))
    async with proxy.session() as client:
        async with client.get("/echo") as response:
            assert response.status == 200
            assert (await response.json())["raw_path"] == "/user/alice/echo"
        async with client.ws_connect("/ws") as ws:
            await ws.send_str("over IPv6")
            assert await ws.receive_str() == "over IPv6"


async def test_a_hub_that_never_answers_the_websocket_handshake_is_a_504(
        monkeypatch: pytest.MonkeyPatch, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    monkeypatch.setattr(transport, "ANSWER_TIMEOUT_SECONDS", 0.5)
    async with fake_hub(_read_and_say_nothing) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", None, None))
        async with proxy.session() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/api/kernels/1/channels")
            assert refused.value.status == 504


async def test_a_websocket_accepted_while_the_proxy_stops_is_closed_with_1001() -> None:
    async def slow_hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await read_handshake_key(reader)
        await asyncio.sleep(0.5)  # the proxy starts shutting down meanwhile
        writer.write(switching_protocols(f"Sec-WebSocket-Accept: {accept_key(key)}"))
        await reader.read(1)  # the proxy's close frame: hang up, as a server does
        writer.close()

    async with fake_hub(slow_hub) as port:
        runner = ProxyRunner(make_settings(f"http://127.0.0.1:{port}", None, None))
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            async with aiohttp.ClientSession(headers={"Authorization": f"token {LOCAL_TOKEN}"}) as ide:
                opening = asyncio.ensure_future(ide.ws_connect(f"http://127.0.0.1:{runner.addresses[0][1]}/ws"))
                await asyncio.sleep(0.2)
                await runner.shutdown()  # what cleanup() does first: every open relay is told 1001
                ws = await opening
                message = await ws.receive(timeout=5)
                assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        finally:
            await runner.cleanup()


async def test_hub_down_is_a_502_with_advice(start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    from jupyter_dev_proxy.demo import free_port
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{free_port()}", None, "jupyterhub"))
    async with proxy.session() as client:
        async with client.get("/api/status") as response:
            assert response.status == 502
            body = await response.json()
    assert body["reason"] == "hub-unreachable" and "network" in body["message"]


async def test_a_request_while_the_hubs_front_restarts_waits_for_it_instead_of_failing(
        echo_upstream: Any, tls_ca: Any, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> None:
    """A hub reached moments ago that refuses new connections for a second (its proxy restarting): nothing of the
    request was sent, so it is tried again after a pause instead of answering 502 (the soak's refused seconds)."""
    from bench.linkemu import LinkEmulator
    async with LinkEmulator("127.0.0.1", echo_upstream.port) as link:
        proxy = await start_proxy(make_settings(f"https://127.0.0.1:{link.port}", tls_ca[1], "jupyterhub",
                                                keep_warm_minutes=0))
        async with proxy.session() as ide:
            async with ide.get("/api/status") as response:
                assert response.status == 200
            link.refuse_new(True)
            link.reset_all()
            asyncio.get_running_loop().call_later(1.0, link.refuse_new, False)
            async with ide.get("/api/contents") as response:
                assert response.status == 200
            assert link.stats().refused >= 1
