"""Attacks on the browser sign-in (review of fb8b718..a98cac0): what the sign-in server logs, an IDE request while
the hub exchanges the code, a stop while the hub is slow, the sign-in URL completed by another hub user, the port
let go after the first sign-in, an expiry the token endpoint said, a renewal as another user while serving. A hub of
the tests' own (plain HTTP, real sockets, ``_serving_hub``) serves alice's running server, gives a token per code and
can hold its answers until a test lets them go."""

from __future__ import annotations

import asyncio
import html
import logging
import stat
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from jupyter_dev_proxy.cli import serve
from jupyter_dev_proxy.config import OAuthClient, Settings
from jupyter_dev_proxy.demo import free_port
from jupyter_dev_proxy.signin import SignInDesk
from jupyter_dev_proxy.tokens import TokenStore
from tests.kit.settings import LOCAL_TOKEN, make_settings
from tests.test_signin_callback import start_waiting

THE_CODE = "code-from-the-hub-0123456789abcdef"


@dataclass
class _SlowHub:
    """A hub whose token endpoint waits for ``release``; ``exchanging`` is set when a code arrives."""

    url: URL
    release: asyncio.Event = field(default_factory=asyncio.Event)
    exchanging: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def slow_hub() -> AsyncIterator[_SlowHub]:
    release, exchanging = asyncio.Event(), asyncio.Event()
    async with _serving_hub(set(), exchange_gate=release, exchanging=exchanging) as port:
        yield _SlowHub(URL(f"http://127.0.0.1:{port}/"), release, exchanging)
        release.set()


def _settings(hub: _SlowHub, port: int) -> Settings:
    callback = URL(f"http://127.0.0.1:{port}/jupyter-dev-proxy/oauth/callback")
    return make_settings(str(hub.url), user="", hub_token=None, listen_port=port,
                         oauth=OAuthClient("service-jupyter-dev-proxy", "client-secret-0123456789", callback))


@dataclass
class _Waiting:
    settings: Settings
    desk: SignInDesk
    stop: asyncio.Event
    task: asyncio.Task[Any]
    opened: list[str]

    @property
    def url(self) -> URL:
        return URL(f"http://127.0.0.1:{self.settings.listen_port}")

    @property
    def state(self) -> str:
        assert self.desk.pending_url is not None
        return URL(self.desk.pending_url).query["state"]

    def callback(self, **query: str) -> URL:
        return self.url.with_path("/jupyter-dev-proxy/oauth/callback").with_query(query)


@pytest.fixture
async def waiting(slow_hub: _SlowHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[_Waiting]:
    monkeypatch.setenv("BROWSER", "a-recorded-browser")  # a desktop: the desk opens the URL (recorded below)
    settings = _settings(slow_hub, free_port())
    opened: list[str] = []
    store = TokenStore(tmp_path / "tokens.json")
    store._keyring = None  # the file, whatever keyring this machine has
    desk = SignInDesk(settings, store, open_browser=opened.append)
    stop = asyncio.Event()
    task = await start_waiting(settings, desk, stop)
    proxy = _Waiting(settings, desk, stop, task, opened)
    yield proxy
    stop.set()
    slow_hub.release.set()
    await asyncio.wait_for(asyncio.shield(task), 60)


async def test_the_debug_access_log_of_the_waiting_proxy_shows_neither_the_code_nor_the_state(
        waiting: _Waiting, slow_hub: _SlowHub, caplog: pytest.LogCaptureFixture) -> None:
    # JUPYTER_PROXY_LOG_LEVEL=debug turns aiohttp.access on (logs.configure_logging); the serving proxy's own
    # AccessLogger drops the query, the sign-in server before serving uses aiohttp's default one ("%r").
    caplog.set_level(logging.DEBUG)
    slow_hub.release.set()
    state = waiting.state
    async with aiohttp.ClientSession() as client, client.get(waiting.callback(code=THE_CODE, state=state)) as answer:
        assert answer.status == 200, await answer.text()
    await asyncio.wait_for(asyncio.shield(waiting.task), 10)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "oauth/callback" in logged  # the access log did log the request
    assert THE_CODE not in logged
    assert state not in logged


async def test_an_ide_request_during_the_code_exchange_neither_opens_the_browser_again_nor_leaves_a_sign_in(
        waiting: _Waiting, slow_hub: _SlowHub) -> None:
    assert len(waiting.opened) == 1 or await _opened_soon(waiting.opened, 1)
    async with aiohttp.ClientSession() as browser, aiohttp.ClientSession() as ide:
        callback = asyncio.ensure_future(_status_of(browser, waiting.callback(code=THE_CODE, state=waiting.state)))
        await asyncio.wait_for(slow_hub.exchanging.wait(), 10)  # the hub is exchanging the code
        async with ide.get(waiting.url / "api/kernels", headers={"Authorization": f"token {LOCAL_TOKEN}"}) as answer:
            assert answer.status == 401  # not signed in yet
        slow_hub.release.set()
        assert await callback == 200
    signed = await asyncio.wait_for(asyncio.shield(waiting.task), 10)
    assert signed is not None and signed.user == "alice"
    await asyncio.sleep(0)  # (the browser is opened from a thread: give a second opening its chance to be seen)
    assert waiting.opened == waiting.opened[:1], "a second sign-in was opened in the browser while one was completing"
    assert waiting.desk.pending_url is None, "a sign-in is left under way after the user signed in"


async def test_a_stop_while_the_hub_is_slow_to_exchange_the_code_ends_the_wait_at_once(
        waiting: _Waiting, slow_hub: _SlowHub) -> None:
    async with aiohttp.ClientSession() as browser:
        callback = asyncio.ensure_future(_status_of(browser, waiting.callback(code=THE_CODE, state=waiting.state)))
        await asyncio.wait_for(slow_hub.exchanging.wait(), 10)
        waiting.stop.set()  # Ctrl-C
        done, _ = await asyncio.wait([waiting.task], timeout=5)
        slow_hub.release.set()
        await callback
        assert done, "Ctrl-C during the code exchange waits for the hub (up to its 30 s API timeout)"
        assert waiting.task.result() is None


async def test_the_sign_in_url_is_not_on_the_browsers_command_line_for_another_user_to_read(
        waiting: _Waiting, slow_hub: _SlowHub) -> None:
    # The sign-in URL is all it takes: on a shared machine another local user could read it from the browser's
    # command line (/proc/<pid>/cmdline, world-readable by default) and open it signed in to the hub as themselves;
    # the hub would send their browser back to the proxy's callback with a code bound to the proxy's own PKCE
    # challenge, and with JUPYTER_USERNAME unset the proxy would use mallory's server for alice's IDE (login CSRF).
    # So the browser is given a page only alice may read, which goes on to the URL.
    assert await _opened_soon(waiting.opened, 1)
    as_argv = URL(waiting.opened[0])
    assert as_argv.scheme == "file" and waiting.state not in str(as_argv) and "code_challenge" not in str(as_argv)
    page = Path(urllib.request.url2pathname(as_argv.path))
    assert stat.S_IMODE(page.stat().st_mode) == 0o600 and stat.S_IMODE(page.parent.stat().st_mode) == 0o700
    assert html.escape(waiting.desk.pending_url or "-", quote=True) in page.read_text()


async def test_after_the_first_sign_in_the_proxy_keeps_its_port_while_it_checks_the_hub(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The sign-in before serving listens on the port, then closes it and opens it again only after the hub's check
    # (which starts the server: minutes). Meanwhile the IDE gets "connection refused", and any local program can
    # take the port: the IDE then sends it the proxy's token and the user's notebooks, and the proxy cannot start.
    slow_start, version_asked = asyncio.Event(), asyncio.Event()
    async with _serving_hub(set(), slow_start, version_asked) as hub_port:
        async with _signed_in_as_alice(hub_port, tmp_path, monkeypatch, slow_start) as (ide, proxy):
            # The hub is slow to answer the start's check: the proxy must still hold its address.
            await asyncio.wait_for(version_asked.wait(), 10)  # the start's check is under way
            try:
                async with ide.get(proxy / "api/contents") as answer:
                    held, body = True, await answer.json()
            except aiohttp.ClientConnectionError:
                held = False
            assert held, "the proxy gave its port up after the sign-in, while it asks the hub"
            assert (answer.status, body["reason"]) == (503, "proxy-starting")  # said, and no new sign-in


@pytest.mark.timeout(30)
async def test_a_signed_in_token_whose_expiry_the_hub_gave_is_renewed_ahead_where_whoami_has_no_token_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The token endpoint says expires_in; the proxy throws it away and asks the hub's token model instead, which it
    # finds only through whoami's token_id (JupyterHub < 5 has none): no sign-in is asked ahead, the token expires
    # under a running kernel and the IDE gets 401s first.
    caplog.set_level(logging.INFO, logger="jupyter_dev_proxy")
    lifetime = 4  # seconds: the proxy asks halfway
    async with _serving_hub(set(), expires_in=lifetime) as hub_port:
        async with _signed_in_as_alice(hub_port, tmp_path, monkeypatch):
            signed_in = len(caplog.records)
            asked_again = False
            for _ in range(lifetime * 20):  # no event to wait for: the log is what the user sees
                asked_again = any("sign in to the hub in your browser" in record.getMessage()
                                  for record in caplog.records[signed_in:])
                if asked_again:
                    break
                await asyncio.sleep(0.05)
            assert asked_again, "no sign-in was asked before the token expired"


def _proxy_settings(hub_port: int, hub_token: str | None) -> Settings:
    """The proxy's settings for the hub on ``hub_port``, registered for sign-in, on a port of its own."""
    port = free_port()
    callback = URL(f"http://127.0.0.1:{port}/jupyter-dev-proxy/oauth/callback")
    return make_settings(f"http://127.0.0.1:{hub_port}/", user="", hub_token=hub_token, listen_port=port,
                         oauth=OAuthClient("service-jupyter-dev-proxy", "client-secret-0123456789", callback))


def _file_store(tmp_path: Path) -> TokenStore:
    store = TokenStore(tmp_path / "tokens.json")
    store._keyring = None  # the file, whatever keyring this machine has
    return store


@asynccontextmanager
async def _serving(hub_port: int, tmp_path: Path, hub_token: str | None, release: asyncio.Event | None = None,
                   ) -> AsyncIterator[tuple[aiohttp.ClientSession, URL, int, dict[str, Any]]]:
    """The proxy (``cli.serve``) started against the hub on ``hub_port``: (the IDE's session, the proxy's URL, and
    the status and JSON of the IDE's first answer). ``release`` is set on leaving (a hub held by the test), before
    the proxy is stopped."""
    settings = _proxy_settings(hub_port, hub_token)
    stop = asyncio.Event()
    serving = asyncio.ensure_future(serve(settings, stop, store=_file_store(tmp_path)))
    proxy = URL(f"http://127.0.0.1:{settings.listen_port}")
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"token {LOCAL_TOKEN}"}) as ide:
            for _ in range(300):
                try:
                    async with ide.get(proxy / "api/contents") as answer:
                        status, body = answer.status, await answer.json()
                        break
                except aiohttp.ClientConnectionError:
                    assert not serving.done(), serving.result()
                    await asyncio.sleep(0.02)
            yield ide, proxy, status, body
    finally:
        if release is not None:
            release.set()
        stop.set()
        await asyncio.wait_for(serving, 30)


@asynccontextmanager
async def _signed_in_as_alice(hub_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              release: asyncio.Event | None = None,
                              ) -> AsyncIterator[tuple[aiohttp.ClientSession, URL]]:
    """The proxy started with no token, the IDE told to sign in, and alice signed in through the URL it was told:
    (the IDE's session, the proxy's URL)."""
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):  # no desktop: the URL is only said
        monkeypatch.delenv(name, raising=False)
    async with _serving(hub_port, tmp_path, None, release) as (ide, proxy, _, body):
        assert body["reason"] == "sign-in-required", body
        async with aiohttp.ClientSession(headers={"X-Signed-In-As": "alice"}) as browser:
            async with browser.get(_url_in(body["message"])) as answer:
                assert answer.status == 200, await answer.text()
        yield ide, proxy


def _url_in(message: str) -> str:
    """The sign-in URL a message names."""
    return message[message.index("http"):].split()[0].rstrip(",:")


@asynccontextmanager
async def _serving_hub(revoked: set[str], slow_start: asyncio.Event | None = None,
                       version_asked: asyncio.Event | None = None, expires_in: int = 3600,
                       exchange_gate: asyncio.Event | None = None,
                       exchanging: asyncio.Event | None = None) -> AsyncIterator[int]:
    """A hub that serves alice's running server, refuses the tokens in ``revoked``, and gives a token for each
    code of its consent-less authorize (the browser says who is signed in with X-Signed-In-As); with ``slow_start``,
    it tells its version only once that is set; with ``exchange_gate``, it exchanges a code only once that is set
    (``exchanging`` is set when a code arrives)."""
    def owner(request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "").rpartition(" ")[2]
        if token in revoked:
            return None
        return token.removeprefix("token-of-") if token.startswith("token-of-") else "alice"

    async def version(request: web.Request) -> web.Response:
        if version_asked is not None:
            version_asked.set()
        if slow_start is not None:
            await slow_start.wait()  # a slow hub (or one starting the server), as the start's check meets it
        return web.json_response({"version": "4.1.6"})  # its whoami has no token_id

    async def user(request: web.Request) -> web.Response:
        name = owner(request)
        if name is None:
            return web.json_response({"status": 403, "message": "Forbidden"}, status=403)
        server = {"name": "", "ready": True, "pending": None, "url": f"/user/{name}/", "started": None}
        return web.json_response({"kind": "user", "name": name, "servers": {"": server}})

    async def server_api(request: web.Request) -> web.Response:
        name = owner(request)
        if name != request.match_info["name"]:
            return web.json_response({"message": "Forbidden"}, status=403)
        return web.json_response({"version": "2.14.0"} if request.path.endswith("/api/status") else {})

    async def token(request: web.Request) -> web.Response:
        code = str((await request.post()).get("code", ""))
        if exchanging is not None:
            exchanging.set()
        if exchange_gate is not None:
            await exchange_gate.wait()
        who = code.removeprefix("code-for-") if code.startswith("code-for-") else "alice"
        return web.json_response({"access_token": f"token-of-{who}",
                                  "token_type": "Bearer", "expires_in": expires_in})

    async def authorize(request: web.Request) -> web.Response:
        """The hub's consent-less authorize: the browser's hub login (here a header) gets a code for that user."""
        who = request.headers["X-Signed-In-As"]
        back = URL(request.query["redirect_uri"]).with_query(code=f"code-for-{who}", state=request.query["state"])
        raise web.HTTPFound(str(back))

    app = web.Application()
    app.router.add_get("/hub/api", version)
    app.router.add_get("/hub/api/", version)
    app.router.add_get("/hub/api/user", user)
    app.router.add_post("/hub/api/oauth2/token", token)
    app.router.add_get("/hub/api/oauth2/authorize", authorize)
    app.router.add_route("*", "/user/{name}/{rest:.*}", server_api)
    hub_runner = web.AppRunner(app, shutdown_timeout=0.1)
    await hub_runner.setup()
    hub_port = free_port()
    await web.TCPSite(hub_runner, "127.0.0.1", hub_port).start()
    try:
        yield hub_port
    finally:
        await hub_runner.cleanup()


async def _status_of(client: aiohttp.ClientSession, url: URL) -> int | None:
    """The status the browser got, None when the connection was closed first."""
    try:
        async with client.get(url) as answer:
            return answer.status
    except aiohttp.ClientError:
        return None


async def _opened_soon(opened: list[str], count: int) -> bool:
    for _ in range(100):
        if len(opened) >= count:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_while_serving_with_the_user_learnt_from_the_hub_a_sign_in_as_another_user_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # JUPYTERHUB_API_TOKEN set, JUPYTER_USERNAME not: the hub says at start the token is alice's and the proxy serves
    # alice's server. The token is revoked; the IDE is sent to sign in; whoever completes it (bob, signed in to the
    # hub in that browser, or with the URL from the browser's command line) has his token swapped in and kept.
    monkeypatch.delenv("BROWSER", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    revoked: set[str] = set()
    async with _serving_hub(revoked) as hub_port:
        await _sign_in_as_bob_while_serving_alices_server(tmp_path, hub_port, revoked)


async def _sign_in_as_bob_while_serving_alices_server(tmp_path: Path, hub_port: int, revoked: set[str]) -> None:
    async with _serving(hub_port, tmp_path, "the-env-token-of-alice") as (ide, proxy, status, body):
        assert status == 200, body
        revoked.add("the-env-token-of-alice")
        async with ide.get(proxy / "api/contents") as answer:
            body = await answer.json()
            assert (answer.status, body["reason"]) == (401, "hub-token-rejected"), body
        async with aiohttp.ClientSession(headers={"X-Signed-In-As": "bob"}) as bobs_browser:
            async with bobs_browser.get(_url_in(body["message"])) as answer:
                said = await answer.text()
        assert answer.status == 403 and "sign-in-other-user" in said, said
