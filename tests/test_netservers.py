"""The network servers of tests/kit/netservers.py really do what the proxy's tests rely on them for."""

from __future__ import annotations

import asyncio
import io
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from tests.kit.fakehubs import echo_app
from tests.kit.netservers import (
    ClientCert,
    ForwardProxy,
    Gateway,
    ResolvingConnectProxy,
    missing_programs,
    real_servers_required,
    start_nginx_gateway,
    start_tinyproxy,
    wait_until_idle,
    write_client_cert,
)

_missing_tinyproxy = missing_programs("tinyproxy")
_missing_nginx = missing_programs("nginx")
if real_servers_required() and (_missing := missing_programs("tinyproxy", "nginx")):
    raise RuntimeError(f"CI must run the network-server tests, but {_missing}")
needs_tinyproxy = pytest.mark.skipif(_missing_tinyproxy is not None, reason=str(_missing_tinyproxy))
needs_nginx = pytest.mark.skipif(_missing_nginx is not None, reason=str(_missing_nginx))

HUB_NAME = "hub.internal.test"
GATEWAY_HEADER = ("X-Gateway-Token", "let-me-in")


@pytest.fixture
async def upstream(echo_upstream: Any) -> AsyncIterator[Any]:
    """The echo upstream (conftest), which no tunnel still holds when the test ends."""
    yield echo_upstream
    await wait_until_idle(echo_upstream)


def client_tls(ca_file: Path, cert: ClientCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return context


# -- tinyproxy ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[ForwardProxy]:
    """One for the module: tinyproxy takes a second to stop."""
    proxy = start_tinyproxy("alice", "s3cret")
    try:
        yield proxy
    finally:
        proxy.stop()


@needs_tinyproxy
async def test_tinyproxy_tunnels_with_credentials_and_logs_the_target(
        tinyproxy: ForwardProxy, upstream: Any, tls_ca: tuple[trustme.CA, Path]) -> None:
    target = f"127.0.0.1:{upstream.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://{target}/user/alice/echo", proxy=tinyproxy.url,
                               ssl=client_tls(tls_ca[1])) as response:
            assert response.status == 200
            assert (await response.json())["raw_path"] == "/user/alice/echo"
    assert target in tinyproxy.connects()


@needs_tinyproxy
@pytest.mark.parametrize(("credentials", "status", "challenge"), [
    ("", 407, "Proxy-Authenticate"),
    ("alice:wrong@", 401, "WWW-Authenticate"),  # tinyproxy's own choice, not 407
])
async def test_tinyproxy_refuses_missing_or_wrong_credentials(
        tinyproxy: ForwardProxy, upstream: Any, credentials: str, status: int, challenge: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            await session.get(f"https://127.0.0.1:{upstream.port}/",
                              proxy=f"http://{credentials}127.0.0.1:{tinyproxy.port}")
    assert refused.value.status == status
    assert refused.value.headers is not None
    assert refused.value.headers[challenge] == 'Basic realm="Tinyproxy"'


@needs_tinyproxy
async def test_tinyproxy_answers_500_for_a_closed_port(tinyproxy: ForwardProxy) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            await session.get("https://127.0.0.1:1/", proxy=tinyproxy.url)
    assert refused.value.status == 500
    assert "127.0.0.1:1" in tinyproxy.connects()


# -- our own CONNECT proxy ------------------------------------------------------------------------------------------

@pytest.fixture
async def named_upstream(aiohttp_server: Callable[..., Awaitable[Any]],
                         tls_ca: tuple[trustme.CA, Path]) -> AsyncIterator[Any]:
    """The echo upstream with a certificate for a name no DNS server knows."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca[0].issue_cert(HUB_NAME).configure_cert(context)
    server = await aiohttp_server(echo_app(), ssl=context)
    yield server
    await wait_until_idle(server)


@pytest.fixture
async def resolving_proxy() -> AsyncIterator[ResolvingConnectProxy]:
    proxy = ResolvingConnectProxy({HUB_NAME: "127.0.0.1"}, credentials=("bob", "pw"))
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_resolving_proxy_alone_resolves_the_hub_name_and_records_credentials(
        resolving_proxy: ResolvingConnectProxy, named_upstream: Any, tls_ca: tuple[trustme.CA, Path]) -> None:
    target = f"{HUB_NAME}:{named_upstream.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://{target}/user/alice/echo", proxy=resolving_proxy.url,
                               ssl=client_tls(tls_ca[1])) as response:
            assert response.status == 200
        async with session.ws_connect(f"wss://{target}/user/alice/ws", proxy=resolving_proxy.url,
                                      ssl=client_tls(tls_ca[1])) as ws:
            await ws.send_str("through the tunnel")
            assert await ws.receive_str() == "through the tunnel"
    assert resolving_proxy.targets == [target, target]
    assert resolving_proxy.seen[0].proxy_authorization == "Basic Ym9iOnB3"


@pytest.mark.parametrize(("target", "credentials", "status"), [
    (f"{HUB_NAME}:443", "", 407),
    (f"{HUB_NAME}:443", "bob:wrong@", 407),
    ("127.0.0.1:443", "bob:pw@", 502),  # only names in its mapping
    ("elsewhere.test:443", "bob:pw@", 502),
])
async def test_resolving_proxy_refusals(resolving_proxy: ResolvingConnectProxy, target: str, credentials: str,
                                        status: int) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            await session.get(f"https://{target}/", proxy=f"http://{credentials}127.0.0.1:{resolving_proxy.port}")
    assert refused.value.status == status
    if status == 407:
        assert refused.value.headers is not None
        assert refused.value.headers["Proxy-Authenticate"].startswith("Basic realm=")


async def test_resolving_proxy_in_a_thread_serves_a_blocking_client_and_can_refuse_everything(
        named_upstream: Any, tls_ca: tuple[trustme.CA, Path]) -> None:
    """As a proxy under test in a subprocess would use it: the test's event loop stays free for the upstream."""
    proxy = ResolvingConnectProxy({HUB_NAME: "127.0.0.1"})

    def fetch() -> int:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": proxy.url}),
                                             urllib.request.HTTPSHandler(context=client_tls(tls_ca[1])))
        with opener.open(f"https://{HUB_NAME}:{named_upstream.port}/user/alice/echo", timeout=10) as response:
            return int(response.status)

    with proxy.run_in_thread():
        assert await asyncio.to_thread(fetch) == 200
        proxy.refuse_status = 403
        with pytest.raises(OSError, match="403"):
            await asyncio.to_thread(fetch)
    assert proxy.targets == [f"{HUB_NAME}:{named_upstream.port}"] * 2


# -- nginx ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def gateway_tls(tmp_path: Path) -> tuple[trustme.CA, Path, ClientCert]:
    """The gateway's own CA (and its file), and a client certificate from a second CA, which the gateway trusts."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(str(tmp_path / "gateway-ca.pem"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    return server_ca, tmp_path / "gateway-ca.pem", write_client_cert(client_ca, tmp_path)


@pytest.fixture
def gateway(upstream: Any, tls_ca: tuple[trustme.CA, Path],
            gateway_tls: tuple[trustme.CA, Path, ClientCert], tmp_path: Path) -> Iterator[Gateway]:
    server_ca = gateway_tls[0]
    started = start_nginx_gateway(f"https://127.0.0.1:{upstream.port}", tls_ca[1], server_ca,
                                  tmp_path / "client-ca.pem", GATEWAY_HEADER)
    try:
        yield started
    finally:
        started.stop()


@needs_nginx
async def test_gateway_passes_requests_and_websockets_with_certificate_and_header(
        gateway: Gateway, gateway_tls: tuple[trustme.CA, Path, ClientCert]) -> None:
    _, ca_file, cert = gateway_tls
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert.combined_file))  # key and certificate in one file do as well
    body = os.urandom(3 * 1024 * 1024)  # above nginx's default 1 MiB cap
    async with aiohttp.ClientSession(headers=[GATEWAY_HEADER]) as session:
        async with session.post(f"{gateway.url}/user/alice/a%2Fb?x=1", data=io.BytesIO(body), ssl=context) as response:
            assert response.status == 200, await response.text()
            echoed = await response.json()
        async with session.ws_connect(f"{gateway.url}/user/alice/ws", ssl=context) as ws:
            await ws.send_bytes(b"through the gateway")
            assert await ws.receive_bytes() == b"through the gateway"
    assert echoed["raw_path"] == "/user/alice/a%2Fb?x=1"
    assert echoed["body_len"] == len(body)
    assert dict(echoed["headers"])["Host"] == f"127.0.0.1:{gateway.port}"
    await gateway.access_logged('upgrade="websocket"')


@needs_nginx
async def test_gateway_refuses_without_header_403_and_without_certificate_400(
        gateway: Gateway, gateway_tls: tuple[trustme.CA, Path, ClientCert]) -> None:
    _, ca_file, cert = gateway_tls
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/user/alice/api", ssl=client_tls(ca_file, cert)) as response:
            assert response.status == 403
            assert "access gateway" in (await response.json())["message"]
        async with session.get(f"{gateway.url}/user/alice/api", headers=[GATEWAY_HEADER],
                               ssl=client_tls(ca_file)) as response:
            assert response.status == 400
            assert "No required SSL certificate was sent" in await response.text()
    assert "client sent no required SSL certificate" in gateway.error_log.read_text()


@needs_nginx
async def test_gateway_stop_removes_its_files(gateway: Gateway) -> None:
    gateway.stop()
    assert gateway.process.poll() is not None
    assert not gateway.workdir.exists()
