"""At startup: what is upstream, whose token this is, whether the server runs; start it, following its progress.

    check_hub(settings, credential, on_progress) → HubReport   hub or plain server, the token's owner, the server's
                                                              state
    start_server(hub, version, on_progress)         POST the start, then relay the hub's progress until ready
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from .config import START_NEVER, Settings
from .hubapi import (
    Credential,
    HubClient,
    HubError,
    Identity,
    Progress,
    ServerModel,
    ServerState,
    TokenInfo,
    TokenRefused,
    UnexpectedAnswer,
    from_jupyterhub_6,
    grants,
    hub_client,
    start_scope_name,
)

log = logging.getLogger("jupyter_dev_proxy")

# A start may take minutes (an image pull): the POST has no limit of its own, the hub's start_timeout applies.
_NO_LIMIT = aiohttp.ClientTimeout(total=None)

# How long to wait for a server to answer when the token may not read the hub's progress (no read:servers).
START_BY_PROBING_SECONDS = 600.0
_PROBE_INTERVAL_SECONDS = 1.0

# A POST that starts a server returns within ~10 s (the hub's slow_spawn_timeout) or at once for a quick
# spawn; after this long without an answer, the spawn is pending and its progress can be followed.
_POST_HEAD_START_SECONDS = 0.5

# Statuses with which an access gateway in front of the hub refuses a request before JupyterHub sees it: nginx
# answers a missing or refused client certificate with 400 (or 495/496 where the admin chose them).
_CERTIFICATE_REFUSALS = (400, 495, 496)
_CREDENTIAL_REFUSALS = (401, 403)


class BannerState(enum.Enum):
    """The user's server as the banner shows it (``hubapi.ServerState`` is the hub's model of it)."""

    RUNNING = "running"
    STARTED = "started just now"
    STOPPED = "NOT RUNNING"
    UNKNOWN = "state unknown (checking and starting it needs JUPYTERHUB_API_TOKEN)"
    ABSENT = "nothing answers there"  # a plain server: nothing at /user/<name>/


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class HubReport:
    """What the startup check found; ``settings`` is complete (the username is known)."""

    settings: Settings
    hub_version: str | None  # None: a plain Jupyter server without a hub API
    state: BannerState
    note: str = ""  # a sentence for the banner when the state needs one
    token: TokenInfo | None = None


def _access_scope(settings: Settings) -> str:
    hub = settings.hub
    scope = f"access:servers!user={hub.user}"
    if hub.server:
        scope += f" (or access:servers!server={hub.user}/{hub.server})"
    return scope


async def check_hub(settings: Settings, credential: Credential | None, on_progress: ProgressCallback) -> HubReport:
    """Find out what is upstream and whose token this is; start the user's server if it should be started."""
    async with hub_client(settings, credential) as hub:
        try:
            version = await hub.version()
        except UnexpectedAnswer as answer:
            raise _not_the_hub(settings, answer) from None
        if version is None:
            return await _plain_server(hub)
        if credential is None:
            return HubReport(settings, version, BannerState.UNKNOWN)  # nothing to ask with: the banner says so
        me, hub = await _owner(hub)
        settings = hub.settings
        token = await hub.token_info(me)
        model = await _server_model(hub, me)
        scopes = me.scopes
        address = settings.hub
        if grants(scopes, "access:servers", address.user, address.server) is False:
            raise HubError(f"The token may not use your server: it lacks the scope {_access_scope(settings)}; "
                           f"make a token with it at {address.page('token')}.")
        state = await _probe(hub) if model.state is ServerState.UNKNOWN else _BANNER_STATES[model.state]
        if state is BannerState.RUNNING:
            return HubReport(settings, version, BannerState.RUNNING, _other_options(settings, model), token=token)
        if state is BannerState.STARTED:  # someone (the hub's page, another proxy) is starting it already
            await _follow_progress(hub, on_progress)
            return HubReport(settings, version, BannerState.STARTED, _other_options(settings, model), token=token)
        if settings.start_server == START_NEVER:
            return HubReport(settings, version, BannerState.STOPPED,
                             f"Start it from {address.page('home')} (or run the proxy without "
                             "--start-server never): until then the IDE is told it is not running.", token=token)
        if grants(scopes, start_scope_name(version), address.user, address.server) is False:
            raise _lacks_start_scope(settings, version)
        await start_server(hub, version, on_progress)
        return HubReport(settings, version, BannerState.STARTED, token=token)


async def _server_model(hub: HubClient, me: Identity) -> ServerModel:
    """The hub's model of the server. A named server that the hub does not have yet, described whole (a profile's,
    or given its spawn options), is a stopped one: its start creates it, with those options. A bare name in the
    one-server settings may be a typo, and the hub's "no such server" is said instead; so it is when the proxy may
    not start servers."""
    try:
        return await hub.server(me)
    except UnexpectedAnswer as absent:
        settings = hub.settings
        described = settings.profile is not None or settings.server_options is not None
        if absent.status != 404 or not described or settings.start_server == START_NEVER:
            raise
        log.info("The hub has no %s yet: starting it creates it.", hub.settings.hub.server_label)
        return _NOT_CREATED


_NOT_CREATED = ServerModel(ServerState.STOPPED)


def _other_options(settings: Settings, model: ServerModel) -> str:
    """The banner's note when the server runs (or is being started) with other spawn options than the settings ask
    for: said, and logged, but the server is not restarted behind the user's back (its kernels and work would go)."""
    if settings.server_options is None or model.user_options == settings.server_options:
        return ""
    hub = settings.hub
    stop = f"jupyter-dev-proxy stop {settings.profile}, or " if settings.profile else ""
    note = (f"It runs with the options {model.user_options or '{}'}, not {settings.server_options} as asked; it was "
            f"not restarted (its kernels would go): to have those, stop it ({stop}from {hub.page('home')}) and start "
            "the proxy again.")
    log.warning("Your %s: %s", hub.server_label, note)
    return note


# The banner's word for the hub's model of the server (UNKNOWN is asked of the server itself).
_BANNER_STATES = {ServerState.RUNNING: BannerState.RUNNING, ServerState.STARTING: BannerState.STARTED,
                  ServerState.STOPPED: BannerState.STOPPED}


def _not_the_hub(settings: Settings, answer: UnexpectedAnswer) -> HubError:
    """``<base>hub/api`` did not answer with the hub's version, which JupyterHub gives anyone who asks: an access
    gateway stood in the way, or no hub is there."""
    api = f"{settings.hub.origin}{settings.hub.api()}"
    status = answer.status
    location = URL(answer.location)
    if location.absolute and location.host != settings.hub.origin.host:
        return HubError(f"An access gateway in front of the hub sent {api} to its login page ({location.host}): "
                        "set JUPYTER_HUB_HEADERS (or JUPYTER_CLIENT_CERT) to the credentials for programs your "
                        "hub's admins give out.")
    if status in _CERTIFICATE_REFUSALS:
        have = (f"it did not accept the one in {settings.client_cert}" if settings.client_cert is not None else
                "set JUPYTER_CLIENT_CERT (and JUPYTER_CLIENT_KEY) to the one your hub's admins give out")
        return HubError(f"An access gateway in front of the hub refused {api} with {status}, before JupyterHub saw "
                        f"it: it wants a client certificate; {have}.")
    if status in _CREDENTIAL_REFUSALS:
        have = ("check the credentials in JUPYTER_HUB_HEADERS / JUPYTER_CLIENT_CERT, which it did not accept"
                if settings.hub_headers or settings.client_cert is not None else
                "set JUPYTER_HUB_HEADERS (or JUPYTER_CLIENT_CERT) to the credentials for programs your hub's "
                "admins give out")
        return HubError(f"An access gateway in front of the hub refused {api} with {status}, before JupyterHub saw "
                        f"it: {have}.")
    return answer


async def _plain_server(hub: HubClient) -> HubReport:
    """No hub API: a plain Jupyter server under /user/<name>/ (the demo, or one behind another gateway)."""
    settings = hub.settings
    address = settings.hub
    if not address.user:
        raise HubError(f"{address} has no hub API ({address.api()} answers 404), so it cannot say whose "
                       "token this is: set JUPYTER_USERNAME to the <name> in the server's /user/<name>/ path.")
    state = await _probe(hub) if hub.credential is not None else BannerState.UNKNOWN
    if state is BannerState.ABSENT:
        raise HubError(f"Nothing answers at {address.server_url}: check JUPYTER_USERNAME "
                       "(the server's path is /user/<name>/).")
    log.info("%s is a plain Jupyter server, not a JupyterHub (it has no %s): the proxy serves %s there "
             "and will not check who owns the token or start the server.", address, address.api(),
             address.server_prefix)
    return HubReport(settings, None, state)


async def _owner(hub: HubClient) -> tuple[Identity, HubClient]:
    """Ask the hub who owns the token; the client gets that username (or keeps a matching one)."""
    settings = hub.settings
    address = settings.hub
    try:
        me = await hub.whoami()
    except TokenRefused as refused:
        raise TokenRefused(f"The hub at {address} rejected the token in {settings.hub_token_setting} "
                           f"(wrong, expired or revoked): make a new one at {address.page('token')}.",
                           refused.status) from None
    if not me.is_user:
        if not address.user:
            raise HubError(f"The token belongs to the {me.kind} '{me.name}', not to a user: set JUPYTER_USERNAME "
                           "to the user whose server the proxy should use.")
        return me, hub
    if address.user and address.user != me.name:
        raise HubError(f"JUPYTER_USERNAME is '{address.user}' but the token belongs to '{me.name}': "
                       f"use a token of '{address.user}', or set JUPYTER_USERNAME={me.name} (or unset it).")
    return me, hub.for_user(me.name)


async def _probe(hub: HubClient) -> BannerState:
    """Ask the server itself (``api/status``): RUNNING, STOPPED (the hub's redirect), or ABSENT."""
    settings = hub.settings
    address = settings.hub
    status, _, response = await hub.call("GET", f"{address.server_prefix}api/status")
    if status == 200:
        return BannerState.RUNNING
    location = URL(response.headers.get("Location", ""))
    if status in (301, 302, 303, 307) and (location.raw_path + "/").startswith(address.stopped_prefix):
        return BannerState.STOPPED
    if status in (401, 403):
        raise HubError(f"The server at {address.server_url} refused the token in {settings.hub_token_setting}: "
                       f"it needs the scope {_access_scope(settings)} on a hub, or the server's own token on a "
                       "plain Jupyter server.")
    if status == 404:
        return BannerState.ABSENT
    raise HubError(f"The server at {address.server_url} answered {status} to api/status: check the hub's log, "
                   "or try again.")


def _lacks_start_scope(settings: Settings, version: str) -> HubError:
    address = settings.hub
    return HubError(f"Your {address.server_label} is not running and the token may not start it: it lacks the "
                    f"scope {start_scope_name(version)}!user={address.user}; start the server from "
                    f"{address.page('home')}, or make a token with that scope at {address.page('token')}.")


async def start_server(hub: HubClient, version: str, on_progress: ProgressCallback) -> None:
    """Ask the hub to start the server and follow its progress until it is ready; HubError if it fails."""
    settings = hub.settings
    address = settings.hub
    post = asyncio.ensure_future(hub.call("POST", address.server_api(), timeout=_NO_LIMIT,
                                          body=_spawn_body(settings, version)))
    try:
        await asyncio.wait([post], timeout=_POST_HEAD_START_SECONDS)
        if post.done():
            status, body, _ = post.result()
            if status == 403:
                raise _lacks_start_scope(settings, version)
            if status == 404:
                raise HubError(f"The hub has no user '{address.user}': check JUPYTER_USERNAME.")
            if status == 400 and "already running" not in _message(body):
                raise HubError(f"The hub refused to start your {address.server_label}: {_message(body)}.")
        await _follow_progress(hub, on_progress, post)
        if not post.done():
            await post
    finally:
        if not post.done():
            post.cancel()


def _spawn_body(settings: Settings, version: str) -> dict[str, Any] | None:
    """The spawn options as the hub's version expects them: nested under ``user_options`` from JupyterHub 6 on
    (5.x takes the body itself as the options)."""
    if settings.server_options is None:
        return None
    options = json.loads(settings.server_options)
    return {"user_options": options} if from_jupyterhub_6(version) else options


def _message(body: Any) -> str:
    return str(body.get("message") or "").rstrip(".") if isinstance(body, dict) else ""


async def _follow_progress(hub: HubClient, on_progress: ProgressCallback,
                           post: asyncio.Future[Any] | None = None) -> None:
    """Relay the hub's progress events until ready (return) or failed (HubError with the hub's message)."""
    address = hub.settings.hub
    while True:
        async with hub.progress() as (status, events):
            if status == 200:
                async for event in events:
                    on_progress(event)
                    if event.ready:
                        return
                    if event.failed:
                        raise HubError(f"The hub could not start your {address.server_label}: "
                                       f"{event.message.rstrip('.')}.")
                raise HubError(f"The hub ended the progress stream before the server was ready: check "
                               f"{address.page('home')}.")
        if status == 403:  # the token lacks read:servers: watch the server itself instead
            await _wait_by_probing(hub, on_progress)
            return
        # 400 "not starting" or 404: the POST has not made the spawn pending yet, or has finished already
        if post is not None and not post.done():
            await asyncio.wait([post], timeout=_POST_HEAD_START_SECONDS)
            continue
        if post is not None and post.result()[0] in (201, 400) and await _probe(hub) is BannerState.RUNNING:
            on_progress(Progress(100, f"Server ready at {address.server_prefix}", ready=True))
            return
        raise HubError(f"The hub did not start your {address.server_label} (its progress answered {status}): "
                       f"check {address.page('home')}.")


async def _wait_by_probing(hub: HubClient, on_progress: ProgressCallback) -> None:
    address = hub.settings.hub
    on_progress(Progress(None, f"Waiting for the server (the token lacks read:servers!user={address.user}, "
                               "so the hub's progress cannot be shown)"))
    deadline = time.monotonic() + START_BY_PROBING_SECONDS
    while time.monotonic() < deadline:
        if await _probe(hub) is BannerState.RUNNING:
            on_progress(Progress(100, f"Server ready at {address.server_prefix}", ready=True))
            return
        await asyncio.sleep(_PROBE_INTERVAL_SECONDS)
    raise HubError(f"Your {address.server_label} did not answer within {START_BY_PROBING_SECONDS:.0f} s of "
                   f"being started: check {address.page('home')}.")
