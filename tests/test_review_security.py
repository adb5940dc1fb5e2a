"""The security findings of the December 2026 review, each pinned by the behaviour that closes it: no token in
a browser cookie, only proxy traffic keeps the hub warm, the token file written safely, no credentials in the hub
URL, no cross-origin request relayed, a BOM-prefixed token file read, and security settings of a stray .env refused."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from jupyter_dev_proxy.address import HubAddress
from jupyter_dev_proxy.auth import COOKIE_NAME
from jupyter_dev_proxy.config import ConfigError, Settings, load_settings, setting_origins
from jupyter_dev_proxy.tokens import TokenStore
from jupyter_dev_proxy.transport import HubTransport
from tests.kit.settings import HUB_TOKEN, LOCAL_TOKEN, MINIMAL_ENV, Proxy, load, make_settings
from tests.kit.netservers import missing_programs

StartProxy = Callable[[Settings], Awaitable[Proxy]]



def load_error(cwd: Path, *argv: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(cwd, *argv, **environ)
    return str(caught.value)


# --- S2: a token file saved with a byte-order mark -------------------------------------------------------------

@pytest.mark.parametrize("content", ["\ufeffthe-hub-token\r\n", "\ufeff  the-hub-token  \n"])
def test_a_token_file_with_a_utf8_byte_order_mark_gives_the_token_without_it(
        cwd: Path, tmp_path: Path, content: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(content.encode("utf-8"))  # as PowerShell 5's Out-File -Encoding utf8 writes it
    assert load(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file)).hub_token == "the-hub-token"


def test_a_token_file_holding_only_a_byte_order_mark_is_empty(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes("\ufeff\n".encode("utf-8"))
    assert "is empty" in load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file))


# --- #11: credentials in the hub URL ---------------------------------------------------------------------------

_HUB_PASSWORD = "gw-password-123"


@pytest.mark.parametrize("hub_url", [f"https://alice:{_HUB_PASSWORD}@hub.invalid/",
                                     f"https://alice:{_HUB_PASSWORD}@example.edu/jupyter/",
                                     "https://alice@hub.invalid/"])
def test_a_hub_url_with_a_user_or_password_is_refused_without_echoing_it(cwd: Path, hub_url: str) -> None:
    for argv, environ in (([], {"JUPYTERHUB_URL": hub_url}), (["--hub-url", hub_url], {})):
        with pytest.raises(ConfigError) as caught:
            load_settings(argv, {"JUPYTER_USERNAME": "alice", **environ}, cwd)
        message = str(caught.value)
        assert "JUPYTERHUB_URL" in message and "user name or password" in message
        assert _HUB_PASSWORD not in message and "alice@" not in message and "alice:" not in message
        assert "\n" not in message and message.endswith(".")


def test_a_hub_url_the_proxy_cannot_read_is_quoted_without_its_password(cwd: Path) -> None:
    message = load_error(cwd, JUPYTERHUB_URL=f"ftp://alice:{_HUB_PASSWORD}@hub.invalid/",
                         JUPYTER_SERVER_IP_OR_NAME="")
    assert "is not a hub address" in message and _HUB_PASSWORD not in message


def test_the_settings_doctor_shows_mask_the_hub_urls_credentials(cwd: Path) -> None:
    origins = setting_origins([], {"JUPYTERHUB_URL": f"https://alice:{_HUB_PASSWORD}@hub.invalid/x/"}, cwd)
    assert ("JUPYTERHUB_URL", "environment", "https://***@hub.invalid/x/") in origins
    assert _HUB_PASSWORD not in repr(origins)


def test_a_hub_name_with_credentials_is_quoted_without_them(cwd: Path) -> None:
    message = load_error(cwd, JUPYTER_SERVER_IP_OR_NAME=f"alice:{_HUB_PASSWORD}@hub.invalid")
    assert "JUPYTER_SERVER_IP_OR_NAME" in message and _HUB_PASSWORD not in message


# --- #10: the token file, written safely ------------------------------------------------------------------------

_HUB = HubAddress.parse(URL("https://hub.example.org"))


def _file_store(file: Path) -> TokenStore:
    """A store that keeps tokens in ``file`` (no keyring)."""
    store = TokenStore(file)
    store._keyring = None
    return store


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a file created without a mode is readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_leftover_temporary_file_neither_widens_the_token_files_mode_nor_is_written(
        tmp_path: Path, umask_022: None) -> None:
    directory = tmp_path / "config"
    directory.mkdir()
    leftover = directory / "tokens.tmp"
    leftover.write_text("")  # 0644, e.g. from a crash or another user's doing
    store = _file_store(directory / "tokens.json")
    store.save(_HUB, "alice", "SECRET-HUB-TOKEN-1")
    assert stat.S_IMODE((directory / "tokens.json").stat().st_mode) == 0o600
    assert leftover.read_text() == ""
    assert store.find(_HUB, "alice") == ("alice", "SECRET-HUB-TOKEN-1")
    assert sorted(p.name for p in directory.iterdir()) == ["tokens.json", "tokens.tmp"]  # no temporary left


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_symlinked_temporary_file_is_not_followed(tmp_path: Path) -> None:
    directory, elsewhere = tmp_path / "config", tmp_path / "elsewhere.txt"
    directory.mkdir()
    os.symlink(elsewhere, directory / "tokens.tmp")
    store = _file_store(directory / "tokens.json")
    store.save(_HUB, "alice", "SECRET-HUB-TOKEN-2")
    assert not elsewhere.exists()
    assert not (directory / "tokens.json").is_symlink()
    assert store.find(_HUB, "alice") == ("alice", "SECRET-HUB-TOKEN-2")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_token_files_directory_is_made_for_the_user_only(tmp_path: Path, umask_022: None) -> None:
    store = _file_store(tmp_path / "config" / "jupyter-dev-proxy" / "tokens.json")
    store.save(_HUB, "alice", "SECRET-HUB-TOKEN-3")
    assert stat.S_IMODE((tmp_path / "config" / "jupyter-dev-proxy").stat().st_mode) == 0o700


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_token_file_that_is_a_symlink_is_refused_and_not_written_through(tmp_path: Path) -> None:
    directory, elsewhere = tmp_path / "config", tmp_path / "elsewhere.json"
    directory.mkdir()
    elsewhere.write_text("{}")
    os.symlink(elsewhere, directory / "tokens.json")
    store = _file_store(directory / "tokens.json")
    with pytest.raises(ConfigError) as caught:
        store.save(_HUB, "alice", "SECRET-HUB-TOKEN-4")
    assert "symbolic link" in str(caught.value) and str(directory / "tokens.json") in str(caught.value)
    assert "SECRET-HUB-TOKEN-4" not in str(caught.value)
    assert elsewhere.read_text() == "{}" and (directory / "tokens.json").is_symlink()
    assert [p.name for p in directory.iterdir()] == ["tokens.json"]


# --- #9: only the IDE's relayed requests keep the hub connections warm ------------------------------------------

async def test_only_requests_relayed_to_the_hub_keep_connections_warm(
        echo_proxy: Proxy, echo_seen: list[web.Request], monkeypatch: pytest.MonkeyPatch) -> None:
    noted: list[str] = []
    monkeypatch.setattr(HubTransport, "note_activity", lambda self: noted.append("activity"))
    async with aiohttp.ClientSession() as anyone:
        for headers, target in [({"Host": "evil.example"}, "/api/contents"),  # DNS rebinding
                                ({}, "/api/contents"),  # no token
                                ({"Authorization": "token not-it"}, "/api/contents"),
                                ({"Authorization": f"token {LOCAL_TOKEN}"}, "/hub/api/users"),  # not the user's server
                                ({"Authorization": f"token {LOCAL_TOKEN}"}, "/jupyter-dev-proxy/api/status")]:
            async with anyone.get(echo_proxy.url.with_path(target), headers=headers) as response:
                assert response.status in (200, 403, 404), target
        assert noted == [] and echo_seen == []
        async with anyone.get(echo_proxy.url / "api/contents",
                              headers={"Authorization": f"token {LOCAL_TOKEN}"}) as response:
            assert response.status == 200
    assert noted == ["activity"]


# --- #13: a request from another web page is refused, whatever carries the token ---------------------------------

@pytest.mark.parametrize("carrier", ["query", "header"])
async def test_a_cross_origin_simple_request_with_the_token_is_refused_when_cors_is_off(
        echo_proxy: Proxy, echo_seen: list[web.Request], carrier: str) -> None:
    headers = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    query = {"token": LOCAL_TOKEN} if carrier == "query" else {}
    if carrier == "header":
        headers["Authorization"] = f"token {LOCAL_TOKEN}"
    async with aiohttp.ClientSession() as page:
        async with page.post(echo_proxy.url / "api/kernels", params=query, data='{"name": "python3"}',
                             headers=headers) as response:
            assert response.status == 403
            assert (await response.json())["reason"] == "cross-origin"
            assert "Access-Control-Allow-Origin" not in response.headers
    assert echo_seen == []


async def test_the_proxys_own_pages_and_ides_without_an_origin_keep_working(
        echo_proxy: Proxy, echo_seen: list[web.Request]) -> None:
    own_origin = str(echo_proxy.url.origin())
    async with aiohttp.ClientSession() as browser:
        async with browser.post(echo_proxy.url / "api/kernels", params={"token": LOCAL_TOKEN}, data="{}",
                                headers={"Origin": own_origin}) as response:
            assert response.status == 200  # a same-origin POST: browsers send Origin on it
        async with browser.post(echo_proxy.url / "api/kernels", data="{}",
                                headers={"Authorization": f"token {LOCAL_TOKEN}"}) as response:
            assert response.status == 200  # an IDE: no Origin at all
    assert len(echo_seen) == 2


# --- #7: the browser cookie is never a token ---------------------------------------------------------------------

FORWARDED_HUB_TOKEN = "HubApiToken-forwarded-0a1b2c3d"


def _set_cookies(response: aiohttp.ClientResponse) -> list[str]:
    return response.headers.getall("Set-Cookie", [])


async def test_the_browser_cookie_is_a_session_of_this_run_never_a_token_and_lets_the_browser_in(
        echo_proxy: Proxy, echo_seen: list[web.Request]) -> None:
    settings = echo_proxy.settings
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        for page in ("tree", "jupyter-dev-proxy/"):
            async with browser.get(echo_proxy.url / page % {"token": LOCAL_TOKEN}) as response:
                assert response.status == 200
                [set_cookie] = _set_cookies(response)
                assert LOCAL_TOKEN not in set_cookie and HUB_TOKEN not in set_cookie
                cookie = response.cookies[COOKIE_NAME]
                assert cookie.value == settings.browser_session
                assert cookie["httponly"] and cookie["samesite"] == "Strict"
            browser.cookie_jar.clear()
        async with browser.get(echo_proxy.url / "tree" % {"token": LOCAL_TOKEN}) as response:
            assert response.status == 200
        async with browser.get(echo_proxy.url / "api/contents") as response:  # the cookie alone
            assert response.status == 200
            assert _set_cookies(response) == []
    assert [request.path for request in echo_seen] == ["/user/alice/tree", "/user/alice/tree",
                                                       "/user/alice/api/contents"]
    assert settings.browser_session in settings.secrets
    assert settings.browser_session not in (LOCAL_TOKEN, HUB_TOKEN)


@pytest.mark.parametrize("value", [LOCAL_TOKEN, HUB_TOKEN, "not-it", ""])
async def test_a_cookie_that_is_not_this_runs_session_is_refused(
        echo_proxy: Proxy, echo_seen: list[web.Request], value: str) -> None:
    async with aiohttp.ClientSession() as browser:
        async with browser.get(echo_proxy.url / "api/contents", headers={"Cookie": f"{COOKIE_NAME}={value}"}) as response:
            assert response.status == 403
    assert echo_seen == []


def test_every_run_has_its_own_browser_session(tmp_path: Path) -> None:
    first, second = (load_settings([], MINIMAL_ENV, tmp_path) for _ in range(2))
    assert first.browser_session != second.browser_session and len(first.browser_session) >= 32
    assert first.browser_session in first.secrets


async def test_when_the_ides_token_is_forwarded_no_cookie_is_set_and_none_is_accepted(
        echo_upstream: Any, tls_ca: Any, start_proxy: StartProxy, echo_seen: list[web.Request]) -> None:
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            hub_token=None))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(proxy.url / "tree" % {"token": FORWARDED_HUB_TOKEN}) as response:
            assert response.status == 200 and _set_cookies(response) == []
        async with browser.get(proxy.url / "jupyter-dev-proxy/" % {"token": LOCAL_TOKEN}) as response:
            assert response.status == 200 and _set_cookies(response) == []
        async with browser.get(proxy.url / "api/contents",
                               headers={"Cookie": f"{COOKIE_NAME}={proxy.settings.browser_session}"}) as response:
            assert response.status == 403
    assert [request.path for request in echo_seen] == ["/user/alice/tree"]


def _forwarding(forwarding: bool) -> dict[str, Any]:
    """The Settings of forward-IDE-token mode (no hub token configured), or none."""
    return {"hub_token": None} if forwarding else {}


_NO_CHROMIUM = missing_programs("chromium")


@pytest.mark.skipif(_NO_CHROMIUM is not None and os.environ.get("CI") != "true", reason=str(_NO_CHROMIUM))
@pytest.mark.parametrize("forwarding", [False, True])
async def test_in_a_real_browser_other_local_services_never_receive_a_token_and_the_cookie_works(
        aiohttp_server: Callable[..., Awaitable[Any]], start_proxy: StartProxy, forwarding: bool) -> None:
    """The review's experiment: a page of the user's server loads an image from another service on the same
    host, which receives the browser's cookies for that host (they are not kept apart by port)."""
    other_seen: list[str | None] = []
    hub_seen: list[str] = []

    async def probe(request: web.Request) -> web.Response:
        other_seen.append(request.headers.get("Cookie"))
        return web.Response(body=b"GIF89a", content_type="image/gif")
    other_app = web.Application()
    other_app.router.add_get("/{tail:.*}", probe)
    other = await aiohttp_server(other_app)

    async def page(request: web.Request) -> web.Response:
        if request.path != "/user/alice/favicon.ico":  # asked for by the browser itself, or not
            hub_seen.append(request.path)
        return web.Response(text=f'<img src="http://127.0.0.1:{other.port}/logo.gif"><img src="own.gif">',
                            content_type="text/html")
    hub_app = web.Application()
    hub_app.router.add_get("/{tail:.*}", page)
    hub = await aiohttp_server(hub_app)
    proxy = await start_proxy(make_settings(f"http://127.0.0.1:{hub.port}",
                                            **_forwarding(forwarding)))
    token = FORWARDED_HUB_TOKEN if forwarding else LOCAL_TOKEN
    with tempfile.TemporaryDirectory() as profile:
        chromium = await asyncio.create_subprocess_exec(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--dump-dom", str(proxy.url / "tree" % {"token": token}),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(chromium.wait(), 90) == 0
    assert other_seen, "the browser never loaded the other service's image"
    assert not [cookie for cookie in other_seen if cookie and (token in cookie or HUB_TOKEN in cookie)]
    if forwarding:
        assert other_seen == [None] and hub_seen == ["/user/alice/tree"]  # no cookie: the page's image is refused
    else:
        assert other_seen == [f"{COOKIE_NAME}={proxy.settings.browser_session}"]
        assert hub_seen == ["/user/alice/tree", "/user/alice/own.gif"]  # the cookie let the image through


# --- the status page in forward-IDE-token mode ---------------------------------------------------------------------

@pytest.mark.parametrize("forwarding", [False, True])
async def test_the_status_page_shows_the_ide_url_the_banner_shows(
        echo_upstream: Any, tls_ca: Any, start_proxy: StartProxy, forwarding: bool) -> None:
    proxy = await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                            **_forwarding(forwarding)))
    async with aiohttp.ClientSession() as browser:
        async with browser.get(proxy.url / "jupyter-dev-proxy/" % {"token": LOCAL_TOKEN}) as response:
            assert response.status == 200
            page = await response.text()
        async with browser.get(proxy.url / "jupyter-dev-proxy/api/status" % {"token": LOCAL_TOKEN}) as response:
            status = await response.json()
    shown = '<span id="token" hidden>'
    if forwarding:  # the local token would go to the hub as the credential: the hub API token goes there
        assert f"?token={shown}&lt;YOUR_API_TOKEN&gt;</span>" in page and LOCAL_TOKEN not in page
    else:
        assert f"?token={shown}{LOCAL_TOKEN}</span>" in page
    assert status["proxy"]["forwards_ide_token"] is forwarding


# --- S1: a .env that came with a cloned project cannot expose the hub token -----------------------------------------

# Settings of a ./.env that would let others use the proxy or see the hub's traffic: (variable, value).
_EXPOSING = [("JUPYTER_PROXY_IP_OR_NAME", "0.0.0.0"), ("JUPYTER_HUB_PROXY", "http://mitm.example:3128"),
             ("HTTPS_PROXY", "http://mitm.example:3128"), ("https_proxy", "http://mitm.example:3128"),
             ("ALL_PROXY", "http://mitm.example:3128"), ("JUPYTER_CLUSTER_CA_CERT", "{cwd}/ca.pem"),
             ("JUPYTER_PROXY_ALLOW_ORIGIN", "https://evil.example"), ("JUPYTER_PROXY_ALLOWED_HOSTS", "evil.example")]


def _project_env(cwd: Path, **values: str) -> None:
    (cwd / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (cwd / ".env").write_text("".join(f"{name}={value.format(cwd=cwd)}\n" for name, value in values.items()))


@pytest.mark.parametrize(("name", "value"), _EXPOSING)
def test_a_setting_that_could_expose_the_token_is_refused_from_an_implicit_dotenv(
        cwd: Path, name: str, value: str) -> None:
    _project_env(cwd, **{name: value})
    with pytest.raises(ConfigError) as caught:
        load_settings([], {**MINIMAL_ENV, "JUPYTER_SERVER_IP_OR_NAME": "hub.example.org"}, cwd)
    message = str(caught.value)
    assert name in message and "--env-file .env" in message and str(cwd / ".env") in message
    assert "\n" not in message and message.endswith(".")


@pytest.mark.parametrize(("name", "value"), _EXPOSING)
def test_the_same_setting_is_taken_from_a_named_env_file_or_the_environment(
        cwd: Path, name: str, value: str) -> None:
    _project_env(cwd, **{name: value})
    environ = {**MINIMAL_ENV, "JUPYTER_SERVER_IP_OR_NAME": "hub.example.org"}
    load_settings(["--env-file", ".env"], environ, cwd)
    load_settings([], {**environ, name: value.format(cwd=cwd)}, cwd)


@pytest.mark.parametrize(("name", "value"), [("JUPYTER_PROXY_IP_OR_NAME", "127.0.0.1"),
                                             ("JUPYTER_PROXY_IP_OR_NAME", "localhost"),
                                             ("JUPYTER_PROXY_IP_OR_NAME", "::1"), ("JUPYTER_HUB_PROXY", "none"),
                                             ("JUPYTER_USERNAME", "erin"), ("JUPYTER_PROXY_PORT", "9001")])
def test_settings_that_expose_nothing_still_come_from_an_implicit_dotenv(cwd: Path, name: str, value: str) -> None:
    _project_env(cwd, **{name: value})
    load_settings([], {"JUPYTER_SERVER_IP_OR_NAME": "hub.example.org", "JUPYTER_USERNAME": "alice"}, cwd)


def test_a_company_proxy_from_the_environment_wins_over_one_in_an_implicit_dotenv(cwd: Path) -> None:
    _project_env(cwd, HTTPS_PROXY="http://mitm.example:3128")
    settings = load_settings([], {**MINIMAL_ENV, "JUPYTER_SERVER_IP_OR_NAME": "hub.example.org",
                                  "https_proxy": "http://proxy.corp:3128"}, cwd)
    assert settings.forward_proxy is not None and settings.forward_proxy.host == "proxy.corp"


@pytest.mark.parametrize("line", ["JUPYTERHUB_URL=https://evil.example/", "JUPYTER_SERVER_IP_OR_NAME=evil.example"])
def test_an_implicit_dotenv_cannot_send_the_environments_hub_token_to_another_hub(
        tmp_path: Path, line: str) -> None:
    """The attack review: a cloned project's ./.env naming the hub while the token comes from the environment
    would send that token to the file's hub."""
    (tmp_path / ".env").write_text("\n".join([line, "JUPYTER_USERNAME=alice"]) + "\n")
    with pytest.raises(ConfigError, match="--env-file"):
        load_settings([], {"JUPYTERHUB_API_TOKEN": "real-hub-token-from-my-shell-0001"}, tmp_path)


def test_a_dotenv_with_the_hub_and_its_token_together_still_works(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("JUPYTERHUB_URL=https://hub.example.org/\nJUPYTERHUB_API_TOKEN=token-0123456789\n")
    assert str(load_settings([], {}, tmp_path).hub) == "https://hub.example.org"
