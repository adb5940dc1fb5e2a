"""The profiles file against a real JupyterHub: ``servers`` lists what the hub has, ``stop`` stops a profile's
server, and ``--profile`` serves a profile's named server (created with its spawn options) to an IDE.

One hub for the module; alice's token in a file the profiles name. Run with the hub tests (``pytest -m hub``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_dev_proxy.demo import free_port
from tests.kit.env import clean_env
from tests.kit.hub import Hub, module_hub, require_real_servers
from tests.kit.ide import whole_lifecycle
from tests.kit.process import PROXY, START_SECONDS, ProxyProcess, failed_start, run_proxy

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers()
hub = module_hub()

GPU_OPTIONS = {"profile": "gpu"}
PROFILES = '''
[defaults]
hub-url = "{hub}"
ca-cert = "{ca}"

[profiles.main]
hub-token-file = "{token_file}"

[profiles.gpu]
named-server = "gpu"
server-options = {{ profile = "gpu" }}
hub-token-file = "{token_file}"

[profiles.scratch]
named-server = "scratch"
hub-token-file = "{token_file}"
start-server = "never"
'''


@pytest.fixture
def profiles(hub: Hub, tmp_path: Path) -> Path:
    """A profiles file with alice's default server, her named server 'gpu' with spawn options, and a named server
    'scratch' the hub does not have; her token in a file beside it."""
    token_file = tmp_path / "alice-token"
    token_file.write_text(hub.make_token("alice"))
    path = tmp_path / "config.toml"
    path.write_text(PROFILES.format(hub=hub.address, ca=hub.ca_file, token_file=token_file))
    return path


def user_env(tmp_path: Path, **more: str) -> dict[str, str]:
    """No proxy setting in the environment, no keyring, the configuration directory in tmp_path; the proxy on a
    free loopback port."""
    return clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
                     JUPYTER_PROXY_PORT="0", JUPYTER_PROXY_IP_OR_NAME="127.0.0.1", **more)


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROXY), *args], env=env, cwd="/", capture_output=True, text=True,
                          timeout=START_SECONDS, check=False)


def start_gpu(hub: Hub) -> None:
    """alice's named server 'gpu' running, started with the gpu options (JupyterHub 6's shape of the body)."""
    if not hub.is_running("alice", "gpu"):
        status, body = hub.api("POST", "/users/alice/servers/gpu", body={"user_options": GPU_OPTIONS})
        assert status in (201, 202), (status, body)
        hub.ensure_running("alice", "gpu")


def test_servers_lists_each_server_with_its_state_options_and_profile_and_a_hub_that_is_down_in_one_line(
        hub: Hub, profiles: Path, tmp_path: Path) -> None:
    hub.ensure_running("alice")
    start_gpu(hub)
    down = tmp_path / "down-token"
    down.write_text("token-of-a-hub-that-is-down")
    profiles.write_text(profiles.read_text() + f'\n[profiles.down]\nhub-url = "https://127.0.0.1:{free_port()}"\n'
                                               f'hub-token-file = "{down}"\n')
    result = command(user_env(tmp_path), "servers", "--config", str(profiles))
    assert result.returncode == 1, result  # one hub could not be asked
    down_line, block_head, header, *rows = result.stdout.splitlines()
    assert down_line.startswith("down: The hub at https://127.0.0.1:"), result.stdout  # the reason, one line
    assert block_head == f"alice on {hub.address}:"
    assert header.split() == ["SERVER", "STATE", "LAST", "ACTIVITY", "PROFILE", "URL", "THROUGH", "THIS", "PROXY",
                              "OPTIONS"]
    when = r"(\d{4}-\d\d-\d\d \d\d:\d\d UTC|-)"
    assert re.fullmatch(rf"  \(default\)\s+ready\s+{when}\s+main\s+http://localhost:8000/main/\s+-", rows[0]), rows
    assert re.fullmatch(rf'  gpu\s+ready\s+{when}\s+gpu\s+http://localhost:8000/gpu/\s+{{"profile": "gpu"}}',
                        rows[1]), rows
    assert re.fullmatch(r"  scratch\s+not created\s+-\s+scratch\s+http://localhost:8000/scratch/\s+-", rows[2]), rows
    assert len(rows) == 3 and "token-of-a-hub-that-is-down" not in result.stdout + result.stderr


def test_stop_stops_the_profiles_named_server_on_the_hub(hub: Hub, profiles: Path, tmp_path: Path) -> None:
    hub.ensure_running("alice")
    start_gpu(hub)
    result = command(user_env(tmp_path), "stop", "gpu", "--config", str(profiles))
    assert result.returncode == 0, result
    assert f"Stopped alice's named server 'gpu' on {hub.address} (profile gpu)." in result.stdout
    model = hub.server_model("alice", "gpu")
    assert model is not None and model["stopped"] and not model["pending"]
    assert hub.is_running("alice")  # the default server is not the profile's


async def test_a_profile_serves_its_named_server_started_with_its_options_through_the_whole_ide_lifecycle(
        hub: Hub, profiles: Path, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice", "gpu")
    status, _ = hub.api("DELETE", "/users/alice/servers/gpu", body={"remove": True})  # the proxy creates it again
    assert status in (202, 204, 404) and hub.server_model("alice", "gpu") is None
    before = len(hub.spawn_options())
    # bob's token in the environment: were it used, the banner would name bob and the lifecycle reach his server.
    env = user_env(tmp_path, JUPYTERHUB_API_TOKEN=hub.make_token("bob"))
    proxy = run_proxy(proxies, env, "--profile", "gpu", "--config", str(profiles))
    url, token = proxy.wait_for_banner()
    assert "user alice · named server 'gpu' /user/alice/gpu/: started just now." in proxy.output
    assert hub.spawn_options()[before:] == [{"server": "gpu", "user_options": GPU_OPTIONS}]
    await whole_lifecycle(url, token)
    assert (hub.server_model("alice", "gpu") or {}).get("user_options") == GPU_OPTIONS


def test_a_profile_without_a_token_of_its_own_refuses_to_start_rather_than_use_the_environments(
        hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[profiles.work]\nhub-url = "{hub.address}"\nca-cert = "{hub.ca_file}"\nusername = "alice"\n')
    message = failed_start(user_env(tmp_path, JUPYTERHUB_API_TOKEN=hub.make_token("alice")), "--profile", "work",
                           "--config", str(path))
    assert "The profile 'work' has no hub token: add hub-token-file (or hub-token-env)" in message


def test_without_a_profiles_file_servers_lists_the_servers_of_the_one_server_settings(
        hub: Hub, tmp_path: Path) -> None:
    hub.ensure_running("alice")
    env = user_env(tmp_path, JUPYTERHUB_URL=hub.address, JUPYTER_CLUSTER_CA_CERT=str(hub.ca_file),
                   JUPYTERHUB_API_TOKEN=hub.make_token("alice"))
    result = command(env, "servers")
    assert result.returncode == 0, result
    head, _, default, *_ = result.stdout.splitlines()
    assert head == f"alice on {hub.address}:"
    assert re.match(r"  \(default\)\s+ready\s+.*\s+\(settings\)\s+-\s+-$", default), result.stdout  # port 0: at start


def test_stop_without_a_profile_name_says_how_to_name_one(tmp_path: Path) -> None:
    result = command(user_env(tmp_path), "stop")
    assert result.returncode == 2 and "name the profile whose server to stop" in result.stderr


def test_stop_of_a_server_that_is_not_running_says_so(hub: Hub, profiles: Path, tmp_path: Path) -> None:
    hub.ensure_stopped("alice")
    result = command(user_env(tmp_path), "stop", "main", "--config", str(profiles))
    assert result.returncode == 0, result
    assert result.stdout == f"alice's default server on {hub.address} is not running: there is nothing to stop.\n"
