"""The transport's hops: TLS with a client certificate, a real TLS server that demands one (OpenSSL's), the files
a user gives for it, and a gateway's refusal of an API request while serving."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from jupyter_dev_proxy import timeouts, transport
from jupyter_dev_proxy.config import ConfigError, Settings
from jupyter_dev_proxy.demo import free_port, terminate
from jupyter_dev_proxy.transport import HubTransport, tls_context_for
from tests.kit.fakehubs import CountingUpstream
from tests.kit.netservers import ClientCert, write_client_cert
from tests.kit.settings import Proxy, make_settings

StartProxy = Callable[[Settings], Awaitable[Proxy]]


@pytest.fixture
def client_ca() -> trustme.CA:
    return trustme.CA(organization_name="Client CA")


@pytest.fixture
def client_cert(client_ca: trustme.CA, tmp_path: Path) -> ClientCert:
    return write_client_cert(client_ca, tmp_path)


@pytest.fixture
def demanding_hub(tls_ca: tuple[trustme.CA, Path], client_ca: trustme.CA, tmp_path: Path) -> Iterator[int]:
    """OpenSSL's own server wanting a client certificate from ``client_ca`` at the TLS level, as an mTLS edge
    does (HAProxy's or Envoy's 'verify required'); its port. A client without one is refused with a TLS alert:
    after the handshake with TLS 1.3 ("certificate required"), in it with TLS 1.2. It serves one connection at a
    time, so proxies in front of it keep no spare connections (keep_warm_minutes=0)."""
    leaf = tls_ca[0].issue_cert("jupyterhub", "127.0.0.1")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                               str(tmp_path / "server.pem"), "-CAfile", str(tmp_path / "client-ca.pem"), "-Verify", "1",
                               "-verify_return_error", "-www", "-quiet"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "openssl s_server did not start"
                time.sleep(0.05)
        yield port
    finally:
        terminate(server, timeout=5)


async def test_a_client_certificate_is_presented_and_accepted(
        demanding_hub: int, tls_ca: tuple[trustme.CA, Path], client_cert: ClientCert, start_proxy: StartProxy) -> None:
    for cert, key in ((client_cert.cert_file, client_cert.key_file), (client_cert.combined_file, None)):
        proxy = await start_proxy(make_settings(f"https://127.0.0.1:{demanding_hub}", tls_ca[1], "jupyterhub",
                                                client_cert=cert, client_key=key, keep_warm_minutes=0))
        async with proxy.session() as ide:
            async with ide.get("/api/status") as response:
                assert response.status == 200  # s_server's -www page: the certificate was accepted
                assert "Client certificate" in await response.text()


@pytest.mark.parametrize("tls_version", [None, ssl.TLSVersion.TLSv1_2], ids=["tls-1.3", "tls-1.2"])
async def test_a_server_demanding_a_client_certificate_is_named_as_a_gateway_with_the_setting(
        demanding_hub: int, tls_ca: tuple[trustme.CA, Path], start_proxy: StartProxy,
        monkeypatch: pytest.MonkeyPatch, tls_version: ssl.TLSVersion | None) -> None:
    if tls_version is not None:
        plain_context = transport.tls_context_for

        def capped(settings: Settings) -> ssl.SSLContext:
            context = plain_context(settings)
            context.maximum_version = tls_version
            return context
        monkeypatch.setattr(transport, "tls_context_for", capped)
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{demanding_hub}", tls_ca[1], "jupyterhub",
                                            keep_warm_minutes=0))
    async with proxy.session() as ide:
        async with ide.get("/api/status") as response:
            body = await response.json()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # a websocket is refused the same way
            await ide.ws_connect("/api/kernels/1/channels")
    assert response.status == 502 and body["reason"] == "gateway-refused", body
    assert "JUPYTER_CLIENT_CERT" in body["message"] and "not the hub" in body["message"]
    assert refused.value.status == 502


@pytest.mark.parametrize("status,content_type,refused", [
    (403, "text/html", True), (401, "text/plain", True), (403, "application/json", False), (404, "text/html", False),
    (495, "application/json", True),
])
async def test_a_refusal_that_is_not_the_servers_json_is_named_as_the_gateways(
        aiohttp_server: Callable[..., Awaitable[Any]], start_proxy: StartProxy, status: int, content_type: str,
        refused: bool) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status, text="<html>Access denied by the edge</html>", content_type=content_type)

    app = web.Application()
    app.router.add_get("/user/alice/api/contents", refuse)
    hub = await aiohttp_server(app)
    proxy = await start_proxy(make_settings(f"http://127.0.0.1:{hub.port}"))
    async with proxy.session() as ide:
        async with ide.get("/api/contents") as response:
            assert response.status == (502 if refused else status)
            if refused:
                assert (await response.json())["reason"] == "gateway-refused"


def test_a_client_key_with_a_passphrase_is_refused_without_prompting(
        client_ca: trustme.CA, tmp_path: Path) -> None:
    issued = client_ca.issue_cert("ide-user@example.org")
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"passphrase"))
    (tmp_path / "cert.pem").write_bytes(issued.cert_chain_pems[0].bytes())
    (tmp_path / "key.pem").write_bytes(locked)
    settings = make_settings("https://hub", None, "hub", client_cert=tmp_path / "cert.pem",
                             client_key=tmp_path / "key.pem")
    with pytest.raises(ConfigError, match="JUPYTER_CLIENT_KEY to its key without a passphrase"):
        tls_context_for(settings)


def test_a_file_that_is_not_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="JUPYTER_CLIENT_CERT"):
        HubTransport(make_settings("https://hub", None, "hub", client_cert=tmp_path / "cert.pem"))


# -- connections kept ready ---------------------------------------------------------------------------------------------

async def _until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with timeouts.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def _start_counted(start_proxy: StartProxy, hub: CountingUpstream, **overrides: Any) -> Proxy:
    assert hub._server is not None
    port = hub._server.sockets[0].getsockname()[1]
    return await start_proxy(make_settings(f"http://127.0.0.1:{port}", **overrides))


async def test_after_a_pause_a_request_goes_out_on_a_connection_opened_before_it(
        counting_hub: CountingUpstream, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "IDLE_CONNECTION_SECONDS", 0.2)  # the pool forgets used connections fast
    proxy = await _start_counted(start_proxy, counting_hub)
    async with proxy.session() as ide:
        async with ide.get("/api/contents") as response:
            assert response.status == 200
        await _until(lambda: len(counting_hub.accepted_at) >= 2, "a spare connection")
        await asyncio.sleep(0.5)  # a pause: the used connection is no longer pooled
        sent = asyncio.get_running_loop().time()
        async with ide.get("/api/contents") as response:
            assert response.status == 200
    number, _, _ = counting_hub.requests[-1]
    assert number != counting_hub.requests[0][0]  # not the used connection
    assert counting_hub.accepted_at[number] < sent - 0.2  # a connection that was ready before the request


async def test_connections_kept_ready_send_nothing_and_stop_after_the_quiet_time(
        counting_hub: CountingUpstream, start_proxy: StartProxy) -> None:
    proxy = await _start_counted(start_proxy, counting_hub, keep_warm_minutes=1.5 / 60)
    async with proxy.session() as ide:
        async with ide.get("/api/contents") as response:
            assert response.status == 200
    await _until(lambda: len(counting_hub.accepted_at) >= 2, "a spare connection")
    await _until(lambda: len(counting_hub.closed) >= len(counting_hub.accepted_at), "the spares closed", 10)
    assert [line for _, _, line in counting_hub.requests] == ["GET /user/alice/api/contents HTTP/1.1"]


async def test_a_spare_the_hub_closed_is_never_used(start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "IDLE_CONNECTION_SECONDS", 0.1)
    hub = CountingUpstream(idle_close=0.3)  # a hub's proxy closing idle connections, used or not
    await hub.start()
    try:
        proxy = await _start_counted(start_proxy, hub)
        async with proxy.session() as ide:
            for _ in range(4):
                async with ide.get("/api/contents") as response:
                    assert response.status == 200
                await asyncio.sleep(0.6)  # every spare opened before is closed by now
    finally:
        await hub.close()
    assert len(hub.requests) == 4


async def test_a_websocket_handshake_goes_out_on_a_ready_connection(
        echo_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh: list[str] = []  # what each new connection was opened for: "_Spare", or the protocol of a request
    open_fresh = HubTransport._open

    async def recording_open(self: HubTransport, factory: Any, tls: Any) -> Any:
        fresh.append(getattr(factory, "__name__", type(factory).__name__))
        return await open_fresh(self, factory, tls)
    monkeypatch.setattr(HubTransport, "_open", recording_open)
    async with echo_proxy.session() as ide:
        async with ide.get("/api/status") as response:
            assert response.status == 200
        await _until(lambda: "_Spare" in fresh, "a spare connection")
        async with ide.ws_connect("/ws") as ws:
            await ws.send_str("on a ready connection")
            assert await ws.receive_str() == "on a ready connection"
    assert "HubConnection" not in fresh  # the websocket's connection was one opened beforehand


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_hub_that_accepts_and_drops_every_connection_is_not_hammered_by_the_spares(
        start_proxy: StartProxy, tls_ca: tuple[trustme.CA, Path], scheme: str) -> None:
    """An ssh tunnel whose far end is down, an ingress at its connection limit: each connection is accepted and
    closed at once. Spares that die young count as failures, and the warmer backs off (review #3: 9,064 TCP or
    1,137 TLS connections in 3 s)."""
    accepted = 0

    async def hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()
    context = None
    if scheme == "https":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_ca[0].issue_cert("jupyterhub", "127.0.0.1").configure_cert(context)
    server = await asyncio.start_server(hub, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = await start_proxy(make_settings(f"{scheme}://127.0.0.1:{port}", tls_ca[1], "jupyterhub"))
        async with proxy.session() as ide:
            async with ide.get("/api/status") as response:
                assert response.status == 502
        before = accepted
        await asyncio.sleep(3)
        assert accepted - before < 20
    finally:
        server.close()
