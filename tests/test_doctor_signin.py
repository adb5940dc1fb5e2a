"""``jupyter-dev-proxy doctor`` for the browser sign-in, against a real JupyterHub with the proxy registered as a
service OAuth client (tests/kit/hub.py): what it checks from here (the hub knows the client and its secret, the
callback's port), and ``doctor --service-entry``, the entry an admin adds, down to the run-time API call the hub
accepts and a sign-in through the service it makes."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_dev_proxy.demo import free_port
from tests.kit.browser import NO_ANSWER, sign_in
from tests.kit.hub import SIGN_IN_CALLBACK_PATH, Hub, hub_env, module_hub, require_real_servers, start_hub
from tests.kit.process import PROXY

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers()
hub = module_hub()

# The scopes the proxy needs on JupyterHub 6 (the kit's hub), each on the signing-in user's own servers only.
MINIMAL_SCOPES_6 = ["access:servers!user", "read:servers!user", "start:servers!user", "read:tokens!user"]


def _doctor(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(PROXY), "doctor", *args], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


def _sign_in_env(hub: Hub, tmp_path: Path, **more: str) -> dict[str, str]:
    """A user's settings for signing in with the kit's service: its id and secret, the proxy on its callback's
    address; a token of alice's so that the rest of the chain holds; the token store in ``tmp_path``."""
    values = {"JUPYTERHUB_OAUTH_CLIENT_ID": hub.sign_in_client_id, "JUPYTERHUB_OAUTH_CLIENT_SECRET": hub.sign_in_secret,
              "JUPYTER_PROXY_IP_OR_NAME": "127.0.0.1", "JUPYTER_PROXY_PORT": str(hub.sign_in_port),
              "XDG_CONFIG_HOME": str(tmp_path), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    return hub_env(hub, hub.make_token("alice"), **(values | more))


def _lines(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line[2:].startswith(prefix)]


def test_doctor_with_the_registered_client_checks_each_sign_in_link_and_shows_no_secret(
        hub: Hub, tmp_path: Path) -> None:
    _, output = _doctor(_sign_in_env(hub, tmp_path))
    assert _lines(output, "sign-in client") == [
        f"✓ sign-in client: the hub knows {hub.sign_in_client_id} and its secret"], output
    assert _lines(output, "sign-in secret") == ["✓ sign-in secret: the api_token of the service 'jupyter-dev-proxy'"]
    [callback] = _lines(output, "sign-in callback")
    assert callback.startswith(f"✓ sign-in callback: {hub.sign_in_callback}"), output
    # The failures only the browser sees, each in the hub's own words.
    assert '"You do not have permission to access JupyterHub service jupyter-dev-proxy" (403)' in output
    assert 'c.JupyterHub.extra_user_scopes = ["access:services!service=jupyter-dev-proxy"]' in output
    assert f'"Mismatching redirect URI." (400): the service\'s oauth_redirect_uri must be exactly ' \
           f"{hub.sign_in_callback}" in output
    assert '"Invalid client_id parameter value." (400)' in output and "within 5 minutes" in output
    assert hub.sign_in_secret not in output
    # In the chain's order: the sign-in (how a token is got) after the hub API and before the token.
    links = [line.split(":")[0] for line in output.splitlines()]
    assert links.index("✓ hub API") < links.index("✓ sign-in client") < links.index("✓ token")


def test_doctor_names_a_wrong_secret_and_an_unknown_client_with_the_fix(hub: Hub, tmp_path: Path) -> None:
    for changed in ({"JUPYTERHUB_OAUTH_CLIENT_SECRET": "not-the-secret"},
                    {"JUPYTERHUB_OAUTH_CLIENT_ID": "service-nobody"}):
        status, output = _doctor(_sign_in_env(hub, tmp_path, **changed))
        assert status == 1, output
        [line] = _lines(output, "sign-in client")
        client = changed.get("JUPYTERHUB_OAUTH_CLIENT_ID", hub.sign_in_client_id)
        assert line.startswith(f"✗ sign-in client: the hub does not know {client} with this secret"), output
        assert "your hub's admin" in line and "doctor --service-entry" in line
        assert not _lines(output, "sign-in secret")  # whose the secret is only matters for a client the hub knows
        assert "not-the-secret" not in output


@pytest.fixture
def port_of_another_program(hub: Hub) -> Iterator[None]:
    """Another program listening on the callback's port: it takes connections and closes them unanswered."""
    listener = socket.create_server(("127.0.0.1", hub.sign_in_port))
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            connection, _ = listener.accept()
            connection.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        socket.create_connection(("127.0.0.1", hub.sign_in_port)).close()  # wakes accept() to see stopping
        thread.join(timeout=10)
        listener.close()


def test_doctor_names_another_program_on_the_callbacks_port(
        hub: Hub, tmp_path: Path, port_of_another_program: None) -> None:
    status, output = _doctor(_sign_in_env(hub, tmp_path))
    assert status == 1, output
    [line] = _lines(output, "sign-in callback")
    assert line.startswith(f"✗ sign-in callback: 127.0.0.1:{hub.sign_in_port} is taken by another program"), output
    assert f"sends your browser back to exactly {hub.sign_in_callback}: stop that program" in line


def test_doctor_without_a_sign_in_service_points_at_the_service_entry(hub: Hub) -> None:
    _, output = _doctor(hub_env(hub, hub.make_token("alice")))
    [line] = _lines(output, "sign-in")
    assert line.startswith("✓ sign-in: with a token;") and "jupyter-dev-proxy doctor --service-entry" in line


# -- the service entry ------------------------------------------------------------------------------------------------

def _service_entry(hub: Hub, port: int) -> tuple[str, str, str]:
    """``doctor --service-entry`` for a proxy on 127.0.0.1:``port``: what goes into jupyterhub_config.py, the
    curl line, all of it."""
    status, output = _doctor(hub_env(hub, None, JUPYTER_PROXY_IP_OR_NAME="127.0.0.1", JUPYTER_PROXY_PORT=str(port)),
                             "--service-entry")
    assert status == 0, output
    config = output.split("\n# 2. ", 1)[0]  # the intro and part 1: Python for jupyterhub_config.py
    curl = output.split("\ncurl ", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")  # the shell's continuations
    return config, "curl " + curl, output


def _config_values(config: str) -> tuple[dict[str, Any], list[str]]:
    """The service entry's dict and the users' grant, read from the config part as the hub would run it."""
    tree = ast.parse(config)
    [entry] = [node.value.args[0] for node in tree.body if isinstance(node, ast.Expr)
               and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "c.JupyterHub.services.append"]
    [grant] = [node.value for node in tree.body if isinstance(node, ast.Assign)
               and ast.unparse(node.targets[0]) == "c.JupyterHub.extra_user_scopes"]
    return ast.literal_eval(entry), ast.literal_eval(grant)


def test_the_service_entry_is_python_with_the_minimal_scopes_and_the_callback(hub: Hub) -> None:
    port = free_port()
    callback = f"http://127.0.0.1:{port}{SIGN_IN_CALLBACK_PATH}"
    config, curl, output = _service_entry(hub, port)
    entry, grant = _config_values(config)
    assert entry["name"] == "jupyter-dev-proxy" and entry["oauth_client_id"] == "service-jupyter-dev-proxy"
    assert entry["oauth_redirect_uri"] == callback and entry["oauth_no_confirm"] is True
    assert entry["oauth_client_allowed_scopes"] == MINIMAL_SCOPES_6  # the kit's hub said it is JupyterHub 6
    assert "secrets.token_hex(32)" in entry["api_token"]
    assert grant == ["access:services!service=jupyter-dev-proxy"]
    assert f"JupyterHub {hub.version}" in output and "JUPYTERHUB_OAUTH_CLIENT_ID=service-jupyter-dev-proxy" in output
    body = json.loads(shlex.split(curl)[-1])
    assert body | {"api_token": entry["api_token"]} == {k: v for k, v in entry.items() if k != "name"}


async def test_the_printed_run_time_api_call_registers_a_service_a_user_signs_in_with(tmp_path: Path) -> None:
    """On a hub without the entry, the printed curl call (an admin token with admin:services) makes the service;
    alice, whom the kit's hub lets use it, then signs in through it and the hub sends her back to the callback."""
    unregistered = await asyncio.to_thread(start_hub, registered=False)
    try:
        port = free_port()
        _, curl, _ = _service_entry(unregistered, port)
        words = shlex.split(curl)
        url, body = words[words.index("-d") - 1], json.loads(words[-1])
        body["api_token"] = secret = secrets.token_hex(32)  # as the entry says to make it
        status, model = unregistered.api("POST", url.split("/hub/api", 1)[1], body=body)
        assert status == 201, (model, unregistered.log_tail())
        callback = body["oauth_redirect_uri"]
        query = {"response_type": "code", "client_id": body["oauth_client_id"], "redirect_uri": callback,
                 "state": "s", "code_challenge": "x" * 43, "code_challenge_method": "plain"}
        authorize = f"{unregistered.address}/hub/api/oauth2/authorize?{urllib.parse.urlencode(query)}"
        landing = await asyncio.to_thread(sign_in, authorize, "alice", unregistered.user_password,
                                          unregistered.ca_file)
        assert landing.status == NO_ANSWER and re.match(re.escape(callback) + r"\?code=", landing.url), landing
        assert unregistered.api("GET", "/user", token=secret)[1]["name"] == "jupyter-dev-proxy"
    finally:
        await asyncio.to_thread(unregistered.stop)
