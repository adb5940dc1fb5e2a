"""The hub's REST API, called with the hub token over the proxy's own transport, and what its answers mean.

    hub_client(settings, credential) → HubClient   the credential's token is read as each call is sent
        .version() → str | None                    the hub's version; None: no hub API (a plain Jupyter server)
        .whoami() → Identity                       whose the token is, its scopes, its owner's servers
        .server(me) → ServerModel                  the user's server: ServerState, pending, last activity
        .servers(me) → {name: ServerModel} | None  all of the user's servers, with their spawn options
        .stop_server() → bool                      the user's server asked to stop; whether the hub is still at it
        .token_info(me) → TokenInfo                the owner and scopes, and the expiry where the token may read it
        .progress() → (status, Progress events)    the hub's progress while it starts the server
        .new_token(user, wanted, password) → NewToken   a token of the user's with a note, scopes and expiry, made
                                                   with the credential or (password logins) the user's password
        .revoke_token(user, token_id) → bool       the token gone from the hub
        .token_for_code(client, code, verifier) → NewToken   a sign-in's code (OAuth) exchanged for its token
        .call(method, path) / .request(...)        anything else: (status, JSON, response), or the response
    grants(scopes, scope, user, server) whether a token's scopes allow something on the user's server
    HubError ─ UnexpectedAnswer ─ TokenRefused  a failure, as one sentence; the CLI exits with it at startup

Network failures come from the transport as ProxyError, with their sentence; here they become HubError.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import aiohttp

from .address import HubAddress, hub_escaped
from .config import OAuthClient, Settings
from .errors import ProxyError
from .routing import hub_authorization
from .transport import HubTransport

# A hub API call answers in milliseconds; one that takes longer than this means the hub is not well.
API_TIMEOUT_SECONDS = 30.0

# The progress stream sends a keepalive every 8 s; this much silence means the hub or the network is gone.
PROGRESS_SILENCE_SECONDS = 60.0
_PROGRESS_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=PROGRESS_SILENCE_SECONDS)

# The hub's answers to a token it does not accept.
_TOKEN_REFUSALS = (401, 403)


class HubError(Exception):
    """The hub cannot be used as configured; the message is one sentence that says what to do."""


class UnexpectedAnswer(HubError):
    """The hub answered, but not as the call expects: ``status`` (and a redirect's ``location``) say how."""

    def __init__(self, message: str, status: int, location: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.location = location


class TokenRefused(UnexpectedAnswer):
    """The hub does not accept the token (401/403): it is wrong, expired or revoked."""


class ServerPhase(enum.Enum):
    """A server's state in the words the ``servers`` listing uses: whether it runs, and what the hub is doing."""

    READY = "ready"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ServerState(enum.Enum):
    """The user's server as the hub's model of it says."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    UNKNOWN = "unknown"  # the token may not read the server's model (it lacks read:servers)


@dataclass(frozen=True)
class ServerModel:
    """The hub's model of one server of the user."""

    state: ServerState
    pending: str | None = None  # what the hub is doing to it: "spawn", "stop", or nothing
    last_activity: str | None = None  # as the hub writes it (ISO 8601), the user's when the server has none
    user_options: str | None = None  # the options of its last spawn, as canonical JSON; None: none given

    @classmethod
    def read(cls, model: Mapping[str, Any], user_activity: Any = None) -> ServerModel:
        """One server of the hub's user model; ``user_activity``, the user's, stands in for a server's none."""
        pending = str(model["pending"]) if model.get("pending") else None
        state = (ServerState.RUNNING if model.get("ready") else
                 ServerState.STARTING if pending == "spawn" else ServerState.STOPPED)
        activity = model.get("last_activity") or user_activity
        options = model.get("user_options")
        return cls(state, pending, str(activity) if activity else None,
                   json.dumps(options, sort_keys=True) if isinstance(options, dict) and options else None)

    @property
    def last_active(self) -> datetime | None:
        """The last activity as a time; None when the hub has none (or wrote it in a way it does not read)."""
        try:
            return _hub_time(self.last_activity)
        except ValueError:
            return None

    @property
    def phase(self) -> ServerPhase:
        if self.pending == "stop":
            return ServerPhase.STOPPING
        if self.state is ServerState.STARTING:
            return ServerPhase.STARTING
        return ServerPhase.READY if self.state is ServerState.RUNNING else ServerPhase.STOPPED


_UNKNOWN_SERVER = ServerModel(ServerState.UNKNOWN)
_NEVER_STARTED = ServerModel(ServerState.STOPPED)  # the hub lists no default server that never ran


def _servers(user: Mapping[str, Any]) -> dict[str, ServerModel] | None:
    """The servers in the hub's model of a user; None when the token may not read them (no ``servers`` key)."""
    servers = user.get("servers")
    if not isinstance(servers, dict):
        return None
    return {str(name): ServerModel.read(model, user.get("last_activity"))
            for name, model in servers.items() if isinstance(model, dict)}


@dataclass(frozen=True)
class Identity:
    """Whose the token is, as the hub's ``api/user`` says."""

    name: str
    kind: str  # "user", or "service" for a service's token
    scopes: tuple[str, ...] | None  # None: a hub that does not list them
    token_id: str | None
    servers: dict[str, ServerModel] | None  # None: the token may not read them (read:servers)

    @property
    def is_user(self) -> bool:
        return self.kind == "user"


@dataclass(frozen=True)
class TokenInfo:
    """What the hub says of the token: whose it is, what it may do, and when it expires, where it may tell."""

    owner: str
    scopes: tuple[str, ...] | None = None  # None: the hub did not say
    expires_at: datetime | None = None
    expiry_known: bool = False  # False: the token may not read its own model (read:tokens)


@dataclass(frozen=True)
class WantedToken:
    """What to ask the hub for in a new token: a note the user sees on the token page, scopes, an expiry."""

    note: str
    scopes: tuple[str, ...]
    expires_in_seconds: int


@dataclass(frozen=True)
class NewToken:
    """A token the hub made: its value (a secret), its id on the token page, and when it expires."""

    token: str = field(repr=False)
    token_id: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Progress:
    """One event of the hub's spawn progress stream."""

    percent: int | None
    message: str
    ready: bool = False
    failed: bool = False


def grants(scopes: Sequence[str] | None, scope: str, user: str, server: str) -> bool | None:
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


def _hub_time(value: object) -> datetime | None:
    """A time in the hub's ISO 8601 (UTC, with or without its zone); None when absent. ValueError when malformed."""
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)  # the hub writes UTC


def from_jupyterhub_6(hub_version: str) -> bool:
    """JupyterHub 6 changed the API: ``start:servers`` split out of ``servers``, spawn options nested."""
    major = hub_version.split(".", 1)[0]
    return major.isdigit() and int(major) >= 6


def start_scope_name(hub_version: str) -> str:
    """JupyterHub 6 split ``start:servers`` out of ``servers``; older hubs need the whole ``servers``."""
    return "start:servers" if from_jupyterhub_6(hub_version) else "servers"


class Credential(Protocol):
    """What a hub API call needs of the hub credential (``tokens.HubCredential``): the token in use now."""

    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class FixedToken:
    """A token that is not (yet) the proxy's credential: one the user just pasted, checked with the hub."""

    token: str


def _refused(address: HubAddress, status: int) -> TokenRefused:
    return TokenRefused(f"The hub at {address} does not accept the token (wrong, expired or revoked): make a new "
                        f"one at {address.page('token')}.", status)


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

    async def version(self) -> str | None:
        """The hub's version, which JupyterHub gives anyone who asks; None: no hub API here (404), a plain
        Jupyter server. UnexpectedAnswer when something else answers (an access gateway, not the hub)."""
        address = self.settings.hub
        status, info, response = await self.call("GET", address.api(), auth=False)
        if status == 404:
            return None
        if status != 200 or not isinstance(info, dict) or "version" not in info:
            raise UnexpectedAnswer(f"{address.origin}{address.api()} answered {status} instead of the hub's version: "
                                   "check that the hub address points to JupyterHub itself (with its base path, "
                                   "like https://example.edu/jupyter/).", status, response.headers.get("Location", ""))
        return str(info["version"])

    async def whoami(self) -> Identity:
        """Whose the token is; TokenRefused when the hub does not accept it."""
        address = self.settings.hub
        status, me, _ = await self.call("GET", address.api("user?include_stopped_servers=1"))
        if status in _TOKEN_REFUSALS:
            raise _refused(address, status)
        if status != 200 or not isinstance(me, dict) or "name" not in me:
            raise UnexpectedAnswer(f"The hub at {address} answered {status} when asked whose token this is: "
                                   "check the hub's log, or try again.", status)
        scopes, token_id = me.get("scopes"), me.get("token_id")
        return Identity(name=str(me["name"]), kind=str(me.get("kind", "user")),
                        scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else None,
                        token_id=str(token_id) if token_id else None, servers=_servers(me))

    async def servers(self, me: Identity | None = None) -> dict[str, ServerModel] | None:
        """The hub's models of this client's user's servers by name ('' the default one), stopped ones included;
        None when the token may not read them. ``me``, the token's owner as ``whoami`` said, holds them already when
        that is the user: the hub is not asked again."""
        address = self.settings.hub
        if me is not None and me.is_user and me.name == address.user:
            return me.servers
        status, user, _ = await self.call("GET", address.user_api() + "?include_stopped_servers=1")
        if status == 404:
            raise UnexpectedAnswer(f"The hub has no user '{address.user}' (or the token may not see them): "
                                   "check JUPYTER_USERNAME.", status)
        return _servers(user) if status == 200 and isinstance(user, dict) else None

    async def server(self, me: Identity | None = None) -> ServerModel:
        """The hub's model of this client's user's server (UNKNOWN when the token may not read it)."""
        address = self.settings.hub
        servers = await self.servers(me)
        if servers is None:
            return _UNKNOWN_SERVER
        model = servers.get(address.server)
        if model is None and address.server:  # startup may create it (when it was described whole)
            raise UnexpectedAnswer(f"'{address.user}' has no server named '{address.server}': create it on "
                                   f"{address.page('home')} (or give its spawn options, JUPYTERHUB_SERVER_OPTIONS, "
                                   "and the proxy creates it), or fix JUPYTERHUB_NAMED_SERVER.", 404)
        return model or _NEVER_STARTED

    async def stop_server(self) -> bool:
        """Ask the hub to stop this client's user's server; True while the hub is still stopping it (202), False
        when it is stopped already (204). TokenRefused or UnexpectedAnswer, with the hub's reason, when it will not."""
        address = self.settings.hub
        status, answer, _ = await self.call("DELETE", address.server_api())
        if status in (202, 204):
            return status == 202
        said = str(answer.get("message") or "") if isinstance(answer, dict) else ""
        if status == 401:
            raise _refused(address, status)
        if status == 403:
            raise TokenRefused(f"The token may not stop {address.user}'s {address.server_label} (it needs the "
                               "servers scope, or delete:servers): use a token from "
                               f"{address.page('token')} with all of your permissions.", status)
        raise UnexpectedAnswer(f"The hub did not stop {address.user}'s {address.server_label} ({status}"
                               f"{f': {said}' if said else ''}).", status)

    async def token_info(self, me: Identity) -> TokenInfo:
        """Whose the token is, its scopes, and its expiry where it may read its own model (``read:tokens``)."""
        info = TokenInfo(owner=me.name, scopes=me.scopes)
        if me.token_id is None or not me.is_user:
            return info
        status, model, _ = await self.call("GET", self.settings.hub.api(f"users/{hub_escaped(me.name)}/tokens/"
                                                                        f"{me.token_id}"))
        if status != 200 or not isinstance(model, dict):
            return info
        expires = model.get("expires_at")
        try:
            expires_at = _hub_time(expires)
        except ValueError:
            return info
        return TokenInfo(owner=info.owner, scopes=info.scopes, expires_at=expires_at, expiry_known=True)

    async def new_token(self, user: str, wanted: WantedToken, password: str | None = None) -> NewToken:
        """A new token of ``user``'s, made with the credential (which must hold ``tokens!user=<user>``) or, given
        ``password``, with the user's own password (hubs with a password login). TokenRefused when the hub says
        no; a hub whose limit on expiry is shorter gives its longest."""
        address = self.settings.hub
        body: dict[str, Any] = {"note": wanted.note, "scopes": list(wanted.scopes),
                                "expires_in": wanted.expires_in_seconds}
        if password is not None:
            body["auth"] = {"username": user, "password": password}
        path = address.api(f"users/{hub_escaped(user)}/tokens")
        status, model, _ = await self.call("POST", path, auth=password is None, body=body)
        if status == 400 and "expires_in" in str((model or {}).get("message", "")):
            del body["expires_in"]  # longer than the hub allows (token_expires_in_max_seconds): its maximum then
            status, model, _ = await self.call("POST", path, auth=password is None, body=body)
        said = str(model.get("message") or "") if isinstance(model, dict) else ""
        if status == 403 and password is not None and "not found" in said:
            # The hub signed the password in under its own spelling of the name (e.g. lower case) and says so.
            raise UnexpectedAnswer(f"The hub accepted the password, but has no user '{user}': type your user name "
                                   "as the hub shows it (often in lower case).", status)
        if status in _TOKEN_REFUSALS:
            raise TokenRefused("The hub did not accept the user name and password." if password is not None else
                               f"The token may not make tokens for {user} (it needs the tokens scope).", status)
        if status != 201 or not isinstance(model, dict) or not model.get("token"):
            raise UnexpectedAnswer(f"The hub answered {status} when asked for a new token"
                                   f"{f': {said}' if said else ''}.", status)
        try:
            expires_at = _hub_time(model.get("expires_at"))
        except ValueError:
            expires_at = None  # said wrongly: the warnings ahead of expiry read it again from the hub
        return NewToken(token=str(model["token"]), token_id=str(model.get("id", "")), expires_at=expires_at)

    async def token_for_code(self, client: OAuthClient, code: str, verifier: str) -> NewToken:
        """The token the hub gives for a sign-in's code (OAuth 2 authorization code with PKCE): the client
        authenticates with its secret in the form, as JupyterHub's token endpoint takes it. TokenRefused when the hub
        does not know the client or its secret; UnexpectedAnswer (with the hub's ``error``) for a code it refuses."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": str(client.callback_url),
                "client_id": client.client_id, "client_secret": client.client_secret, "code_verifier": verifier}
        status, model, _ = await self.call("POST", self.settings.hub.api("oauth2/token"), auth=False, form=form)
        error = str(model.get("error") or "") if isinstance(model, dict) else ""
        if status == 401 or error == "invalid_client":
            raise TokenRefused(f"The hub does not know the sign-in client {client.client_id} or its secret: check "
                               "JUPYTERHUB_OAUTH_CLIENT_ID and JUPYTERHUB_OAUTH_CLIENT_SECRET with your hub's admin "
                               "(`jupyter-dev-proxy doctor` checks them).", status)
        if status != 200 or not isinstance(model, dict) or not model.get("access_token"):
            said = f" ({error})" if error else ""
            raise UnexpectedAnswer(f"The hub refused the sign-in's code{said}: sign in again.", status)
        expires_in = model.get("expires_in")
        expires_at = (datetime.now(timezone.utc) + timedelta(seconds=expires_in)
                      if isinstance(expires_in, (int, float)) and expires_in > 0 else None)
        return NewToken(token=str(model["access_token"]), token_id="", expires_at=expires_at)

    async def revoke_token(self, user: str, token_id: str) -> bool:
        """Delete one of ``user``'s tokens from the hub; False when the credential may not (or it is gone)."""
        status, _, _ = await self.call("DELETE", self.settings.hub.api(f"users/{hub_escaped(user)}/tokens/"
                                                                       f"{hub_escaped(token_id)}"))
        return status == 204

    @asynccontextmanager
    async def progress(self) -> AsyncIterator[tuple[int, AsyncIterator[Progress]]]:
        """The hub's progress stream while it starts the user's server: its status, and its events (there are
        none unless the status is 200)."""
        async with self.request("GET", self.settings.hub.server_api() + "/progress",
                                timeout=_PROGRESS_TIMEOUT) as response:
            yield response.status, _events(response)

    async def call(self, method: str, path: str, timeout: aiohttp.ClientTimeout | None = None,
                   auth: bool = True, body: Any = None,
                   form: Mapping[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send one request to ``path`` (a raw path from HubAddress), ``body`` as JSON or ``form`` form-encoded if
        given, with the credential; return (status, JSON or None, response)."""
        async with self.request(method, path, timeout, auth, body, form) as response:
            body = await response.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return response.status, parsed, response

    @asynccontextmanager
    async def request(self, method: str, path: str, timeout: aiohttp.ClientTimeout | None = None,
                      auth: bool = True, body: Any = None,
                      form: Mapping[str, str] | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request (``timeout`` None: an API call's); network failures become HubError."""
        settings = self.settings
        headers = self.authorization() if auth else {}
        raw_path, _, raw_query = path.partition("?")
        try:
            with self._transport.failures():
                async with self._session.request(method, settings.hub.url(raw_path, raw_query), headers=headers,
                                                 json=body, data=form, allow_redirects=False,
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


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[Progress]:
    """Parse ``data: {...}`` lines of a text/event-stream; keepalive blank lines are skipped."""
    if response.status != 200:
        return
    async for raw in response.content:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if not isinstance(event, dict):  # a keep-alive of a front of the hub's (data: "ping"): not an event
            continue
        percent = event.get("progress")
        if not isinstance(percent, (int, float)) or not math.isfinite(percent):  # 1e400 reads as infinity
            percent = None
        yield Progress(int(percent) if percent is not None else None, str(event.get("message", "")),
                       ready=bool(event.get("ready")), failed=bool(event.get("failed")))
