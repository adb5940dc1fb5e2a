"""One live hub credential: after the token is swapped (a new one in JUPYTERHUB_API_TOKEN_FILE, reread), every
sender carries the new one — the relayed request, the status page's hub call, the watch's restart, the follow-up
that reads the new token's expiry — against a fake hub that accepts only the token currently in the file."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.cli import _follow_new_token
from jupyter_dev_proxy.config import Settings, TokenKind, TokenSource
from jupyter_dev_proxy.status import StatusBoard
from jupyter_dev_proxy.tokens import ExpiryWarnings, HubCredential, credential_for
from jupyter_dev_proxy.watch import ServerWatch
from tests.kit.settings import LOCAL_TOKEN, make_settings

OLD_TOKEN, NEW_TOKEN = "old-token-0001", "new-token-0002"


@dataclass
class _FakeHub:
    """A hub that accepts only the token now in ``token_file``; it records who sent what."""

    token_file: Path
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Authorization)
    start_asked: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._only_the_current_token])
        app.router.add_get("/user/alice/api/status", self._server_stopped)
        app.router.add_get("/user/alice/api/contents", self._contents)
        app.router.add_get("/hub/api/user", self._whoami)
        app.router.add_get("/hub/api/users/alice", self._user)
        app.router.add_post("/hub/api/users/alice/server", self._start)
        app.router.add_get("/hub/api/users/alice/server/progress", self._progress)
        return app

    @web.middleware
    async def _only_the_current_token(self, request: web.Request,
                                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                      ) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.seen.append((request.method, request.path, auth))
        if request.method == "POST":
            self.start_asked.set()
        if auth != "token " + self.token_file.read_text().strip():
            return web.json_response({"status": 403, "message": "not this token"}, status=403)
        return await handler(request)

    async def _server_stopped(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/hub/user/alice/api/status"})

    async def _contents(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"content": []})

    async def _whoami(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": "alice", "kind": "user", "scopes": ["access:servers!user=alice"],
                                  "servers": {}})

    async def _user(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": "alice", "kind": "user", "servers": {
            "": {"ready": True, "pending": None, "last_activity": "2026-12-02T09:00:00Z"}}})

    async def _start(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=201)

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        body = json.dumps({"progress": 100, "ready": True, "message": "Server ready"})
        return web.Response(text=f"data: {body}\n\n", content_type="text/event-stream")

    def auth_of(self, method: str, path: str) -> list[str]:
        return [auth for m, p, auth in self.seen if (m, p) == (method, path)]


@dataclass(frozen=True)
class _Swapped:
    hub: _FakeHub
    url: str  # the proxy's
    credential: HubCredential
    status: StatusBoard
    settings: Settings


@pytest.fixture
async def swapped(aiohttp_server: Callable[..., Awaitable[Any]], tmp_path: Path) -> AsyncIterator[_Swapped]:
    """A proxy started with the old token in its file, then the file holding a new one, reread."""
    token_file = tmp_path / "token"
    token_file.write_text(OLD_TOKEN + "\n")
    fake = _FakeHub(token_file)
    hub = await aiohttp_server(fake.app())
    settings = make_settings(f"http://127.0.0.1:{hub.port}", keep_warm_minutes=0, hub_token=OLD_TOKEN,
                             start_server="always", token_source=TokenSource(TokenKind.FILE, token_file))
    credential = credential_for(settings)
    assert credential is not None
    status = StatusBoard(settings, "5.2.1")
    runner = ProxyRunner(settings, ServerWatch(settings, "5.2.1", credential), credential=credential, status=status)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    token_file.write_text(NEW_TOKEN + "\n")
    assert await credential.reload("a test swapped it")
    try:
        yield _Swapped(fake, f"http://127.0.0.1:{runner.addresses[0][1]}", credential, status, settings)
    finally:
        await runner.cleanup()


def _ide() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"token {LOCAL_TOKEN}"})


async def test_after_a_swap_a_relayed_request_carries_the_new_token(swapped: _Swapped) -> None:
    async with _ide() as ide, ide.get(swapped.url + "/api/contents") as response:
        assert response.status == 200
    assert swapped.hub.auth_of("GET", "/user/alice/api/contents") == [f"token {NEW_TOKEN}"]


async def test_after_a_swap_the_status_page_asks_the_hub_with_the_new_token(swapped: _Swapped) -> None:
    async with _ide() as ide, ide.get(swapped.url + "/jupyter-dev-proxy/api/status") as response:
        assert response.status == 200
        assert (await response.json())["server"]["state"] == "running"
    assert swapped.hub.auth_of("GET", "/hub/api/users/alice") == [f"token {NEW_TOKEN}"]


async def test_after_a_swap_the_watchs_restart_carries_the_new_token(
        swapped: _Swapped, caplog: pytest.LogCaptureFixture) -> None:
    async with _ide() as ide, ide.get(swapped.url + "/api/status") as response:
        assert response.status == 424
    await asyncio.wait_for(swapped.hub.start_asked.wait(), 10)
    assert swapped.hub.auth_of("POST", "/hub/api/users/alice/server") == [f"token {NEW_TOKEN}"]
    assert not any("lacks the scope" in record.getMessage() for record in caplog.records)


async def test_after_a_swap_the_new_tokens_owner_and_expiry_are_asked_with_it(swapped: _Swapped) -> None:
    swapped.status.token = None
    await _follow_new_token(swapped.settings, swapped.credential, ExpiryWarnings("https://hub/hub/token"),
                            swapped.status)
    assert swapped.hub.auth_of("GET", "/hub/api/user") == [f"token {NEW_TOKEN}"]
    assert swapped.status.token is not None and swapped.status.token.owner == "alice"


async def test_a_keyring_that_waits_for_its_user_does_not_stop_the_proxy_meanwhile() -> None:
    """SIGHUP rereads the keyring; a locked one waits for its user to unlock it, and the event loop (every relay)
    must go on meanwhile: the unlock below can only happen if the loop runs while the keyring is being read."""
    unlocked = threading.Event()

    def locked_keyring() -> str | None:
        unlocked.wait(timeout=5)
        return NEW_TOKEN if unlocked.is_set() else None

    credential = HubCredential(OLD_TOKEN, TokenSource(TokenKind.KEYRING), make_settings("https://hub").hub,
                               locked_keyring)
    changed = asyncio.Event()
    credential.on_change = changed.set
    loop = asyncio.get_running_loop()
    credential.reload_soon("SIGHUP")
    loop.call_soon(unlocked.set)  # the user unlocks the keyring while the proxy serves
    await asyncio.wait_for(changed.wait(), 10)
    assert credential.token == NEW_TOKEN
