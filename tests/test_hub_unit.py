"""The hub-awareness rules that need no hub: scopes, certificate issuers, named-server prefixes, settings, the bar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from yarl import URL

from jupyter_dev_proxy import hubapi
from jupyter_dev_proxy import watch as watch_module
from jupyter_dev_proxy.address import HubAddress
from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.certificates import certificate_issuer
from jupyter_dev_proxy.cli import progress_bar
from jupyter_dev_proxy.config import ConfigError, Settings, load_settings
from jupyter_dev_proxy.errors import ServerNotRunning, json_error
from jupyter_dev_proxy.hubapi import HubError, grants, start_scope_name
from jupyter_dev_proxy.startup import Progress, check_hub
from jupyter_dev_proxy.tokens import ExpiryWarnings, TokenStore, credential_for, describe_expiry
from tests.kit.settings import LOCAL_TOKEN, make_settings


@pytest.mark.parametrize("scopes,expected", [
    (["access:servers!user=alice"], True),
    (["access:servers"], True),
    (["access:servers!server=alice/dev"], True),
    (["access:servers!server=alice/"], False),  # her default server, not 'dev'
    (["access:servers!user=bob", "read:servers!user=alice"], False),
    (["access:servers!group=lab"], None),  # membership is not visible to the token
    ([], False),
    (None, None),  # an old hub that does not list the token's scopes
])
def test_a_scope_is_granted_by_its_unfiltered_user_or_server_form(scopes: list[str] | None,
                                                                  expected: bool | None) -> None:
    assert grants(scopes, "access:servers", "alice", "dev") is expected


def test_the_start_scope_is_start_servers_from_jupyterhub_6_and_servers_before() -> None:
    assert start_scope_name("6.1.1") == "start:servers"
    assert start_scope_name("5.4.2") == "servers"


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_the_issuer_of_a_certificate_is_read_from_its_der_form() -> None:
    ca = trustme.CA(organization_name="Example Cluster", organization_unit_name="Kubernetes CA")
    assert certificate_issuer(_der(ca.issue_cert("jupyterhub"))) == "O=Example Cluster, OU=Kubernetes CA"


def test_the_issuer_of_an_intermediate_signed_certificate_is_the_intermediate() -> None:
    root = trustme.CA(organization_name="Root")
    intermediate = root.create_child_ca()
    issuer = certificate_issuer(_der(intermediate.issue_cert("jupyterhub")))
    assert issuer is not None and issuer != certificate_issuer(_der(root.issue_cert("jupyterhub")))


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01\x01", b"not a certificate"])
def test_an_unreadable_certificate_has_no_issuer(garbage: bytes) -> None:
    assert certificate_issuer(garbage) is None


@pytest.mark.parametrize("user,server,prefix", [
    ("alice", "", "/user/alice/"),
    ("alice", "dev", "/user/alice/dev/"),
    ("alice smith", "my server", "/user/alice%20smith/my%20server/"),
    ("al@ce~", "gpu~1", "/user/al@ce~/gpu~1/"),
    ("émile", "été", "/user/%C3%A9mile/%C3%A9t%C3%A9/"),
])
def test_a_named_server_prefix_is_escaped_like_the_hub_escapes_it(user: str, server: str, prefix: str) -> None:
    settings = make_settings("https://hub", None, "hub", user=user, server=server)
    assert settings.hub.server_prefix == prefix


def _load(tmp_path: Path, *argv: str, **environ: str) -> Settings:
    return load_settings(list(argv), {"JUPYTERHUB_URL": "https://hub.example.org", **environ}, tmp_path)


def test_with_a_hub_token_the_username_may_be_left_to_the_hub(tmp_path: Path) -> None:
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN="t").hub.user == ""


def test_without_a_hub_token_the_username_is_still_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JUPYTER_USERNAME"):
        _load(tmp_path)


def test_the_named_server_and_start_policy_are_read_from_flags_and_environment(tmp_path: Path) -> None:
    settings = _load(tmp_path, "--named-server", "dev", JUPYTERHUB_API_TOKEN="t", JUPYTER_PROXY_START_SERVER="Always")
    assert (settings.hub.server, settings.start_server) == ("dev", "always")
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN="t").start_server == "at-startup"


def test_start_server_always_needs_a_hub_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JUPYTER_PROXY_START_SERVER=always needs a hub token"):
        _load(tmp_path, "--start-server", "always", JUPYTER_USERNAME="alice")


@pytest.mark.parametrize("value", ["sometimes", "yes"])
def test_an_unknown_start_policy_is_a_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="at-startup, always, never"):
        _load(tmp_path, "--start-server", value, JUPYTERHUB_API_TOKEN="t")


@pytest.mark.parametrize("name", ["a/b", "..", "/"])
def test_a_named_server_with_a_slash_or_dots_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="JUPYTERHUB_NAMED_SERVER"):
        _load(tmp_path, JUPYTERHUB_API_TOKEN="t", JUPYTERHUB_NAMED_SERVER=name)


def test_the_token_setting_named_in_advice_is_the_one_used(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t\n")
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN_FILE=str(token_file)).hub_token_setting == "JUPYTERHUB_API_TOKEN_FILE"
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN="t").hub_token_setting == "JUPYTERHUB_API_TOKEN"


@pytest.mark.parametrize("percent,message,expected", [
    (0, "Server requested", "[····················]   0% Server requested"),
    (50, "Spawning server...", "[##########··········]  50% Spawning server..."),
    (100, "Server ready", "[####################] 100% Server ready"),
    (None, "Pulling image", "[····················]      Pulling image"),
])
def test_the_terminal_progress_bar_shows_percent_and_message(percent: int | None, message: str,
                                                             expected: str) -> None:
    assert progress_bar(Progress(percent, message), 200) == expected


def test_the_terminal_progress_bar_fits_the_terminal() -> None:
    assert len(progress_bar(Progress(30, "x" * 500), 80)) == 79


async def test_a_hub_that_accepts_but_never_answers_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open, say nothing (not even the TLS handshake)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(hubapi, "API_TIMEOUT_SECONDS", 0.5)
    settings = make_settings(f"https://127.0.0.1:{port}", None, "jupyterhub")
    try:
        with pytest.raises(HubError, match=rf"The hub at https://127.0.0.1:{port} did not answer in time"):
            await check_hub(settings, credential_for(settings), lambda event: None)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def test_settings_built_by_tests_still_default_to_the_default_server() -> None:
    settings = make_settings("https://hub", None, "hub")
    assert (settings.hub.server, settings.hub.server_label, settings.hub.origin) == ("", "default server", URL("https://hub"))


async def test_a_failed_restart_is_logged_and_not_retried_on_every_poll(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[str] = []

    async def failing_start(*args: object) -> None:
        attempts.append("start")
        raise HubError("The hub could not start your default server: no capacity.")

    monkeypatch.setattr(watch_module, "start_server", failing_start)
    settings = make_settings("https://hub", None, "hub", start_server="always")
    watch = watch_module.ServerWatch(settings, "6.1.1", credential_for(settings))

    first = json_error(watch.not_running(ServerNotRunning("not running")))
    assert first.status == 424 and b"starting it again" in first.body  # type: ignore[attr-defined]
    while watch._starting is not None:
        await asyncio.sleep(0.01)
    for _ in range(3):  # the IDE keeps polling
        again = json_error(watch.not_running(ServerNotRunning("not running")))
        assert again.status == 424 and b"could not start it again" in again.body  # type: ignore[attr-defined]
    assert attempts == ["start"]
    assert [r.getMessage() for r in caplog.records if "has stopped" in r.getMessage()] != []
    assert any("Could not start your default server again: The hub could not start" in r.getMessage()
               for r in caplog.records)


# -- tokens: expiry, the store -------------------------------------------------------------------------------------

_NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("left,words", [
    (timedelta(days=6, hours=3), "expires in 6 days"), (timedelta(hours=1, minutes=5), "expires in 1 hour"),
    (timedelta(minutes=3), "expires in 3 minutes"), (timedelta(seconds=20), "expires in less than a minute"),
    (timedelta(seconds=-5), "expired on"),
])
def test_the_expiry_is_said_in_the_largest_whole_unit(left: timedelta, words: str) -> None:
    assert describe_expiry(_NOW + left, _NOW).startswith(words)
    assert describe_expiry(None, _NOW) == "does not expire"


@pytest.mark.parametrize("left,at_once,later", [
    (timedelta(days=3), 0, [timedelta(days=2), timedelta(days=2, hours=23)]),
    (timedelta(hours=5), 1, [timedelta(hours=4)]),
    (timedelta(minutes=30), 1, []),
])
async def test_warnings_come_a_day_and_an_hour_ahead_and_at_once_when_close(
        caplog: pytest.LogCaptureFixture, left: timedelta, at_once: int, later: list[timedelta]) -> None:
    warnings = ExpiryWarnings("https://hub/hub/token", clock=lambda: _NOW)
    warnings.schedule(_NOW + left)
    said = [r for r in caplog.records if "The hub token expires" in r.getMessage()]
    assert len(said) == at_once
    loop = asyncio.get_running_loop()
    assert sorted(timer.when() - loop.time() for timer in warnings._timers) == pytest.approx(
        [delay.total_seconds() for delay in later], abs=1)
    warnings.cancel()


def test_the_token_file_is_kept_readable_by_the_user_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "config" / "tokens.json")
    store._keyring = None  # the file, whatever keyring this machine has
    hub = HubAddress(URL("https://hub.example.org"), "/jupyter/")
    store.save(hub, "alice", "t-1")
    assert (tmp_path / "config" / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert store.find(hub, "") == ("alice", "t-1") and store.find(hub, "bob") is None
    assert store.forget(hub, "alice") and store.find(hub, "alice") is None and not store.forget(hub, "alice")


# -- the hub's REST API, typed ----------------------------------------------------------------------------------------

ApiOf = Callable[..., contextlib.AbstractAsyncContextManager[hubapi.HubClient]]


@pytest.fixture
def api_of(aiohttp_server: Callable[..., Awaitable[Any]]) -> ApiOf:
    """A hub client against a fake hub whose GET ``path`` answers ``routes[path]`` (404 elsewhere)."""
    @contextlib.asynccontextmanager
    async def client(routes: dict[str, web.StreamResponse], server: str = "") -> AsyncIterator[hubapi.HubClient]:
        app = web.Application()
        for path, response in routes.items():
            app.router.add_get(path, _answering(response))
        hub = await aiohttp_server(app)
        settings = make_settings(f"http://127.0.0.1:{hub.port}", server=server)
        async with hubapi.hub_client(settings, credential_for(settings)) as api:
            yield api
    return client


def _answering(response: web.StreamResponse) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return response
    return handle


async def test_the_hub_version_is_none_where_there_is_no_hub_api(api_of: ApiOf) -> None:
    async with api_of({"/hub/api": web.json_response({"version": "5.2.1"})}) as hub:
        assert await hub.version() == "5.2.1"
    async with api_of({}) as hub:
        assert await hub.version() is None


async def test_a_gateways_redirect_instead_of_the_version_is_an_unexpected_answer_with_its_location(
        api_of: ApiOf) -> None:
    async with api_of({"/hub/api": web.Response(status=302, headers={"Location": "https://sso.example/login"})}) as hub:
        with pytest.raises(hubapi.UnexpectedAnswer) as raised:
            await hub.version()
    assert (raised.value.status, raised.value.location) == (302, "https://sso.example/login")


@pytest.mark.parametrize("status", [401, 403])
async def test_a_token_the_hub_does_not_accept_is_token_refused(api_of: ApiOf, status: int) -> None:
    async with api_of({"/hub/api/user": web.json_response({"message": "no"}, status=status)}) as hub:
        with pytest.raises(hubapi.TokenRefused) as raised:
            await hub.whoami()
    assert raised.value.status == status


async def test_whoami_reads_owner_kind_scopes_token_id_and_servers(api_of: ApiOf) -> None:
    me = {"name": "alice", "kind": "user", "scopes": ["access:servers!user=alice"], "token_id": "a12",
          "last_activity": "2026-12-02T08:00:00Z",
          "servers": {"": {"ready": False, "pending": "spawn", "last_activity": None}}}
    async with api_of({"/hub/api/user": web.json_response(me)}) as hub:
        identity = await hub.whoami()
        assert await hub.server(identity) == hubapi.ServerModel(hubapi.ServerState.STARTING, "spawn",
                                                                 "2026-12-02T08:00:00Z")
    assert (identity.name, identity.is_user, identity.scopes, identity.token_id) == (
        "alice", True, ("access:servers!user=alice",), "a12")


@pytest.mark.parametrize("user,state", [
    ({"servers": {"": {"ready": True, "last_activity": "2026-12-02T09:00:00Z"}}}, hubapi.ServerState.RUNNING),
    ({"servers": {"": {"ready": False, "pending": "stop"}}}, hubapi.ServerState.STOPPED),
    ({"servers": {}}, hubapi.ServerState.STOPPED),  # a default server that never ran is not listed
    ({"name": "alice"}, hubapi.ServerState.UNKNOWN),  # the token lacks read:servers
])
async def test_the_servers_state_is_read_from_the_hubs_model(api_of: ApiOf, user: dict[str, Any],
                                                             state: hubapi.ServerState) -> None:
    async with api_of({"/hub/api/users/alice": web.json_response(user)}) as hub:
        assert (await hub.server()).state is state


async def test_a_named_server_the_hub_does_not_list_is_said_with_what_to_do(api_of: ApiOf) -> None:
    async with api_of({"/hub/api/users/alice": web.json_response({"servers": {}})}, server="dev") as hub:
        with pytest.raises(hubapi.UnexpectedAnswer, match="'alice' has no server named 'dev'"):
            await hub.server()


async def test_a_stopped_server_is_answered_424_by_the_funnel_and_said_once_in_the_log(
        aiohttp_server: Callable[..., Awaitable[Any]], caplog: pytest.LogCaptureFixture) -> None:
    async def stopped(request: web.Request) -> web.StreamResponse:  # the hub's redirect to its placeholder
        return web.Response(status=302, headers={"Location": "/hub/user/alice/api/status"})

    app = web.Application()
    app.router.add_get("/user/alice/api/status", stopped)
    hub = await aiohttp_server(app)
    settings = make_settings(f"http://127.0.0.1:{hub.port}", keep_warm_minutes=0)
    runner = ProxyRunner(settings, watch_module.ServerWatch(settings, "5.2.1", credential_for(settings)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"token {LOCAL_TOKEN}"}) as ide:
            for _ in range(3):  # the IDE polls
                async with ide.get(f"http://127.0.0.1:{runner.addresses[0][1]}/api/status") as response:
                    assert response.status == 424
                    assert (await response.json())["reason"] == "server-not-running"
    finally:
        await runner.cleanup()
    said = [r.getMessage() for r in caplog.records if r.name == "jupyter_dev_proxy" and r.levelno >= logging.WARNING]
    assert len(said) == 1 and "has stopped" in said[0], said
