"""What a real JupyterHub answers the proxy's browser sign-in (a service OAuth client: authorization code, PKCE
S256, state), proved once here so the proxy's own tests and its doctor can rely on it: the token it gets and what
it may do, and each way the hub refuses (no PKCE, wrong verifier, a user without access, wrong secret, unknown
client, another redirect URI). Also that the kit's scripted browser works as webbrowser's BROWSER."""

from __future__ import annotations

import asyncio
import html
import base64
import hashlib
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.kit.browser import NO_ANSWER, Landing, browser_env, opened, sign_in
from tests.kit.env import clean_env
from tests.kit.hub import SIGN_IN_CALLBACK_PATH, SIGN_IN_SERVICE, Hub, module_hub, require_real_servers

pytestmark = [pytest.mark.hub, pytest.mark.timeout(120)]

require_real_servers()
hub = module_hub()

# The description the hub gives a service's OAuth client; the token list names a token's client by it.
CLIENT_DESCRIPTION = f"JupyterHub service {SIGN_IN_SERVICE}"


class Pkce:
    """A PKCE pair as the proxy makes it: a random verifier and its S256 challenge (RFC 7636)."""

    def __init__(self) -> None:
        self.verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(self.verifier.encode()).digest()
        self.challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _authorize_url(hub: Hub, state: str, pkce: Pkce | None, **changed: str) -> str:
    """The hub's authorize URL as the proxy opens it; ``changed`` replaces a parameter (a test's one wrong thing)."""
    query = {"response_type": "code", "client_id": hub.sign_in_client_id, "redirect_uri": hub.sign_in_callback,
             "state": state}
    if pkce is not None:
        query |= {"code_challenge": pkce.challenge, "code_challenge_method": "S256"}
    return f"{hub.address}/hub/api/oauth2/authorize?{urllib.parse.urlencode(query | changed)}"


def _exchange(hub: Hub, code: str, verifier: str, **changed: str) -> tuple[int, dict[str, Any]]:
    """POST the code to the hub's token endpoint as the proxy does (a form); return (status, JSON answer)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": hub.sign_in_callback,
            "client_id": hub.sign_in_client_id, "client_secret": hub.sign_in_secret, "code_verifier": verifier}
    request = urllib.request.Request(f"{hub.address}/hub/api/oauth2/token",
                                     data=urllib.parse.urlencode(form | changed).encode())
    try:
        with urllib.request.urlopen(request, context=hub.client_tls(), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def _browse(hub: Hub, url: str, user: str) -> Landing:
    """Sign in as ``user`` in the scripted browser, off the event loop (the callback server runs on it)."""
    return await asyncio.to_thread(sign_in, url, user, hub.user_password, hub.ca_file)


@pytest.fixture
async def callbacks(hub: Hub) -> AsyncIterator[list[dict[str, str]]]:
    """The proxy's callback address served by a stand-in that records each query it is sent back with."""
    received: list[dict[str, str]] = []

    async def callback(request: web.Request) -> web.Response:
        received.append(dict(request.query))
        return web.Response(text="signed in")

    app = web.Application()
    app.router.add_get(SIGN_IN_CALLBACK_PATH, callback)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hub.sign_in_port).start()
    try:
        yield received
    finally:
        await runner.cleanup()


async def _code_for_alice(hub: Hub, pkce: Pkce) -> str:
    """An authorization code from alice's sign-in (read off the landing URL: no callback server needed)."""
    landing = await _browse(hub, _authorize_url(hub, "s", pkce), "alice")
    assert landing.url.startswith(hub.sign_in_callback + "?"), landing
    return landing.query["code"]


# -- (a) the whole flow ---------------------------------------------------------------------------------------------

async def test_code_flow_with_pkce_gives_alice_a_token_for_her_own_servers_only(
        hub: Hub, callbacks: list[dict[str, str]]) -> None:
    pkce, state = Pkce(), secrets.token_urlsafe(16)
    landing = await _browse(hub, _authorize_url(hub, state, pkce), "alice")
    assert (landing.status, landing.text) == (200, "signed in")
    assert [set(query) for query in callbacks] == [{"code", "state"}] and callbacks[0]["state"] == state

    status, answer = _exchange(hub, callbacks[0]["code"], pkce.verifier)
    assert status == 200, answer
    assert {"access_token", "expires_in", "token_type"} <= set(answer)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] > 0
    # The granted scopes in raw form, the bare !user filters as the client asked for them.
    assert {"access:servers!user", "read:servers!user", "start:servers!user",
            "read:tokens!user"} <= set(answer["scope"].split())

    status, model = hub.api("GET", "/user", token=answer["access_token"])
    assert status == 200 and model["name"] == "alice"
    assert set(model["scopes"]) == {
        "access:servers!user=alice", "read:servers!user=alice", "start:servers!user=alice",
        "read:tokens!user=alice", "access:services!service=jupyter-dev-proxy",
        "read:users:name!user=alice", "read:users:groups!user=alice"}
    assert model["token_id"] and model["session_id"]

    status, tokens = hub.api("GET", "/users/alice/tokens")
    assert status == 200
    mine = [token for token in tokens["api_tokens"] if token["id"] == model["token_id"]]
    assert [token["oauth_client"] for token in mine] == [CLIENT_DESCRIPTION]
    assert mine[0]["session_id"] == model["session_id"] and mine[0]["note"] == ""


async def test_a_code_is_good_for_one_token_only(hub: Hub) -> None:
    pkce = Pkce()
    code = await _code_for_alice(hub, pkce)
    assert _exchange(hub, code, pkce.verifier)[0] == 200
    assert _exchange(hub, code, pkce.verifier) == (400, {"error": "invalid_grant"})


# -- (b), (c) PKCE ----------------------------------------------------------------------------------------------------

async def test_without_a_code_challenge_the_hub_sends_the_browser_back_with_invalid_request(
        hub: Hub, callbacks: list[dict[str, str]]) -> None:
    landing = await _browse(hub, _authorize_url(hub, "s", pkce=None), "alice")
    assert landing.status == 200 and landing.url.startswith(hub.sign_in_callback + "?")
    assert callbacks == [{"error": "invalid_request", "error_description": "Code challenge required.", "state": "s"}]


async def test_a_wrong_code_verifier_is_invalid_grant_and_leaves_the_code_usable(hub: Hub) -> None:
    pkce = Pkce()
    code = await _code_for_alice(hub, pkce)
    assert _exchange(hub, code, Pkce().verifier) == (400, {"error": "invalid_grant"})
    assert _exchange(hub, code, pkce.verifier)[0] == 200


async def test_the_hub_does_not_insist_on_s256(hub: Hub) -> None:
    """The proxy must send S256 itself: the hub takes a 'plain' challenge too."""
    pkce = Pkce()
    url = _authorize_url(hub, "s", None, code_challenge=pkce.verifier, code_challenge_method="plain")
    landing = await _browse(hub, url, "alice")
    assert "code" in landing.query
    assert _exchange(hub, landing.query["code"], pkce.verifier)[0] == 200


# -- (d) a user the admin left out ------------------------------------------------------------------------------------

async def test_a_user_without_access_to_the_service_gets_a_403_page_and_no_callback(
        hub: Hub, callbacks: list[dict[str, str]]) -> None:
    landing = await _browse(hub, _authorize_url(hub, "s", Pkce()), "bob")
    assert landing.status == 403 and "/hub/api/oauth2/authorize?" in landing.url
    assert f"You do not have permission to access {CLIENT_DESCRIPTION}" in landing.text
    assert callbacks == []


# -- (e) the token endpoint tells a wrong client from a wrong code ----------------------------------------------------

async def test_a_wrong_secret_is_invalid_client_and_a_bogus_code_is_invalid_grant(hub: Hub) -> None:
    pkce = Pkce()
    code = await _code_for_alice(hub, pkce)
    assert _exchange(hub, code, pkce.verifier, client_secret="not-the-secret") == (401, {"error": "invalid_client"})
    assert _exchange(hub, "bogus", pkce.verifier, client_secret="not-the-secret") == (
        401, {"error": "invalid_client"})
    assert _exchange(hub, "bogus", pkce.verifier, client_id="service-nobody") == (401, {"error": "invalid_client"})
    assert _exchange(hub, "bogus", pkce.verifier) == (400, {"error": "invalid_grant"})


# -- (f), (g) what the hub refuses to send anywhere -------------------------------------------------------------------

async def test_an_unknown_client_id_gets_a_400_page_after_login_and_no_callback(
        hub: Hub, callbacks: list[dict[str, str]]) -> None:
    landing = await _browse(hub, _authorize_url(hub, "s", Pkce(), client_id="service-nobody"), "alice")
    assert landing.status == 400 and "/hub/api/oauth2/authorize?" in landing.url
    assert "Invalid client_id parameter value." in landing.text
    assert any("/hub/login" in url for url in landing.visited)  # the hub asks who you are first
    assert callbacks == []


async def test_another_redirect_uri_gets_a_400_page_and_no_callback(
        hub: Hub, callbacks: list[dict[str, str]]) -> None:
    elsewhere = f"http://127.0.0.1:{hub.sign_in_port}/elsewhere"
    landing = await _browse(hub, _authorize_url(hub, "s", Pkce(), redirect_uri=elsewhere), "alice")
    assert landing.status == 400 and "/hub/api/oauth2/authorize?" in landing.url
    assert "Mismatching redirect URI." in landing.text
    assert callbacks == []


# -- the kit's browser as webbrowser's BROWSER ------------------------------------------------------------------------

def _webbrowser_open(url: str, env: dict[str, str]) -> None:
    """webbrowser.open(url) in a fresh Python with ``env``, as the proxy would call it."""
    subprocess.run([sys.executable, "-c", "import sys, webbrowser; assert webbrowser.open(sys.argv[1])", url],
                   env=env, check=True, timeout=60)


async def test_browser_command_signs_in_and_records_where_it_landed(hub: Hub, tmp_path: Path) -> None:
    url = _authorize_url(hub, "s", Pkce())
    env = clean_env(**browser_env(tmp_path / "opened.jsonl", "alice", hub.user_password, hub.ca_file))
    await asyncio.to_thread(_webbrowser_open, url, env)
    [record] = opened(tmp_path / "opened.jsonl")
    assert record["url"] == url
    # Nobody serves the callback in this test: the browser got there and nothing answered.
    assert record["status"] == NO_ANSWER and record["final_url"].startswith(hub.sign_in_callback + "?code=")


def test_browser_command_without_a_user_only_records_the_url(hub: Hub, tmp_path: Path) -> None:
    url = _authorize_url(hub, "s", Pkce())
    _webbrowser_open(url, clean_env(**browser_env(tmp_path / "opened.jsonl")))
    assert opened(tmp_path / "opened.jsonl") == [{"opened": url, "url": url, "status": None, "final_url": None}]


def test_browser_command_given_a_local_redirect_page_records_where_it_leads(hub: Hub, tmp_path: Path) -> None:
    url = _authorize_url(hub, "s", Pkce())
    page = tmp_path / "sign-in.html"
    page.write_text(f'<meta http-equiv="refresh" content="0;url={html.escape(url)}">')
    _webbrowser_open(page.as_uri(), clean_env(**browser_env(tmp_path / "opened.jsonl")))
    assert opened(tmp_path / "opened.jsonl") == [{"opened": page.as_uri(), "url": url, "status": None,
                                                  "final_url": None}]
