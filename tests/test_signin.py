"""Signing in with the hub's own login in a browser, against a real JupyterHub 6 that has the proxy registered as a
service OAuth client (PKCE required), with a scripted browser that fills the hub's real login form: the first start
with no token anywhere, a second start that asks nothing, a refused token replaced by a new sign-in (at start, and
live with a kernel running), and a sign-in as the wrong user."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.kit.browser import browser_env, opened, sign_in
from tests.kit.hub import Hub, hub_env, module_hub, require_real_servers
from tests.kit.ide import ide_session, whole_lifecycle
from tests.kit.process import PROXY, ProxyProcess, run_proxy

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers()
hub = module_hub()

# What the hub's token list says of a token its OAuth client made (JupyterHub names the client by its description).
_MADE_BY_THE_PROXYS_CLIENT = "JupyterHub service jupyter-dev-proxy"


def _sign_in_env(hub: Hub, tmp_path: Path, user: str | None = "alice", **more: str) -> dict[str, str]:
    """No token anywhere; the proxy registered with the hub (its callback's port); a browser that signs in as
    ``user`` (None: one that only records what it was asked to open); kept tokens in a file under tmp_path."""
    return hub_env(hub, None, JUPYTERHUB_OAUTH_CLIENT_ID=hub.sign_in_client_id,
                   JUPYTERHUB_OAUTH_CLIENT_SECRET=hub.sign_in_secret, JUPYTER_PROXY_PORT=str(hub.sign_in_port),
                   JUPYTER_PROXY_IP_OR_NAME="127.0.0.1", XDG_CONFIG_HOME=str(tmp_path / "config"),
                   PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
                   **browser_env(tmp_path / "browser.jsonl", user, hub.user_password if user else None, hub.ca_file),
                   **more)


def _kept(tmp_path: Path) -> dict[str, dict[str, str]]:
    token_file = tmp_path / "config" / "jupyter-dev-proxy" / "tokens.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    return dict(json.loads(token_file.read_text()))


def _the_proxys_tokens(hub: Hub, user: str) -> list[dict[str, Any]]:
    status, model = hub.api("GET", f"/users/{user}/tokens")
    assert status == 200, model
    return [token for token in model["api_tokens"] if token.get("oauth_client") == _MADE_BY_THE_PROXYS_CLIENT]


def _assert_a_second_sign_in_replaced(first: str, hub: Hub, tmp_path: Path, proxy: ProxyProcess) -> None:
    """A second sign-in in the browser replaced the ``first`` token: a new one is kept and works; no secret said."""
    second = _kept(tmp_path)[hub.address]["alice"]
    assert second != first and hub.status_of("/hub/api/user", second) == 200
    assert len(opened(tmp_path / "browser.jsonl", 2)) == 2
    proxy.stop()
    _assert_no_secret_in(proxy.output, hub, [first, second])


def _assert_no_secret_in(output: str, hub: Hub, tokens: list[str]) -> None:
    assert hub.sign_in_secret not in output and hub.user_password not in output
    for token in tokens:
        assert token not in output


async def test_a_first_start_signs_in_in_the_browser_and_the_next_start_asks_nothing(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    env = _sign_in_env(hub, tmp_path)
    before = {token["id"] for token in _the_proxys_tokens(hub, "alice")}
    proxy = run_proxy(proxies, {**env, "JUPYTER_PROXY_LOG_LEVEL": "debug"})  # aiohttp's own lines too
    url, local = proxy.wait_for_banner()
    # The sign-in URL was said on a line of its own, and opened: the hub's login, then back to the proxy.
    sign_in_url = proxy.wait_for(r"\n\s+(https://\S+/hub/api/oauth2/authorize\?\S+)").group(1)
    [browser] = opened(tmp_path / "browser.jsonl", 1)
    assert browser["url"] == sign_in_url and browser["status"] == 200, browser
    assert URL(browser["final_url"]).path == "/jupyter-dev-proxy/oauth/callback"
    assert "Signed in to the hub as alice" in proxy.output
    await whole_lifecycle(url, local)
    # The hub made the token for the proxy's client, with only the scopes it was allowed; it is kept for later.
    [made] = [token for token in _the_proxys_tokens(hub, "alice") if token["id"] not in before]
    assert sorted(made["scopes"]) == sorted(["access:servers!user=alice", "read:servers!user=alice",
                                             "start:servers!user=alice", "read:tokens!user=alice",
                                             "access:services!service=jupyter-dev-proxy",
                                             "read:users:name!user=alice", "read:users:groups!user=alice"])
    assert made["expires_at"] is not None
    kept = _kept(tmp_path)[hub.address]["alice"]
    assert "expires in 13 days" in proxy.output  # the banner says the token's expiry
    # The callback is used once: the same redirect again finds no sign-in under way.
    status, body = _get(browser["final_url"])
    assert (status, body["reason"]) == (400, "no-sign-in-pending")
    proxy.stop()
    _assert_no_secret_in(proxy.output, hub, [kept])
    assert URL(browser["final_url"]).query["code"] not in proxy.output  # the access log shows no callback query

    again = run_proxy(proxies, env)
    url, local = again.wait_for_banner()
    async with ide_session(url, local) as ide, ide.get("/api/contents") as response:
        assert response.status == 200
    assert len(opened(tmp_path / "browser.jsonl")) == 1  # nothing was opened, nothing asked
    assert "sign in" not in again.output.lower()


async def test_a_revoked_token_starts_a_sign_in_and_the_new_one_is_used_without_a_restart(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, _sign_in_env(hub, tmp_path))
    url, local = proxy.wait_for_banner()
    first = _kept(tmp_path)[hub.address]["alice"]
    _revoke(hub, first)  # before the server has seen it (it trusts a token it has seen for minutes)
    async with ide_session(url, local) as ide:
        async with ide.get("/api/contents") as response:
            body = await response.json()
            assert response.status == 401, body
        assert body["reason"] == "hub-token-rejected"
        assert "/hub/api/oauth2/authorize?" in body["message"]  # the IDE is told where to sign in
        proxy.wait_for("A new hub token from your sign-in is in use")  # the browser signed in again
        async with ide.get("/api/contents") as response:
            assert response.status == 200
    _assert_a_second_sign_in_replaced(first, hub, tmp_path, proxy)


def test_a_start_whose_kept_token_the_hub_refuses_signs_in_again(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    env = _sign_in_env(hub, tmp_path)
    run_proxy(proxies, env).wait_for_banner()
    proxies.pop().stop()
    first = _kept(tmp_path)[hub.address]["alice"]
    _revoke(hub, first)
    proxy = run_proxy(proxies, env)
    proxy.wait_for_banner()
    assert "the hub no longer accepts the token from the proxy's token file" in proxy.output
    assert len(opened(tmp_path / "browser.jsonl", 2)) == 2
    assert _kept(tmp_path)[hub.address]["alice"] != first


def test_a_sign_in_as_another_user_than_the_proxy_serves_is_refused_and_the_sign_in_stays_open(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    proxy = run_proxy(proxies, _sign_in_env(hub, tmp_path, JUPYTER_USERNAME="bob"))
    proxy.wait_for("You signed in as 'alice', but this proxy serves 'bob''s server")
    [browser] = opened(tmp_path / "browser.jsonl", 1)
    assert browser["status"] == 403
    assert "Authorization URL" not in proxy.output
    assert proxy.process.poll() is None  # still waiting for a sign-in as bob


def _revoke(hub: Hub, token: str) -> None:
    """Revoke ``token`` as the user would on the token page."""
    status, me = hub.api("GET", "/user", token=token)
    assert status == 200, me
    assert hub.api("DELETE", f"/users/{me['name']}/tokens/{me['token_id']}")[0] == 204


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_login_signs_in_in_the_browser_keeps_the_token_and_ends(hub: Hub, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(PROXY), "login"], env=_sign_in_env(hub, tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Signed in as alice: the token is kept in the proxy's token file" in result.stderr
    kept = _kept(tmp_path)[hub.address]["alice"]
    assert hub.status_of("/hub/api/user", kept) == 200
    [browser] = opened(tmp_path / "browser.jsonl", 1)
    assert browser["status"] == 200
    _assert_no_secret_in(result.stdout + result.stderr, hub, [kept])


async def test_a_sign_in_under_way_is_linked_on_the_status_page_and_named_to_the_ide_until_done(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice")  # a token set in the environment; the sign-in replaces it when refused
    env = {**_sign_in_env(hub, tmp_path, user=None), "JUPYTERHUB_API_TOKEN": token}
    proxy = run_proxy(proxies, env)
    url, local = proxy.wait_for_banner()
    _revoke(hub, token)
    async with ide_session(url, local) as ide:
        async with ide.get("/api/contents") as response:
            assert response.status == 401
            message = (await response.json())["message"]
        [browser] = opened(tmp_path / "browser.jsonl", 1)  # asked once, however often the IDE asks
        assert browser["url"] in message
        # The browser was given a page only this user may read, not the URL: a command line is everyone's to see.
        page = Path(urllib.request.url2pathname(URL(browser["opened"]).path))
        assert URL(browser["opened"]).scheme == "file" and "state" not in browser["opened"]
        assert stat.S_IMODE(page.stat().st_mode) == 0o600 and stat.S_IMODE(page.parent.stat().st_mode) == 0o700
        async with ide.get("/api/contents") as response:
            assert response.status == 401
        async with ide.get("/jupyter-dev-proxy/api/status") as response:
            assert (await response.json())["sign_in_url"] == browser["url"]
        async with ide.get("/jupyter-dev-proxy/") as response:
            assert "Sign in again" in await response.text()
        landing = sign_in(browser["url"], "alice", hub.user_password, hub.ca_file)  # the person, in their browser
        assert landing.status == 200 and "Signed in" in landing.text
        async with ide.get("/api/contents") as response:
            assert response.status == 200
        async with ide.get("/jupyter-dev-proxy/api/status") as response:
            assert (await response.json())["sign_in_url"] is None
        assert not page.exists()  # gone with the sign-in
    assert len(opened(tmp_path / "browser.jsonl")) == 1
