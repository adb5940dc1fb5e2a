"""Bad input from either side: a clear refusal in Jupyter's JSON shape, never a 500, a hang, a smuggled request
or a token in the log. The IDE's side is written byte by byte on a raw socket; the hub's side is a fake hub that
answers in one broken way each, or the echo upstream that records whatever reaches it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_dev_proxy import app, transport
from jupyter_dev_proxy.auth import COOKIE_NAME, hub_token_for
from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.demo import DemoServer
from jupyter_dev_proxy.errors import ProxyError
from jupyter_dev_proxy.timeouts import timeout
from tests.kit.env import server_env
from tests.kit.fakehubs import fake_hub
from tests.kit.process import ProxyProcess, run_proxy
from tests.kit.rawhttp import exchange, read_answer, request_head
from tests.kit.settings import HUB_TOKEN, LOCAL_TOKEN, Proxy, make_settings

StartProxy = Callable[[Settings], Awaitable[Proxy]]


def _assert_jupyter_error(answer: Any, status: int | tuple[int, ...]) -> None:
    assert answer.status in ((status,) if isinstance(status, int) else status), answer
    body = answer.json()
    assert set(body) == {"message", "reason"} and body["message"].endswith("."), body
    assert int(answer.headers["Content-Length"]) == len(answer.body)


# -- the IDE's side: request lines and methods ------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    f"GET /api/status?token={LOCAL_TOKEN}\r\n\r\n",  # HTTP/0.9: no version at all
    f"GET /api/status?token={LOCAL_TOKEN} HTTP/0.9\r\nHost: localhost\r\n\r\n",
    f"GET /api/status?token={LOCAL_TOKEN} HTTP/2.0\r\nHost: localhost\r\n\r\n",
    f"GET /api/status?token={LOCAL_TOKEN} HTTP/1.2\r\nHost: localhost\r\n\r\n",
], ids=["no-version", "0.9", "2.0", "1.2"])
async def test_request_lines_that_are_not_http_1_are_refused_and_the_connection_closed(
        echo_proxy: Proxy, echo_seen: list[web.Request], line: str) -> None:
    answer = await exchange(echo_proxy.url.port, line.encode())
    _assert_jupyter_error(answer, (400, 505))
    assert answer.closed
    assert echo_seen == []


@pytest.mark.parametrize("method,target", [("CONNECT", "hub.example.org:443"), ("TRACE", "/api/status"),
                                           ("PROPFIND", "/api/contents")])
async def test_methods_the_proxy_does_not_relay_close_the_connection_and_what_follows_never_runs(
        echo_proxy: Proxy, echo_seen: list[web.Request], method: str, target: str) -> None:
    smuggled = request_head("GET", "/api/contents/smuggled", LOCAL_TOKEN)
    answer = await exchange(echo_proxy.url.port, request_head(method, target, LOCAL_TOKEN) + smuggled)
    _assert_jupyter_error(answer, 405)
    assert "GET" in answer.headers["Allow"] and "CONNECT" not in answer.headers["Allow"]
    assert answer.closed
    await asyncio.sleep(0.2)
    assert echo_seen == []


async def test_a_malformed_request_gets_json_that_quotes_nothing_of_it(
        echo_proxy: Proxy, echo_seen: list[web.Request], caplog: pytest.LogCaptureFixture) -> None:
    answer = await exchange(echo_proxy.url.port, f"GET /api/status?token={LOCAL_TOKEN} \r\n\r\n".encode())
    _assert_jupyter_error(answer, 400)
    assert answer.closed and answer.json()["reason"] == "bad-request"
    assert b"token" not in answer.body
    refusals = [r.getMessage() for r in caplog.records if "not valid HTTP/1.1" in r.getMessage()]
    assert len(refusals) == 1 and "127.0.0.1" in refusals[0]
    assert echo_seen == []


# -- the IDE's side: the token check is total ---------------------------------------------------------------------

@pytest.mark.parametrize("where", [
    "Authorization: token \xff\xfe\x80",
    "Authorization: Bearer \xff\xfe\x80",
    "Authorization: token \xed\xa0\x80",  # an encoded surrogate
    "Cookie: jupyter-dev-proxy-session=\xff\xfe",
    "Cookie: jupyter-dev-proxy-session=\"\xff\\\"",
    "Authorization: \xff",
], ids=["token", "bearer", "surrogate", "cookie", "cookie-quoted", "scheme"])
async def test_a_token_that_is_not_utf8_is_a_403_not_a_500(
        echo_proxy: Proxy, echo_seen: list[web.Request], where: str) -> None:
    head = request_head("GET", "/api/status", None, where.encode("latin-1").decode("utf-8", "surrogateescape"))
    answer = await exchange(echo_proxy.url.port, head)
    _assert_jupyter_error(answer, (400, 403))
    assert echo_seen == []


@pytest.mark.parametrize("query", ["token=%ff%fe", "token=%ed%a0%80", "token=%00", "token=a%0d%0aX-Evil:%201",
                                   "token=%C0%80"])
@pytest.mark.parametrize("forwarding", [False, True], ids=["hub-token", "ide-token-forwarded"])
async def test_a_token_in_the_query_with_any_bytes_is_a_403(
        echo_upstream: Any, tls_ca: Any, start_proxy: StartProxy, echo_seen: list[web.Request],
        query: str, forwarding: bool) -> None:
    overrides = {"hub_token": None} if forwarding else {}
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            **overrides))
    answer = await exchange(proxy.url.port, request_head("GET", f"/api/status?{query}", None))
    _assert_jupyter_error(answer, 403)
    assert echo_seen == []


# Any text a header can carry here (raw bytes that are not UTF-8 reach the check as surrogate escapes, which
# only a real socket can deliver: the tests above), and any bytes, percent-encoded, in the query.
_ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(authorization=_ANY_TEXT, cookie=_ANY_TEXT, query_token=st.none() | st.binary(max_size=40),
       origin=st.none() | _ANY_TEXT, forwarding=st.booleans())
def test_the_token_check_answers_any_input_with_a_credential_or_a_403(
        authorization: str, cookie: str, query_token: bytes | None, origin: str | None, forwarding: bool) -> None:
    headers = {"Authorization": authorization, "Cookie": f"{COOKIE_NAME}={cookie}", "Host": "localhost"}
    if origin is not None:
        headers["Origin"] = origin
    target = "/api/status" if query_token is None else f"/api/status?token={quote(query_token, safe='')}"
    request = make_mocked_request("GET", target, headers=headers)
    proxy_settings = make_settings("https://hub.example.org", None, "hub.example.org",
                                   **({"hub_token": None} if forwarding else {}))
    try:
        credential = hub_token_for(request, proxy_settings, proxy_settings.hub_token)
    except ProxyError as refusal:
        assert refusal.status == 403
    else:
        if forwarding:
            assert credential.isascii() and credential.isprintable() and " " not in credential
        else:
            assert credential == HUB_TOKEN


# -- the hub's side: broken answers --------------------------------------------------------------------------------

_BROKEN_ANSWERS = {
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n0\r\n\r\n",
    "bad-status": b"HTTP/1.1 abc Weird\r\nContent-Length: 2\r\n\r\nok",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "control-char-in-header": b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "delete-char-in-header": b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\nContent-Length: 2\r\n\r\nok",
    "not-utf8-header": b"HTTP/1.1 200 OK\r\nX-Bad: caf\xe9\r\nContent-Length: 2\r\n\r\nok",
    "control-char-in-location": b"HTTP/1.1 302 Found\r\nLocation: /user/alice/x\x01y\r\nContent-Length: 0\r\n\r\n",
    "control-char-in-big-answer": b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 200000\r\n\r\n"
                                  + b"x" * 200_000,
}


@pytest.mark.parametrize("answer", list(_BROKEN_ANSWERS.values()), ids=list(_BROKEN_ANSWERS))
async def test_a_hub_answering_something_that_is_not_http_is_a_502_that_says_so(
        start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, answer: bytes) -> None:
    async def broken_hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # a ready connection the proxy kept and closed unused, as it should
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with fake_hub(broken_hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", None, None))
        result = await exchange(proxy.url.port, request_head("GET", "/api/contents/x", LOCAL_TOKEN))
        _assert_jupyter_error(result, 502)
        assert result.json()["reason"] == "hub-bad-answer"
        assert "not pass it on" in result.json()["message"]
        again = await exchange(proxy.url.port, request_head("GET", "/api/contents/x", LOCAL_TOKEN))
        assert again.status == 502  # the proxy is still fine
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- time limits -----------------------------------------------------------------------------------------------------

async def test_a_hub_that_accepts_the_request_and_never_answers_is_a_504(
        monkeypatch: pytest.MonkeyPatch, start_proxy: StartProxy) -> None:
    monkeypatch.setattr(transport, "ANSWER_TIMEOUT_SECONDS", 0.5)

    async def silent_hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, answers nothing, until the proxy hangs up
        writer.close()

    async with fake_hub(silent_hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", None, None))
        answer = await exchange(proxy.url.port, request_head("GET", "/api/contents/x", LOCAL_TOKEN))
    _assert_jupyter_error(answer, 504)
    assert answer.json()["reason"] == "hub-timeout" and "no answer" in answer.json()["message"]


async def test_a_body_that_keeps_flowing_is_never_cut_by_the_answer_timeout(
        monkeypatch: pytest.MonkeyPatch, aiohttp_server: Callable[..., Awaitable[Any]],
        start_proxy: StartProxy) -> None:
    monkeypatch.setattr(transport, "ANSWER_TIMEOUT_SECONDS", 0.5)

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10):  # 2 s in all, 4 times the limit, never silent for as long as the limit
            await response.write(b"x" * 1000)
            await asyncio.sleep(0.2)
        return response

    hub = web.Application()
    hub.router.add_get("/user/alice/files/slow.bin", trickle)
    server = await aiohttp_server(hub)
    proxy = await start_proxy(make_settings(f"http://127.0.0.1:{server.port}", None, None))
    async with proxy.session() as ide:
        async with ide.get("/files/slow.bin") as response:
            assert response.status == 200
            assert len(await response.read()) == 10_000


async def test_when_the_ide_hangs_up_the_hub_request_is_cancelled_and_its_connection_closed(
        start_proxy: StartProxy) -> None:
    request_arrived, hub_hung_up = asyncio.Event(), asyncio.Event()

    async def slow_hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        request_arrived.set()  # the hub is "starting a kernel"
        if await reader.read() == b"":  # nothing more comes, until the proxy closes its side
            hub_hung_up.set()
        writer.close()

    async with fake_hub(slow_hub) as port:
        proxy = await start_proxy(make_settings(f"http://127.0.0.1:{port}", None, None))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
        writer.write(request_head("POST", "/api/kernels", LOCAL_TOKEN, "Content-Length: 0"))
        async with timeout(5):
            await request_arrived.wait()  # a proxy that failed the request at once never gets this far
        writer.close()  # the IDE gives up
        async with timeout(5):
            await hub_hung_up.wait()


async def test_a_connection_that_never_finishes_its_head_is_closed(
        monkeypatch: pytest.MonkeyPatch, echo_upstream: Any, tls_ca: Any, start_proxy: StartProxy,
        echo_seen: list[web.Request]) -> None:
    monkeypatch.setattr(app, "IDE_IDLE_SECONDS", 0.5)
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub"))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    try:
        writer.write(f"GET /api/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: token {LOCAL_TOKEN}\r\n".encode())
        for _ in range(3):  # a slowloris: a byte now and then, never the end of the head
            await asyncio.sleep(0.2)
            writer.write(b"X")
        async with timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()
    assert echo_seen == []


async def test_an_idle_keep_alive_connection_is_closed_but_an_idle_websocket_is_not(
        monkeypatch: pytest.MonkeyPatch, echo_proxy: Proxy, start_proxy: StartProxy) -> None:
    monkeypatch.setattr(app, "IDE_IDLE_SECONDS", 0.5)
    proxy = await start_proxy(echo_proxy.settings)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    try:
        writer.write(request_head("GET", "/api/status", LOCAL_TOKEN))
        answer = await read_answer(reader)
        assert answer.status == 200 and not answer.closed
        async with timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()
    async with proxy.session() as ide:
        async with ide.ws_connect("/ws") as ws:
            await asyncio.sleep(1.5)  # three times the idle limit
            await ws.send_str("still here")
            assert await ws.receive_str() == "still here"


# -- the log -----------------------------------------------------------------------------------------------------------

def test_library_log_paths_redact_tokens_in_messages_and_tracebacks(
        echo_proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp's own "Error handling request" quotes the raw request line; asyncio's exception handler shows
    whatever an exception says. Both are forced here with the real libraries' loggers."""
    from aiohttp.http_parser import HttpRequestParser
    parser = HttpRequestParser(protocol=None, loop=asyncio.new_event_loop(), limit=2 ** 16)  # type: ignore[arg-type]
    with pytest.raises(Exception) as parse_failure:
        parser.feed_data(f"GET /api/status?token={LOCAL_TOKEN} \r\n\r\n".encode())
    assert LOCAL_TOKEN in str(parse_failure.value)
    logging.getLogger("aiohttp.server").error("Error handling request", exc_info=parse_failure.value)
    loop = asyncio.new_event_loop()
    try:
        loop.call_exception_handler({"message": f"Task failed for /api?token={LOCAL_TOKEN}",
                                     "exception": ValueError(f"{{'Authorization': 'token {HUB_TOKEN}'}}")})
    finally:
        loop.close()
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "Error handling request" in text and "Task failed" in text and "[redacted]" in text
    assert LOCAL_TOKEN not in text and HUB_TOKEN not in text


async def test_the_proxy_log_at_debug_level_holds_no_token_whatever_it_is_sent(
        jupyter_upstream: DemoServer, proxies: list[ProxyProcess]) -> None:
    local_token = "a1b2c3d4e5f6-local-token-of-this-test"
    env = server_env(jupyter_upstream, JUPYTER_PROXY_TOKEN=local_token, PYTHONASYNCIODEBUG="1")
    proxy = run_proxy(proxies, env, "--log-level", "debug")
    url, _ = proxy.wait_for_banner()
    port = int(url.rsplit(":", 1)[1])
    attempts = [
        f"GET /api/status?token={local_token} \r\n\r\n",
        f"GET /api/status?token={local_token} HTTP/2.0\r\nHost: localhost\r\n\r\n",
        f"CONNECT evil:443 HTTP/1.1\r\nHost: localhost\r\nAuthorization: token {local_token}\r\n\r\n",
        f"GET /api/status?token={local_token} HTTP/1.1\r\nHost: localhost\r\nBad Header: {local_token}\r\n\r\n",
        f"G@T /?token={local_token} HTTP/1.1\r\n\r\n",
        f"GET /api/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: token {local_token}\xff\r\n\r\n",
        f"GET /api/status HTTP/1.1\r\nHost: localhost\r\nCookie: jupyter-dev-proxy-session={local_token}\r\n"
        "Origin: https://evil.example\r\n\r\n",
        f"GET /hub/api?token={local_token} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        f"GET /api/status?token={local_token} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        f"GET /api/kernels/nope/channels?token={local_token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n\r\n",
    ]
    for attempt in attempts:
        answer = await exchange(port, attempt.encode("utf-8", "surrogateescape"))
        assert answer.status is None or answer.status < 500 or answer.status == 505, (attempt, answer)
    assert proxy.stop() == 0
    assert "Error handling request" not in proxy.output
    banner_urls = ("Authorization URL with token for IDE", "Status page:")  # the two URLs the user is given
    log = [line for line in proxy.lines if not line.startswith(banner_urls)]
    assert local_token not in "".join(log) and jupyter_upstream.token not in proxy.output
    assert "GET /api/status" in proxy.output  # the access log is there, without the query


# -- fuzzing the request head -------------------------------------------------------------------------------------------

_GOOD_LINES = ["Host: localhost", f"Authorization: token {LOCAL_TOKEN}", "Accept: */*", "X-Kept: 1"]

# Each of these makes a request head invalid (RFC 9110/9112) or unrelayable; one or more are applied to an
# otherwise valid, authenticated request, so anything reaching the hub is a hole.
_BROKEN_VERSIONS = ["", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "HTTP/3", "http/1.1", "HTTP/1.1 x", "HTTP/11", "HTTPS/1.1"]
_BROKEN_METHODS = ["CONNECT", "TRACE", "PROPFIND", "PRI", "get", "G@T", "GET\x00", "FOO BAR"]
_BROKEN_HEADER_LINES = [
    "NoColon", "Bad Name: x", "Host : localhost", ": empty-name", "X-Ctl: a\x01b", "X-Nul: a\x00b", "X-Del: a\x7f",
    "X-Fold: a\r\n folded", "X-Cr: a\rb", "Content-Length: 3\r\nContent-Length: 4", "Content-Length: -1",
    "Content-Length: 3, 3", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked\r\nContent-Length: 3",
    "X-Long: " + "a" * 70_000, "Host: second-host",
]
_BROKEN_TARGET_CHARS = ["\x00", "\x01", "\x7f", "\t", " x", "\r", "\xff"]


@st.composite
def _broken_heads(draw: st.DrawFn) -> bytes:
    method, version = "GET", "HTTP/1.1"
    target = f"/api/contents/{draw(st.text('abc/%.-_', max_size=12))}"
    lines = list(_GOOD_LINES)
    breaks = draw(st.lists(st.sampled_from(["version", "method", "header", "target"]), min_size=1, max_size=3))
    for kind in breaks:
        if kind == "version":
            version = draw(st.sampled_from(_BROKEN_VERSIONS))
        elif kind == "method":
            method = draw(st.sampled_from(_BROKEN_METHODS))
        elif kind == "header":
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(_BROKEN_HEADER_LINES)))
        else:
            at = draw(st.integers(1, len(target)))
            target = target[:at] + draw(st.sampled_from(_BROKEN_TARGET_CHARS)) + target[at:]
    head = "\r\n".join([f"{method} {target} {version}".rstrip(), *lines]) + "\r\n\r\n"
    return head.encode("latin-1") + b"abc"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=_broken_heads())
async def test_fuzzed_malformed_heads_are_refused_and_never_reach_the_hub(
        echo_proxy: Proxy, echo_seen: list[web.Request], head: bytes) -> None:
    answer = await exchange(echo_proxy.url.port, head)
    assert answer.status is None or 400 <= answer.status < 500 or answer.status == 505, (head[:200], answer)
    if answer.status is not None:
        assert set(answer.json()) == {"message", "reason"}
    assert echo_seen == [], head[:200]
    alive = await exchange(echo_proxy.url.port, request_head("GET", "/api/status", LOCAL_TOKEN, "Connection: close"))
    assert alive.status == 200
    echo_seen.clear()


# -- the Host check (DNS rebinding) ------------------------------------------------------------------------------------

_FOREIGN_HOSTS = ["evil.example.com", "evil.example.com:8000", "127.0.0.1.evil.example.com",
                  "127.0.0.1.evil.example.com:8000", "localhost.evil.example.com", "[::1].evil.example.com", "",
                  "10.0.0.5:8000", "0.0.0.0:8000", "evil.example.com:80:8000"]
_OWN_HOSTS = ["localhost", "localhost:8000", "LOCALHOST:1234", "127.0.0.1", "127.0.0.1:8000", "127.1.2.3:9",
              "[::1]:8000", "[::1]"]


@pytest.mark.parametrize("host", _FOREIGN_HOSTS)
async def test_a_request_naming_a_foreign_host_is_refused_before_anything_is_forwarded(
        echo_proxy: Proxy, echo_seen: list[web.Request], host: str) -> None:
    head = request_head("GET", "/api/contents", LOCAL_TOKEN, host=host)
    if not host:
        head = head.replace(b"Host: \r\n", b"")  # no Host at all (HTTP/1.0 allows it)
        head = head.replace(b"HTTP/1.1", b"HTTP/1.0")
    answer = await exchange(echo_proxy.url.port, head)
    _assert_jupyter_error(answer, (400, 403))
    assert answer.json()["reason"] in ("host-not-allowed", "bad-request")
    for websocket_host in (host,) if host else ():
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(echo_proxy.url / "ws", headers={"Host": websocket_host,
                                                                         "Authorization": f"token {LOCAL_TOKEN}"})
            assert refused.value.status == 403
    assert echo_seen == []


@pytest.mark.parametrize("host", _OWN_HOSTS)
async def test_loopback_names_and_addresses_are_the_proxys_own(
        echo_proxy: Proxy, echo_seen: list[web.Request], host: str) -> None:
    answer = await exchange(echo_proxy.url.port, request_head("GET", "/api/contents", LOCAL_TOKEN, "Connection: close",
                                                              host=host))
    assert answer.status == 200
    assert len(echo_seen) == 1


async def test_jupyter_proxy_allowed_hosts_adds_names(
        echo_upstream: Any, tls_ca: Any, start_proxy: StartProxy, echo_seen: list[web.Request]) -> None:
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            allowed_hosts=frozenset({"localhost", "devbox.internal"})))
    allowed = await exchange(proxy.url.port, request_head("GET", "/api/status", LOCAL_TOKEN, "Connection: close",
                                                          host="DevBox.internal:8000"))
    refused = await exchange(proxy.url.port, request_head("GET", "/api/status", LOCAL_TOKEN, host="devbox.evil"))
    assert (allowed.status, refused.status) == (200, 403)
    assert "JUPYTER_PROXY_ALLOWED_HOSTS" in refused.json()["message"]


async def test_a_flood_of_refused_requests_is_logged_once_with_a_count(
        echo_proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """A web page firing <img> requests without the token must not flood the log (review: suspected)."""
    async with aiohttp.ClientSession(base_url=echo_proxy.url) as page:
        for _ in range(30):
            async with page.get("/api/contents") as response:
                assert response.status == 403
    refusals = [r.getMessage() for r in caplog.records if "token-required" in r.getMessage()]
    assert len(refusals) == 1, refusals
