"""The hub's REST API, called with the hub token over the proxy's own transport, and what its answers mean.

    hub_client(settings, credential) → HubClient   .call(method, path) → (status, JSON, response); .request(...)
                                                    streams; the credential's token is read as each call is sent
    grants(scopes, scope, user, server) whether a token's scopes allow something on the user's server
    HubError                           a failure, as one sentence; the CLI exits with it at startup

Network failures come from the transport as ProxyError, with their sentence; here they become HubError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp

from .config import Settings
from .errors import ProxyError
from .routing import hub_authorization
from .transport import HubTransport

# A hub API call answers in milliseconds; one that takes longer than this means the hub is not well.
API_TIMEOUT_SECONDS = 30.0


class HubError(Exception):
    """The hub cannot be used as configured; the message is one sentence that says what to do."""


def grants(scopes: list[str] | None, scope: str, user: str, server: str) -> bool | None:
    """Whether the token's expanded scopes grant ``scope`` on this user's server; None when it cannot be told.

    ``access:servers``, ``access:servers!user=alice`` and ``access:servers!server=alice/dev`` grant it for
    alice's server 'dev'; a group filter might (group membership is not visible to the token), so None.
    """
    if scopes is None:
        return None
    targets = {scope, f"{scope}!user={user}", f"{scope}!server={user}/{server}"}
    if any(s in targets for s in scopes):
        return True
    if any(s.startswith(f"{scope}!group=") for s in scopes):
        return None
    return False


def start_scope_name(hub_version: str) -> str:
    """JupyterHub 6 split ``start:servers`` out of ``servers``; older hubs need the whole ``servers``."""
    major = hub_version.split(".", 1)[0]
    return "start:servers" if major.isdigit() and int(major) >= 6 else "servers"


class Credential(Protocol):
    """What a hub API call needs of the hub credential (``tokens.HubCredential``): the token in use now."""

    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class FixedToken:
    """A token that is not (yet) the proxy's credential: one the user just pasted, checked with the hub."""

    token: str


class HubClient:
    """The hub's REST API with the hub credential, whose token is read as each call is sent: a token swapped
    while the proxy runs is the one the next call carries. Without a credential, calls carry none."""

    def __init__(self, settings: Settings, transport: HubTransport, session: aiohttp.ClientSession,
                 credential: Credential | None) -> None:
        self.settings = settings
        self.credential = credential
        self._transport = transport
        self._session = session

    def for_user(self, user: str) -> HubClient:
        """The same connections and credential, for the user the hub said owns the token."""
        settings = replace(self.settings, hub=self.settings.hub.for_user(user))
        return HubClient(settings, self._transport, self._session, self.credential)

    def authorization(self) -> dict[str, str]:
        """The header that carries the credential's current token; none without a credential."""
        return {"Authorization": hub_authorization(self.credential.token)} if self.credential is not None else {}

    async def call(self, method: str, path: str, timeout: aiohttp.ClientTimeout | None = None,
                   auth: bool = True, body: Any = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send one request to ``path`` (a raw path from HubAddress), ``body`` as JSON if given, with the
        credential; return (status, JSON or None, response)."""
        async with self.request(method, path, timeout, auth, body) as response:
            body = await response.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return response.status, parsed, response

    @asynccontextmanager
    async def request(self, method: str, path: str, timeout: aiohttp.ClientTimeout | None = None,
                      auth: bool = True, body: Any = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request (``timeout`` None: an API call's); network failures become HubError."""
        settings = self.settings
        headers = self.authorization() if auth else {}
        raw_path, _, raw_query = path.partition("?")
        try:
            async with self._transport.failures():
                async with self._session.request(method, settings.hub.url(raw_path, raw_query), headers=headers,
                                                 json=body, allow_redirects=False,
                                                 timeout=timeout or aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS),
                                                 ) as response:
                    yield response
        except ProxyError as error:
            raise HubError(error.message) from None


@asynccontextmanager
async def hub_client(settings: Settings, credential: Credential | None) -> AsyncIterator[HubClient]:
    """A client of the hub's API on connections of its own, closed on leaving."""
    transport = HubTransport(settings)
    session = transport.session()
    try:
        yield HubClient(settings, transport, session, credential)
    finally:
        await session.close()
