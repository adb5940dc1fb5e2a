"""The sign-in callback refuses what is not the hub's answer to the sign-in under way: a wrong or replayed
``state``, a callback with no sign-in under way, a foreign Host, another method; the IDE gets 401 naming the
sign-in URL until the user has signed in. (The sign-in with a real hub: tests/test_signin.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from aiohttp import web

from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.config import OAuthClient, Settings
from jupyter_dev_proxy.demo import free_port
from jupyter_dev_proxy.signin import PendingSignIn, SignedIn, SignInDesk, WaitingForSignIn
from jupyter_dev_proxy.tokens import TokenStore
from tests.kit.settings import LOCAL_TOKEN, make_settings


def test_the_code_challenge_is_rfc_7636s_s256() -> None:
    pending = PendingSignIn(state="s", verifier="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")  # RFC 7636 App. B
    assert pending.challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_every_sign_in_has_its_own_state_and_verifier_and_sends_both_checks() -> None:
    first, second = PendingSignIn(), PendingSignIn()
    assert first.state != second.state and first.verifier != second.verifier
    assert len(first.verifier) >= 43  # RFC 7636 §4.1: 43 to 128 characters
    settings = _settings(8000)
    assert settings.oauth is not None
    url = URL(first.url(settings, settings.oauth))
    assert url.path == "/jupyter/hub/api/oauth2/authorize"  # under the hub's base path
    assert url.query["code_challenge_method"] == "S256"
    assert url.query["code_challenge"] == first.challenge
    assert url.query["state"] == first.state
    assert url.query["redirect_uri"] == "http://127.0.0.1:8000/jupyter-dev-proxy/oauth/callback"
    assert first.verifier not in str(url)


async def sign_in_before_serving(settings: Settings, desk: SignInDesk, stop: asyncio.Event,
                                 why: str) -> SignedIn | None:
    """A proxy's start without a token, up to its sign-in (or ``stop``)."""
    async with WaitingForSignIn(settings, desk) as waiting:
        return await waiting.signed_in(stop, why)


async def start_waiting(settings: Settings, desk: SignInDesk, stop: asyncio.Event) -> asyncio.Task[SignedIn | None]:
    """A proxy's start without a token, up to its sign-in (or ``stop``): listening once this returns."""
    task = asyncio.ensure_future(sign_in_before_serving(settings, desk, stop, "a test"))
    async with aiohttp.ClientSession() as client:
        for _ in range(200):
            try:
                async with client.get(f"http://127.0.0.1:{settings.listen_port}/api/status"):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
    return task


def _settings(port: int) -> Settings:
    # The hub's address is nowhere: these tests never get as far as asking it.
    callback = URL(f"http://127.0.0.1:{port}/jupyter-dev-proxy/oauth/callback")
    return make_settings("https://127.0.0.1:9/jupyter/", user="", hub_token=None, listen_port=port,
                         oauth=OAuthClient("service-jupyter-dev-proxy", "client-secret", callback))


class _Waiting:
    """A proxy waiting for its first sign-in, on a port of its own."""

    def __init__(self, settings: Settings, desk: SignInDesk, task: asyncio.Task[Any]) -> None:
        self.settings, self.desk, self.task = settings, desk, task
        self.url = URL(f"http://127.0.0.1:{settings.listen_port}")

    def callback(self, **query: str) -> URL:
        return self.url.with_path("/jupyter-dev-proxy/oauth/callback").with_query(query)

    @property
    def state(self) -> str:
        assert self.desk.pending_url is not None
        return URL(self.desk.pending_url).query["state"]


@pytest.fixture
async def waiting(tmp_path: Path) -> AsyncIterator[_Waiting]:
    settings = _settings(free_port())
    desk = SignInDesk(settings, TokenStore(tmp_path / "tokens.json"), open_browser=lambda url: None)
    stop = asyncio.Event()
    proxy = _Waiting(settings, desk, await start_waiting(settings, desk, stop))
    yield proxy
    stop.set()
    assert await proxy.task is None  # stopped before anyone signed in


async def _get(url: URL, **headers: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers, allow_redirects=False) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_the_ide_is_told_to_sign_in_with_the_url_and_nothing_is_forwarded(waiting: _Waiting) -> None:
    status, body = await _get(waiting.url / "api/kernels", Authorization=f"token {LOCAL_TOKEN}")
    assert status == 401
    assert body["reason"] == "sign-in-required"
    assert waiting.desk.pending_url is not None and waiting.desk.pending_url in body["message"]


async def test_without_the_proxys_token_the_sign_in_url_is_not_given_out(waiting: _Waiting) -> None:
    status, body = await _get(waiting.url / "api/kernels")
    assert status == 403
    assert "oauth2/authorize" not in body["message"] and waiting.state not in body["message"]


async def test_a_wrong_state_is_refused_and_the_sign_in_stays_open(waiting: _Waiting) -> None:
    state = waiting.state
    status, body = await _get(waiting.callback(code="a-code", state=state[:-2] + "xx"))
    assert (status, body["reason"]) == (400, "sign-in-state-wrong")
    status, body = await _get(waiting.callback(code="a-code"))
    assert (status, body["reason"]) == (400, "sign-in-state-wrong")
    assert waiting.state == state  # the user's own sign-in still works
    assert not waiting.task.done()


async def test_a_foreign_host_cannot_reach_the_callback(waiting: _Waiting) -> None:
    status, body = await _get(waiting.callback(code="a-code", state=waiting.state), Host="evil.example:80")
    assert (status, body["reason"]) == (403, "host-not-allowed")


async def test_the_callback_takes_only_the_browsers_get(waiting: _Waiting) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.post(waiting.callback(code="a-code", state=waiting.state)) as answer:
            assert answer.status == 405
            assert (await answer.json())["reason"] == "method-not-allowed"


async def test_the_hubs_refusal_is_said_without_trying_the_code(waiting: _Waiting) -> None:
    status, body = await _get(waiting.callback(state=waiting.state, error="access_denied",
                                               error_description="You do not have permission"))
    assert (status, body["reason"]) == (403, "sign-in-refused")
    assert "You do not have permission" in body["message"] and "doctor" in body["message"]


async def test_a_code_the_hub_cannot_take_leaves_the_sign_in_open_for_another_try(waiting: _Waiting) -> None:
    # The hub's address here answers nothing: the exchange fails, and the same URL can be opened again.
    state = waiting.state
    status, body = await _get(waiting.callback(code="a-code", state=state))
    assert (status, body["reason"]) == (502, "sign-in-failed")
    assert waiting.state == state and not waiting.task.done()


async def test_while_serving_with_no_sign_in_under_way_a_callback_is_refused(tmp_path: Path) -> None:
    settings = replace(_settings(free_port()), hub_token="a-working-token")
    desk = SignInDesk(settings, TokenStore(tmp_path / "tokens.json"), open_browser=lambda url: None)
    runner = ProxyRunner(settings, sign_in=desk)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", settings.listen_port).start()
        url = URL(f"http://127.0.0.1:{settings.listen_port}/jupyter-dev-proxy/oauth/callback")
        status, body = await _get(url.with_query(code="a-code", state="a-state"))
        assert (status, body["reason"]) == (400, "no-sign-in-pending")
    finally:
        await runner.cleanup()
