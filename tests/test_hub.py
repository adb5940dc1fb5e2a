"""The proxy against a real JupyterHub (TLS, configurable-http-proxy, SimpleLocalProcessSpawner), as users run it.

One hub for the module; each test puts alice's and bob's servers in the state it needs. Run on their own with
``pytest -m hub``; the fast suite is ``pytest -m "not hub"``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.kit.hub import BROKEN_MESSAGE, BROKEN_SERVER, Hub, hub_env, module_hub, require_real_servers
from tests.kit.process import ProxyProcess, failed_start, run_proxy

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers()
hub = module_hub()


# -- who am I ----------------------------------------------------------------------------------------------------

def test_the_token_owner_is_the_user_and_the_banner_names_hub_user_server_state_and_url(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice")
    proxy = run_proxy(proxies, hub_env(hub, token))  # no JUPYTER_USERNAME
    proxy.wait_for_banner()
    assert f"Hub: JupyterHub {hub.version} · user alice · default server /user/alice/: running." in proxy.output
    assert f"→ {hub.url}/user/alice/ (certificate checked for 'jupyterhub')" in proxy.output
    status, body = proxy.get("/api/status")
    assert status == 200 and "started" in body
    assert token not in proxy.output


def test_without_a_hub_token_the_ides_token_is_used_and_the_state_is_unknown(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    env = hub_env(hub, "", JUPYTER_USERNAME="alice")
    del env["JUPYTERHUB_API_TOKEN"]
    proxy = run_proxy(proxies, env)
    proxy.wait_for_banner()
    assert "default server /user/alice/: state unknown (checking and starting it needs JUPYTERHUB_API_TOKEN)" \
        in proxy.output
    proxy.token = hub.make_token("alice")  # the original workflow: the IDE carries the hub token
    assert proxy.get("/api/status")[0] == 200


def test_a_username_that_is_not_the_token_owner_stops_naming_both(hub: Hub) -> None:
    message = failed_start(hub_env(hub, hub.make_token("alice"), JUPYTER_USERNAME="bob"))
    assert "JUPYTER_USERNAME is 'bob' but the token belongs to 'alice'" in message


def test_a_user_that_does_not_exist_is_named(hub: Hub) -> None:
    # A service token acts for a user named in JUPYTER_USERNAME; the hub has no carol.
    message = failed_start(hub_env(hub, hub.admin_token, JUPYTER_USERNAME="carol"))
    assert "The hub has no user 'carol'" in message and "JUPYTER_USERNAME" in message


# -- starting the server --------------------------------------------------------------------------------------

def test_a_stopped_server_is_started_following_the_hubs_progress(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice")))
    proxy.wait_for_banner()
    output = proxy.output
    # Not a terminal: one log line per event of the hub's progress stream, in order.
    requested = output.index("Starting your server: 0% Server requested")
    ready = output.index("Starting your server: 100% Server ready at /user/alice/")
    assert requested < ready < output.index("default server /user/alice/: started just now.")
    assert hub.is_running("alice")
    assert proxy.get("/api/status")[0] == 200


def test_ctrl_c_while_the_server_starts_stops_the_proxy_without_a_traceback(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice")))
    proxy.wait_for("Starting your server: 0% Server requested")
    proxy.process.send_signal(signal.SIGINT)
    assert proxy.exit_status(timeout=30) == 128 + signal.SIGINT
    assert "stopped before the server was ready" in proxy.output and "Traceback" not in proxy.output


def test_start_server_never_only_reports_and_the_ide_is_told_not_running(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice")), "--start-server", "never")
    proxy.wait_for_banner()
    assert "default server /user/alice/: NOT RUNNING. Start it from" in proxy.output
    status, body = proxy.get("/api/kernels")
    assert status == 424 and body["reason"] == "server-not-running"
    assert not hub.is_running("alice")


def test_a_failed_start_shows_the_hubs_message(hub: Hub) -> None:
    hub.api("PUT", f"/users/alice/servers/{BROKEN_SERVER}")
    message = failed_start(hub_env(hub, hub.make_token("alice"), JUPYTERHUB_NAMED_SERVER=BROKEN_SERVER),
                           after_log=True)
    assert f"The hub could not start your named server '{BROKEN_SERVER}'" in message
    assert BROKEN_MESSAGE in message


# -- while running ------------------------------------------------------------------------------------------------

def _stopped_lines(proxy: ProxyProcess) -> list[str]:
    return [line for line in proxy.lines if "has stopped" in line]


def test_a_server_stopped_while_the_proxy_runs_answers_424_and_is_logged_once(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice")))
    proxy.wait_for_banner()
    assert proxy.get("/api/status")[0] == 200
    hub.ensure_stopped("alice")  # what the idle culler does overnight
    for path in ("/api/kernels", "/api/status", "/api/contents", "/api/kernels?1700000000"):
        status, body = proxy.get(path)
        assert status == 424, (path, status, body)
        assert body["reason"] == "server-not-running" and "not running" in body["message"]
    stopped = _stopped_lines(proxy)
    assert len(stopped) == 1, proxy.output
    assert f"Start it from {hub.url}/hub/home" in stopped[0] and "JUPYTER_PROXY_START_SERVER=always" in stopped[0]
    assert "Location" not in proxy.output and "/hub/user/alice" not in proxy.output
    hub.ensure_running("alice")  # the user starts it from the hub's page
    assert proxy.get("/api/status")[0] == 200
    proxy.wait_for("Your default server answers again.")


def test_start_server_always_starts_a_stopped_server_on_the_next_request(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice"), JUPYTER_PROXY_START_SERVER="always"))
    proxy.wait_for_banner()
    hub.ensure_stopped("alice")
    status, body = proxy.get("/api/kernels")
    assert status == 424 and "starting it again" in body["message"]
    proxy.wait_for(r"Starting your default server: 100% Server ready at /user/alice/")
    assert proxy.get("/api/kernels")[0] == 200  # the IDE's next poll simply works
    assert len(_stopped_lines(proxy)) == 1
    assert hub.is_running("alice")


# -- scopes, tokens, certificates ---------------------------------------------------------------------------------

def test_a_token_that_may_not_use_the_server_names_the_missing_scope(hub: Hub) -> None:
    token = hub.make_token("alice", ["read:servers!user=alice", "start:servers!user=alice"])
    message = failed_start(hub_env(hub, token))
    assert "lacks the scope access:servers!user=alice" in message and f"{hub.url}/hub/token" in message


def test_a_token_that_may_not_start_the_stopped_server_names_the_start_scope(hub: Hub) -> None:
    hub.ensure_stopped("alice")
    token = hub.make_token("alice", ["access:servers!user=alice", "read:servers!user=alice"])
    message = failed_start(hub_env(hub, token))
    assert "is not running and the token may not start it" in message
    assert "start:servers!user=alice" in message and f"{hub.url}/hub/home" in message


def test_an_access_only_token_uses_a_running_server(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice", ["access:servers!user=alice"])))
    proxy.wait_for_banner()
    assert "default server /user/alice/: running." in proxy.output
    assert proxy.get("/api/status")[0] == 200


def test_a_rejected_token_says_where_to_make_a_new_one(hub: Hub) -> None:
    message = failed_start(hub_env(hub, "0123456789abcdef-not-a-token"))
    assert "rejected the token in JUPYTERHUB_API_TOKEN" in message
    assert f"make a new one at {hub.url}/hub/token" in message


def _issuer_of_hub_certificate(hub: Hub) -> str:
    subject = x509.load_pem_x509_certificate(hub.ca_file.read_bytes()).subject
    return str(subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value)


def test_a_wrong_ca_file_names_the_setting_and_the_certificates_issuer(hub: Hub, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    message = failed_start(hub_env(hub, hub.make_token("alice"), JUPYTER_CLUSTER_CA_CERT=str(other_ca)))
    assert "could not be trusted" in message and f"not signed by the CA in {other_ca}" in message
    assert "JUPYTER_CLUSTER_CA_CERT" in message and _issuer_of_hub_certificate(hub) in message


def test_no_ca_file_for_a_private_hub_names_the_setting_and_the_issuer(hub: Hub) -> None:
    env = hub_env(hub, hub.make_token("alice"))
    del env["JUPYTER_CLUSTER_CA_CERT"]
    message = failed_start(env)
    assert "set JUPYTER_CLUSTER_CA_CERT" in message and _issuer_of_hub_certificate(hub) in message


def test_a_wrong_certificate_name_names_the_tls_name_setting(hub: Hub) -> None:
    message = failed_start(hub_env(hub, hub.make_token("alice"), JUPYTER_SERVER_NAME="hub.example.org"))
    assert "not issued to 'hub.example.org'" in message and "JUPYTER_SERVER_NAME" in message


# -- named servers -------------------------------------------------------------------------------------------------

def test_a_named_server_is_started_and_served_under_its_own_prefix(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice")  # so a request that reached the default server would fail
    hub.api("PUT", "/users/alice/servers/dev")
    hub.ensure_stopped("alice", "dev")
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice"), JUPYTERHUB_NAMED_SERVER="dev"))
    proxy.wait_for_banner()
    assert f"→ {hub.url}/user/alice/dev/" in proxy.output
    assert "named server 'dev' /user/alice/dev/: started just now." in proxy.output
    assert proxy.get("/api/status")[0] == 200
    assert proxy.get("/user/alice/dev/api/status")[0] == 200  # absolute URLs the server hands out
    assert proxy.get("/user/alice/api/status")[0] == 403  # the default server is not this proxy's
    hub.ensure_stopped("alice", "dev")


def test_a_named_server_that_does_not_exist_is_named(hub: Hub) -> None:
    message = failed_start(hub_env(hub, hub.make_token("alice"), JUPYTERHUB_NAMED_SERVER="nosuch"))
    assert "'alice' has no server named 'nosuch'" in message and "JUPYTERHUB_NAMED_SERVER" in message


def test_a_named_server_that_does_not_exist_is_created_when_its_options_are_given(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    """Described whole (a name and its spawn options), it is a server to make, not a typo: issue 17."""
    hub.api("DELETE", "/users/alice/servers/fresh", body={"remove": True})
    assert hub.server_model("alice", "fresh") is None
    options = {"profile": "gpu"}
    proxy = run_proxy(proxies, hub_env(hub, hub.make_token("alice"), JUPYTERHUB_NAMED_SERVER="fresh",
                                       JUPYTERHUB_SERVER_OPTIONS=json.dumps(options)))
    proxy.wait_for_banner()
    assert "named server 'fresh' /user/alice/fresh/: started just now." in proxy.output
    assert proxy.get("/api/status")[0] == 200
    assert (hub.server_model("alice", "fresh") or {}).get("user_options") == options
    hub.ensure_stopped("alice", "fresh")


# -- confinement ---------------------------------------------------------------------------------------------------

BOBS = [
    "/user/bob/api/status", "/user/bob/", "/user/%62ob/api/status", "/user/alice/../bob/api/status",
    "/user/alice/%2e%2e/bob/api/status", "/user/alice/..%2fbob/api/status", "/user/alice%2f..%2fbob/api/status",
    "/../user/bob/api/status", "/%2e%2e/user/bob/api/status", "/api/../../user/bob/api/status",
    "/api/%252e%252e/%252e%252e/user/bob/api/status", "//user/bob/api/status", "/hub/../user/bob/api/status",
    "/user/bob%2fapi/status", "/user/alice/../../user/bob/api/status", "/user/Bob/api/status",
    "/user/bob/api/kernels", "/hub/api/users/bob", "/hub/user/bob/api/status",
]


def test_alices_proxy_never_reaches_bobs_server_whatever_the_path(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    hub.ensure_running("bob")
    token = hub.make_token("alice")
    # alice's token alone would open bob's server (her role allows it): only the proxy keeps her out.
    assert hub.status_of("/user/bob/api/status", token) == 200
    proxy = run_proxy(proxies, hub_env(hub, token))
    proxy.wait_for_banner()
    assert proxy.get("/api/status")[0] == 200
    assert proxy.reached(BOBS) == {}
