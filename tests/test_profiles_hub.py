"""One proxy process serving every profile of the profiles file at once, each under /<profile>/, against real
servers: a real JupyterHub (alice's default server, and bob's named server 'gpu' created with its spawn options:
the hub's servers of one user share a home, where two lifecycles at once would race on Untitled.ipynb), a
second "hub" with its own CA and token (a real jupyter_server), and a hub that is down. The IDE's whole lifecycle
runs through the three at the same time; confinement is probed per profile. Run with the hub tests (-m hub).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_dev_proxy.demo import DemoServer, free_port, start_demo_server
from tests.kit.env import clean_env
from tests.kit.hub import Hub, module_hub, require_real_servers
from tests.kit.ide import whole_lifecycle
from tests.kit.process import ProxyProcess, run_proxy

pytestmark = [pytest.mark.hub, pytest.mark.timeout(300)]

require_real_servers()
hub = module_hub()

GPU_OPTIONS = {"profile": "gpu"}
PROFILES = '''
[defaults]
listen-host = "127.0.0.1"

[profiles.main]
hub-url = "{hub}"
ca-cert = "{hub_ca}"
hub-token-file = "{alice_token}"

[profiles.gpu]
hub-url = "{hub}"
ca-cert = "{hub_ca}"
hub-token-file = "{bob_token}"
named-server = "gpu"
server-options = {{ profile = "gpu" }}

[profiles.lab]
hub-url = "{lab}"
ca-cert = "{lab_ca}"
tls-name = "{lab_tls_name}"
username = "{lab_user}"
hub-token-file = "{lab_token}"

[profiles.down]
hub-url = "https://127.0.0.1:{down_port}"
hub-token-file = "{alice_token}"
'''
IDE_URL = re.compile(r"IDE URL for (\S+): (http://\S+/)\?token=(\S+)  (.*)")


@pytest.fixture(scope="module")
def lab() -> Iterator[DemoServer]:
    """The second hub: a real jupyter_server with a CA of its own, for a user the first hub does not have (two
    profiles with the same server address on two hubs make the address a server hands out ambiguous at the root)."""
    server = start_demo_server("carol")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def profiles(hub: Hub, lab: DemoServer, tmp_path: Path) -> Path:
    alice_token, bob_token, lab_token = tmp_path / "alice-token", tmp_path / "bob-token", tmp_path / "lab-token"
    alice_token.write_text(hub.make_token("alice"))
    bob_token.write_text(hub.make_token("bob"))
    lab_token.write_text(lab.token)
    path = tmp_path / "config.toml"
    path.write_text(PROFILES.format(hub=hub.address, hub_ca=hub.ca_file, alice_token=alice_token, bob_token=bob_token,
                                    lab=lab.url,
                                    lab_ca=lab.ca_file, lab_tls_name=lab.tls_name, lab_user=lab.username,
                                    lab_token=lab_token, down_port=free_port()))
    return path


def serve_all(proxies: list[ProxyProcess], tmp_path: Path, profiles: Path,
              names: tuple[str, ...] = ("main", "gpu", "lab", "down")) -> tuple[ProxyProcess, dict[str, str]]:
    """``python proxy.py`` with the profiles file and nothing else; its IDE URL per profile, and the token."""
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
                    JUPYTER_DEV_PROXY_CONFIG=str(profiles), JUPYTER_PROXY_PORT="0")
    proxy = run_proxy(proxies, env)
    proxy.wait_for(r"Status page: http://\S+")
    lines = {match.group(1): match for match in IDE_URL.finditer(proxy.output)}
    assert tuple(lines) == names, proxy.output
    for name, line in lines.items():  # a spawn slower than the grace time: the port opened before it was ready
        if line.group(4).startswith("STARTING"):
            proxy.wait_for(rf"IDE URL for {name}: \S+  now ready|WARNING {name}: Not served")
    token = lines["main"].group(3)
    assert {match.group(3) for match in lines.values()} == {token}  # one token for every profile
    proxy.url, proxy.token = lines["main"].group(2).removesuffix("main/"), token
    return proxy, {name: match.group(2) for name, match in lines.items()}


async def test_one_process_serves_three_profiles_to_the_ide_at_once_and_a_hub_that_is_down_holds_none_of_them(
        hub: Hub, lab: DemoServer, profiles: Path, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    if hub.server_model("bob", "gpu") is not None:
        hub.delete_named_server("bob", "gpu")  # so that the proxy creates it
    before = len(hub.spawn_options())
    proxy, urls = serve_all(proxies, tmp_path, profiles)
    banner = proxy.output
    assert f"IDE URL for main: {urls['main']}?token={proxy.token}  alice's default server on {hub.address}: " \
           "running" in banner
    assert (f"bob's named server 'gpu' on {hub.address}: started just now" in banner
            or f"IDE URL for gpu: {urls['gpu']}?token={proxy.token}  now ready" in banner), banner
    assert re.search(r"IDE URL for down: \S+  NOT SERVING", banner)
    assert re.search(r"WARNING down: Not served: The hub at https://127\.0\.0\.1:\d+ ", banner), banner
    assert "INFO gpu: The hub has no named server 'gpu' yet: starting it creates it." in banner
    # The named server was created with the profile's options, and the hub has them.
    assert hub.spawn_options()[before:] == [{"server": "gpu", "user_options": GPU_OPTIONS}]
    assert (hub.server_model("bob", "gpu") or {}).get("user_options") == GPU_OPTIONS

    logos = await asyncio.gather(*(whole_lifecycle(urls[name], proxy.token) for name in ("main", "gpu", "lab")))
    assert logos == ["/user/alice/kernelspecs/python3/logo-64x64.png",
                     "/user/bob/gpu/kernelspecs/python3/logo-64x64.png",
                     "/user/carol/kernelspecs/python3/logo-64x64.png"]

    status, down = proxy.get("/down/api/status")
    assert status == 503 and down["reason"] == "profile-not-serving"
    assert down["message"].startswith("The profile 'down' is not served: The hub at https://127.0.0.1:")
    status, board = proxy.get("/jupyter-dev-proxy/api/status")
    states = {entry["name"]: (entry["state"], entry["hub"]) for entry in board["profiles"]}
    assert states["main"] == ("running", hub.address) and states["gpu"] == ("running", hub.address)
    assert states["lab"][1] == lab.url and states["down"][0] == "not serving"
    assert proxy.stop() == 0


async def test_confinement_holds_per_profile_prefix_in_the_process(
        hub: Hub, profiles: Path, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy, _ = serve_all(proxies, tmp_path, profiles)
    for target in ["/main/../lab/api/contents", "/main/%2e%2e/lab/api/contents", "/main%2F..%2Flab/api/contents",
                   "/lab/../main/api/contents", "/lab/user/alice/api/contents", "/lab/user/bob/gpu/api/contents",
                   "/lab/hub/api/users", "/main/hub/api/users", "/gpu/../../user/alice/api/contents",
                   "/main/user/bob/gpu/api/contents", "/gpu/user/alice/api/contents", "/down/../main/api/contents"]:
        status, answer = proxy.get(target)
        assert status >= 400 and set(answer) == {"message", "reason"}, (target, status, answer)
    assert proxy.get("/lab/api/contents")[0] == 200 and proxy.get("/main/api/contents")[0] == 200


async def test_a_named_server_running_with_other_options_is_reported_and_not_restarted(
        hub: Hub, profiles: Path, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    hub.ensure_stopped("bob", "gpu")
    status, body = hub.api("POST", "/users/bob/servers/gpu", body={"user_options": {"profile": "default"}})
    assert status in (201, 202), (status, body)
    hub.ensure_running("bob", "gpu")
    before = len(hub.spawn_options())
    proxy, urls = serve_all(proxies, tmp_path, profiles)
    said = ('It runs with the options {"profile": "default"}, not {"profile": "gpu"} as asked; it was not restarted '
            "(its kernels would go): to have those, stop it (jupyter-dev-proxy stop gpu, or from "
            f"{hub.address}/hub/home) and start the proxy again.")
    assert f"Your named server 'gpu': {said}" in proxy.output
    assert f"bob's named server 'gpu' on {hub.address}: running (with other options than asked: see above)" \
        in proxy.output
    status, board = proxy.get("/gpu/jupyter-dev-proxy/api/status")
    assert status == 200 and board["server"]["note"] == said
    assert hub.spawn_options()[before:] == []  # not restarted
    assert (hub.server_model("bob", "gpu") or {}).get("user_options") == {"profile": "default"}
    hub.ensure_stopped("bob", "gpu")


async def test_a_profile_whose_spawn_fails_answers_503_with_the_hubs_sentence_and_the_others_serve(
        hub: Hub, profiles: Path, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token_file = tmp_path / "alice-token"  # written by the profiles fixture
    profiles.write_text(profiles.read_text() + f'\n[profiles.tpu]\nhub-url = "{hub.address}"\nca-cert = "{hub.ca_file}"'
                                               f'\nhub-token-file = "{token_file}"\nnamed-server = "tpu"\n'
                                               'server-options = { profile = "tpu" }\n')
    proxy, urls = serve_all(proxies, tmp_path, profiles, names=("main", "gpu", "lab", "down", "tpu"))
    assert re.search(r"IDE URL for tpu: \S+  NOT SERVING", proxy.output)
    status, answer = proxy.get("/tpu/api/status")
    assert status == 503 and answer["reason"] == "profile-not-serving", answer
    assert "unknown profile 'tpu': choose 'default' or 'gpu'" in answer["message"], answer  # the valid slugs
    assert proxy.get("/main/api/status")[0] == 200
    status, board = proxy.get("/jupyter-dev-proxy/api/status")
    tpu = next(entry for entry in board["profiles"] if entry["name"] == "tpu")
    assert tpu["state"] == "not serving" and "unknown profile 'tpu'" in tpu["failure"]
    hub.delete_named_server("alice", "tpu")
