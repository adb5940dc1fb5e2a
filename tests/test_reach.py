"""Hubs as users really have them, against a real JupyterHub under a base path (``/jupyter/``): reached directly,
through a company's forward proxy (Debian's tinyproxy, and one of our own that alone can resolve the hub's name),
and behind an access gateway (Debian's nginx wanting a client certificate and a header).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.hubserver import Hub, missing_hub_tools, start_hub
from tests.ide import ide_session, whole_lifecycle
from tests.proxyprocess import ProxyProcess, clean_env, run_proxy

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

_missing = missing_hub_tools()
if _missing:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI must run the hub tests, but {_missing}")
    pytest.skip(f"no real hub here: {_missing}", allow_module_level=True)

BASE = "/jupyter/"


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    hub = start_hub(base=BASE)
    try:
        yield hub
    finally:
        hub.stop()


def reach_env(hub: Hub, token: str, **more: str) -> dict[str, str]:
    """A user's settings for the hub under its base path, as pasted from the browser's address bar."""
    return clean_env(**{"JUPYTERHUB_URL": f"{hub.address}/hub/home", "JUPYTER_CLUSTER_CA_CERT": str(hub.ca_file),
                        "JUPYTERHUB_API_TOKEN": token, "JUPYTER_PROXY_PORT": "0",
                        "JUPYTER_PROXY_IP_OR_NAME": "127.0.0.1", **more})


def hub_status(hub: Hub, path: str, token: str) -> int:
    """The status the hub itself gives ``path`` for ``token``, asked directly (not through the proxy)."""
    request = urllib.request.Request(hub.url + path, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, context=hub.client_tls(), timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


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
    from tests.proxyprocess import failed_start
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
    assert hub_status(hub, "/jupyter/user/bob/api/status", token) == 200
    assert hub_status(hub, "/jupyter/hub/api/user", token) == 200
    proxy = run_proxy(proxies, reach_env(hub, token))
    proxy.wait_for_banner()
    reached = {}
    for target in UNDER_THE_BASE_BUT_NOT_ALICES:
        status, body = proxy.get(target)
        if status < 400:
            reached[target] = (status, body)
    assert reached == {}
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
