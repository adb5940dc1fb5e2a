"""The hub's REST API as the proxy asks it: scopes it grants, the start scope by version, typed answers, a
silent hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from jupyter_dev_proxy import hubapi
from jupyter_dev_proxy.hubapi import HubError, grants, start_scope_name
from jupyter_dev_proxy.startup import check_hub
from jupyter_dev_proxy.tokens import credential_for
from tests.kit.settings import make_settings


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



async def test_a_hub_whose_expiry_limit_is_shorter_gives_its_longest_token(aiohttp_server: Any) -> None:
    """JupyterHub refuses an expires_in over token_expires_in_max_seconds (400); asked again without one, it
    gives its maximum. The token's value never appears in its repr."""
    bodies: list[dict[str, Any]] = []

    async def tokens(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        if "expires_in" in bodies[-1]:
            return web.json_response({"status": 400, "message": "token expires_in: 2592000 must not exceed 86400"},
                                     status=400)
        return web.json_response({"token": "made-token-value", "id": "a7", "expires_at": "2026-12-03T12:00:00Z"},
                                 status=201)
    app = web.Application()
    app.router.add_post("/hub/api/users/alice/tokens", tokens)
    server = await aiohttp_server(app)
    settings = make_settings(f"http://127.0.0.1:{server.port}")
    wanted = hubapi.WantedToken(note="jupyter-dev-proxy on test", scopes=("read:servers!user=alice",),
                                expires_in_seconds=30 * 24 * 3600)
    async with hubapi.hub_client(settings, hubapi.FixedToken("pasted")) as hub:
        made = await hub.new_token("alice", wanted)
    assert (made.token, made.token_id, made.expires_at.isoformat()) == (
        "made-token-value", "a7", "2026-12-03T12:00:00+00:00")
    assert [sorted(body) for body in bodies] == [["expires_in", "note", "scopes"], ["note", "scopes"]]
    assert "made-token-value" not in repr(made)


async def test_progress_events_that_are_no_objects_or_hold_no_finite_number_are_passed_over(api_of: ApiOf) -> None:
    """A keep-alive some front of the hub sends as ``data: "ping"``, a percent of 1e400: not a traceback at startup
    (attack review of the front; the same parser serves one server)."""
    stream = web.Response(body=b'data: "ping"\n\ndata: {"progress": 1e400, "message": "pulling"}\n\n'
                               b'data: {"progress": 100, "ready": true, "message": "ready"}\n\n',
                          content_type="text/event-stream")
    async with api_of({"/hub/api/users/alice/server/progress": stream}) as hub:
        async with hub.progress() as (status, events):
            seen = [event async for event in events]
    assert status == 200
    assert [(event.percent, event.message, event.ready) for event in seen] == [(None, "pulling", False),
                                                                                (100, "ready", True)]
