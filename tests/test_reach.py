"""Hubs as users really have them, against a real JupyterHub under a base path (``/jupyter/``): reached directly,
through a company's forward proxy (Debian's tinyproxy, and one of our own that alone can resolve the hub's name),
and behind an access gateway (Debian's nginx wanting a client certificate and a header).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from jupyter_dev_proxy.demo import free_port
from tests.kit.browser import browser_env, opened
from tests.kit.hub import Hub, hub_env, module_hub, require_real_servers
from tests.kit.ide import ide_session, whole_lifecycle
from tests.kit.netservers import (
    ClientCert,
    Gateway,
    ResolvingConnectProxy,
    start_nginx_gateway,
    start_tinyproxy,
    write_client_cert,
)
from tests.kit.process import ProxyProcess, failed_start, run_proxy
from tests.kit.webapp import app_url, serve_web_app, use_web_app

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

require_real_servers("tinyproxy", "nginx")
BASE = "/jupyter/"
hub = module_hub(BASE)


def reach_env(hub: Hub, token: str, **more: str) -> dict[str, str]:
    """A user's settings for the hub under its base path, as pasted from the browser's address bar."""
    return hub_env(hub, token, **{"JUPYTERHUB_URL": f"{hub.address}/hub/home", **more})


# -- a hub under a path -------------------------------------------------------------------------------------------

async def test_under_a_base_path_the_ides_whole_lifecycle_works(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice")))
    url, token = proxy.wait_for_banner()
    assert f"→ {hub.url}/jupyter/user/alice/ (certificate checked for 'jupyterhub')" in proxy.output
    assert f"Hub: JupyterHub {hub.version} · user alice · default server /jupyter/user/alice/: running." \
        in proxy.output
    logo = await whole_lifecycle(url, token)
    assert logo.startswith("/jupyter/user/alice/kernelspecs/python3/")  # handed out with the base, followed as is


def test_the_original_variables_reach_a_hub_under_a_base_path(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    env = reach_env(hub, hub.make_token("alice"), JUPYTER_SERVER_IP_OR_NAME="127.0.0.1",
                    JUPYTER_SERVER_PORT=hub.url.rsplit(":", 1)[1], JUPYTER_SERVER_BASE_URL="jupyter")
    del env["JUPYTERHUB_URL"]
    proxy = run_proxy(proxies, env)
    proxy.wait_for_banner()
    assert proxy.get("/api/status")[0] == 200


def test_under_a_base_path_a_stopped_server_is_started_with_progress(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice")
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice")))
    proxy.wait_for_banner()
    output = proxy.output
    assert output.index("Starting your server: 0% Server requested") < \
        output.index("Starting your server: 100% Server ready at /jupyter/user/alice/")
    assert "default server /jupyter/user/alice/: started just now." in output
    assert proxy.get("/api/status")[0] == 200


def test_under_a_base_path_a_culled_server_is_a_424_and_named_with_the_base(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice")))
    proxy.wait_for_banner()
    hub.ensure_stopped("alice")  # what the idle culler does
    status, body = proxy.get("/api/kernels")
    assert status == 424 and body["reason"] == "server-not-running"
    assert "/jupyter/user/alice/" in body["message"]
    proxy.wait_for(f"Start it from {hub.url}/jupyter/hub/home")


def test_a_missing_scope_names_the_token_page_under_the_base(hub: Hub) -> None:
    token = hub.make_token("alice", scopes=["read:users!user=alice"])
    message = failed_start(reach_env(hub, token))
    assert f"{hub.url}/jupyter/hub/token" in message and "access:servers!user=alice" in message


UNDER_THE_BASE_BUT_NOT_ALICES = [
    "/jupyter/hub/api", "/jupyter/hub/api/users", "/jupyter/hub/api/users/bob", "/jupyter/hub/home",
    "/jupyter/hub/token", "/jupyter/%68ub/api", "/jupyter/user/bob/api/status", "/jupyter/user/%62ob/api/status",
    "/jupyter/user/alice/../bob/api/status", "/jupyter/user/alice/%2e%2e/bob/api/status",
    "/jupyter/user/alicex/api/status", "/%6aupyter/user/bob/api/status", "/jupyter/hub/user/bob/api/status",
    "/hub/api", "/user/bob/api/status", "/jupyter/../jupyter/user/bob/api/status",
]


def test_under_a_base_path_confinement_is_as_strict(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    hub.ensure_running("bob")
    token = hub.make_token("alice")
    # alice's token alone opens bob's server and the hub's API (her role allows it): only the proxy keeps her out.
    assert hub.status_of("/jupyter/user/bob/api/status", token) == 200
    assert hub.status_of("/jupyter/hub/api/user", token) == 200
    proxy = run_proxy(proxies, reach_env(hub, token))
    proxy.wait_for_banner()
    assert proxy.reached(UNDER_THE_BASE_BUT_NOT_ALICES) == {}
    assert proxy.get("/jupyter/user/alice/api/status")[0] == 200  # her own server's absolute URLs work
    assert proxy.get("/api/status")[0] == 200


async def test_location_and_cookies_under_a_base_path_are_mapped_to_the_ides_view(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice")))
    url, token = proxy.wait_for_banner()
    async with ide_session(url, token) as client:
        async with client.post("/api/contents", json={"type": "notebook"}) as response:
            assert response.status == 201
            assert response.headers["Location"].startswith("/api/contents/")  # the server wrote /jupyter/user/...
        async with client.get("/tree", allow_redirects=False) as response:
            location = response.headers.get("Location", "")
            assert not location.startswith(("/jupyter", "http")), location


# -- behind a company proxy ------------------------------------------------------------------------------------------

PROXY_USER, PROXY_PASSWORD = "ide-user", "s3cret-proxy-pw"
HUB_NAME = "hub.internal.test"  # only the resolving proxy knows this name


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[object]:
    proxy = start_tinyproxy(PROXY_USER, PROXY_PASSWORD)
    try:
        yield proxy
    finally:
        proxy.stop()


def _hub_port(hub: Hub) -> str:
    return hub.url.rsplit(":", 1)[1]


async def test_through_tinyproxy_with_basic_auth_everything_goes_through_it(
        hub: Hub, tinyproxy: object, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    before = len(tinyproxy.connects())  # type: ignore[attr-defined]
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=tinyproxy.url))  # type: ignore[attr-defined]
    url, token = proxy.wait_for_banner()
    assert f"through the proxy http://{PROXY_USER}:***@127.0.0.1:" in proxy.output
    startup = tinyproxy.connects()[before:]  # type: ignore[attr-defined]
    assert startup and set(startup) == {f"127.0.0.1:{_hub_port(hub)}"}  # the hub API calls went through it
    await whole_lifecycle(url, token)  # HTTP requests and websocket handshakes
    assert len(tinyproxy.connects()) > len(startup) + before + 2  # type: ignore[attr-defined]
    assert PROXY_PASSWORD not in proxy.output


async def test_through_tinyproxy_under_a_base_path_a_web_app_works_on_its_own_port(
        hub: Hub, tinyproxy: object, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    async with serve_web_app() as app:
        app_port = app.port
        before = len(tinyproxy.connects())  # type: ignore[attr-defined]
        proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=tinyproxy.url,  # type: ignore[attr-defined]
                                             JUPYTER_PROXY_FORWARD=f"{app_port}:0"))
        seen = await use_web_app(*app_url(proxy, app_port))
        assert seen["path"] == "/api/echo"
        assert len(tinyproxy.connects()) > before  # type: ignore[attr-defined]


async def test_a_hub_name_only_the_company_proxy_can_resolve_is_reached_through_it(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    resolving = ResolvingConnectProxy(hosts={HUB_NAME: "127.0.0.1"}, credentials=(PROXY_USER, PROXY_PASSWORD))
    with resolving.run_in_thread():
        env = reach_env(hub, hub.make_token("alice"), JUPYTER_SERVER_NAME="jupyterhub",
                        JUPYTERHUB_URL=f"https://{HUB_NAME}:{_hub_port(hub)}/jupyter/", https_proxy=resolving.url)
        proxy = run_proxy(proxies, env)
        url, token = proxy.wait_for_banner()
        await whole_lifecycle(url, token)
        assert set(resolving.targets) == {f"{HUB_NAME}:{_hub_port(hub)}"}
        assert {c.proxy_authorization for c in resolving.seen} == {"Basic aWRlLXVzZXI6czNjcmV0LXByb3h5LXB3"}
        assert PROXY_PASSWORD not in proxy.output and "aWRlLXVzZXI6czNjcmV0LXByb3h5LXB3" not in proxy.output


def test_no_proxy_sends_the_hub_around_the_company_proxy(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there: using it would fail
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=nowhere,
                                         NO_PROXY="localhost,.internal.test,127.0.0.0/8"))
    proxy.wait_for_banner()
    assert proxy.get("/api/status")[0] == 200


def test_jupyter_hub_proxy_none_wins_over_https_proxy(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=f"http://127.0.0.1:{free_port()}",
                                         JUPYTER_HUB_PROXY="none"))
    proxy.wait_for_banner()
    assert proxy.get("/api/status")[0] == 200


def test_a_company_proxy_wanting_credentials_is_named_as_the_hop_that_failed(hub: Hub, tinyproxy: object) -> None:
    port = tinyproxy.port  # type: ignore[attr-defined]
    message = failed_start(reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=f"http://127.0.0.1:{port}"))
    assert f"The company proxy at http://127.0.0.1:{port} wants a user name and password (407" in message
    assert "HTTPS_PROXY" in message
    message = failed_start(reach_env(hub, hub.make_token("alice"),
                                     JUPYTER_HUB_PROXY=f"http://{PROXY_USER}:wrong-pw@127.0.0.1:{port}"))
    assert "refused the user name and password in JUPYTER_HUB_PROXY" in message and "wrong-pw" not in message


def test_an_unreachable_company_proxy_is_named_as_the_hop_that_failed(hub: Hub) -> None:
    port = free_port()
    message = failed_start(reach_env(hub, hub.make_token("alice"),
                                     HTTPS_PROXY=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"))
    assert f"The company proxy at http://{PROXY_USER}:***@127.0.0.1:{port} (from HTTPS_PROXY) could not be " \
           "reached" in message
    assert PROXY_PASSWORD not in message


def test_a_company_proxy_that_refuses_the_hub_or_cannot_reach_it_is_named(hub: Hub, tinyproxy: object) -> None:
    refusing = ResolvingConnectProxy(hosts={}, refuse_status=403)
    with refusing.run_in_thread():
        message = failed_start(reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=refusing.url))
    assert f"The company proxy at {refusing.url} refused to connect to the hub at 127.0.0.1:" in message
    assert "403 Forbidden" in message
    message = failed_start(reach_env(hub, hub.make_token("alice"), HTTPS_PROXY=tinyproxy.url,  # type: ignore[attr-defined]
                                     JUPYTERHUB_URL=f"https://127.0.0.1:{free_port()}/jupyter/"))
    assert "could not reach the hub at 127.0.0.1:" in message and "500" in message


def test_a_password_on_the_command_line_is_refused(hub: Hub) -> None:
    message = failed_start(reach_env(hub, hub.make_token("alice")), "--hub-proxy",
                           f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:3128")
    assert "JUPYTER_HUB_PROXY" in message and PROXY_PASSWORD not in message


# -- behind an access gateway -----------------------------------------------------------------------------------------

GATEWAY_HEADER = ("CF-Access-Client-Secret", "gw-service-secret-42")


@dataclass(frozen=True)
class GatewaySetup:
    gateway: Gateway
    ca_file: Path  # what the IDE's side trusts: the gateway's CA
    client: ClientCert


@pytest.fixture(scope="module")
def gateway(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewaySetup]:
    """nginx in front of the hub, as a zero-trust edge: a client certificate and a service header, or no entry."""
    directory = tmp_path_factory.mktemp("gateway")
    server_ca, client_ca = trustme.CA(organization_name="Gateway CA"), trustme.CA(organization_name="Client CA")
    client_ca_file, ca_file = directory / "client-ca.pem", directory / "gateway-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    server_ca.cert_pem.write_to_path(str(ca_file))
    started = start_nginx_gateway(hub.url, hub.ca_file, server_ca, client_ca_file, GATEWAY_HEADER)
    try:
        yield GatewaySetup(started, ca_file, write_client_cert(client_ca, directory))
    finally:
        started.stop()


def gateway_env(hub: Hub, setup: GatewaySetup, **more: str) -> dict[str, str]:
    return reach_env(hub, hub.make_token("alice"), JUPYTERHUB_URL=f"{setup.gateway.url}/jupyter/",
                     JUPYTER_CLUSTER_CA_CERT=str(setup.ca_file), JUPYTER_SERVER_NAME="gateway.test", **more)


async def test_through_a_gateway_with_a_client_certificate_and_a_header_the_ide_works(
        hub: Hub, gateway: GatewaySetup, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    env = gateway_env(hub, gateway, JUPYTER_CLIENT_CERT=str(gateway.client.cert_file),
                      JUPYTER_CLIENT_KEY=str(gateway.client.key_file), JUPYTER_HUB_HEADERS=json.dumps(dict([GATEWAY_HEADER])))
    proxy = run_proxy(proxies, env)
    url, token = proxy.wait_for_banner()
    assert "with gateway credentials" in proxy.output
    await whole_lifecycle(url, token)
    async with ide_session(url, token) as client:
        async with client.get("/api/status") as response:
            assert GATEWAY_HEADER[1] not in str(response.headers)  # the gateway's secret never reaches the IDE
    assert GATEWAY_HEADER[1] not in proxy.output
    log = gateway.gateway.access_log.read_text()
    assert "client_cert=SUCCESS" in log and "/jupyter/user/alice/api/kernels/" in log


async def test_through_a_gateway_a_web_app_works_on_its_own_port(
        hub: Hub, gateway: GatewaySetup, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    async with serve_web_app() as app:
        app_port = app.port
        env = gateway_env(hub, gateway, JUPYTER_CLIENT_CERT=str(gateway.client.cert_file),
                          JUPYTER_CLIENT_KEY=str(gateway.client.key_file),
                          JUPYTER_HUB_HEADERS=json.dumps(dict([GATEWAY_HEADER])), JUPYTER_PROXY_FORWARD=f"{app_port}:0")
        proxy = run_proxy(proxies, env)
        seen = await use_web_app(*app_url(proxy, app_port))
    assert seen["path"] == "/api/echo" and GATEWAY_HEADER[1] not in str(seen)
    await gateway.gateway.access_logged(f"/jupyter/user/alice/proxy/{app_port}/ws")


def test_a_key_inside_the_certificate_file_is_understood(
        hub: Hub, gateway: GatewaySetup, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, gateway_env(hub, gateway, JUPYTER_CLIENT_CERT=str(gateway.client.combined_file),
                                           JUPYTER_HUB_HEADERS=json.dumps(dict([GATEWAY_HEADER]))))
    proxy.wait_for_banner()
    assert proxy.get("/api/status")[0] == 200


def test_without_the_client_certificate_the_gateway_not_the_hub_is_named(hub: Hub, gateway: GatewaySetup) -> None:
    message = failed_start(gateway_env(hub, gateway, JUPYTER_HUB_HEADERS=json.dumps(dict([GATEWAY_HEADER]))))
    assert "An access gateway in front of the hub refused" in message
    assert "client certificate" in message and "JUPYTER_CLIENT_CERT" in message


def test_without_the_header_the_gateway_not_the_hub_is_named(hub: Hub, gateway: GatewaySetup) -> None:
    message = failed_start(gateway_env(hub, gateway, JUPYTER_CLIENT_CERT=str(gateway.client.combined_file)))
    assert "An access gateway in front of the hub refused" in message and "403" in message
    assert "JUPYTER_HUB_HEADERS" in message


# -- signing in with the hub's login, on each of these paths ------------------------------------------------------

def _signing_in(hub: Hub, tmp_path: Path, env: dict[str, str], **browser: Any) -> dict[str, str]:
    """``env`` without a token, with the proxy registered for sign-in and a browser that signs in as alice."""
    env = {key: value for key, value in env.items() if key != "JUPYTERHUB_API_TOKEN"}
    return {**env, "JUPYTERHUB_OAUTH_CLIENT_ID": hub.sign_in_client_id,
            "JUPYTERHUB_OAUTH_CLIENT_SECRET": hub.sign_in_secret, "JUPYTER_PROXY_PORT": str(hub.sign_in_port),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            **browser_env(tmp_path / "browser.jsonl", "alice", hub.user_password,
                          browser.pop("ca_file", hub.ca_file), **browser)}


async def test_under_a_base_path_through_a_company_proxy_signing_in_with_the_hubs_login_works(
        hub: Hub, tinyproxy: object, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    before = len(tinyproxy.connects())  # type: ignore[attr-defined]
    proxy = run_proxy(proxies, _signing_in(hub, tmp_path, reach_env(hub, "", HTTPS_PROXY=tinyproxy.url)))  # type: ignore[attr-defined]
    url, token = proxy.wait_for_banner()
    [browser] = opened(tmp_path / "browser.jsonl", 1)
    assert browser["url"].startswith(f"{hub.url}/jupyter/hub/api/oauth2/authorize?") and browser["status"] == 200
    # The code's exchange and every hub call after it went through the company proxy.
    assert set(tinyproxy.connects()[before:]) == {f"127.0.0.1:{_hub_port(hub)}"}  # type: ignore[attr-defined]
    await whole_lifecycle(url, token)
    assert PROXY_PASSWORD not in proxy.output and hub.sign_in_secret not in proxy.output


async def test_behind_a_gateway_signing_in_with_the_hubs_login_works(
        hub: Hub, gateway: GatewaySetup, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    env = gateway_env(hub, gateway, JUPYTER_CLIENT_CERT=str(gateway.client.combined_file),
                      JUPYTER_HUB_HEADERS=json.dumps(dict([GATEWAY_HEADER])))
    proxy = run_proxy(proxies, _signing_in(hub, tmp_path, env, ca_file=gateway.ca_file,
                                           client_cert=gateway.client.combined_file,
                                           headers=dict([GATEWAY_HEADER])))
    url, token = proxy.wait_for_banner()
    [browser] = opened(tmp_path / "browser.jsonl", 1)
    assert browser["url"].startswith(f"{gateway.gateway.url}/jupyter/hub/api/oauth2/authorize?"), browser
    assert browser["status"] == 200, browser
    await whole_lifecycle(url, token)
    log = gateway.gateway.access_log.read_text()
    assert "/jupyter/hub/api/oauth2/token" in log  # the proxy exchanged the code through the gateway
    assert GATEWAY_HEADER[1] not in proxy.output and hub.sign_in_secret not in proxy.output
