"""The command line: settings → (demo server) → ask the hub → listen → banner → serve → clean shutdown.

The only module that prints to the terminal or chooses an exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import ipaddress
import logging
import os
import shutil
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from . import __version__
from .app import ProxyRunner
from .config import ConfigError, ForwardedPort, Settings, TokenKind, chosen_profile, profiles_file
from .demo import DemoServer, DemoUnavailable, start_demo_server
from .firstrun import token_note
from .front import FrontRunner, ProfileSlot, name_profiles_in_log, working_for
from .hubapi import (FixedToken, HubClient, HubError, NewToken, Progress, ServerModel, ServerPhase, TokenInfo,
                     TokenRefused, WantedToken, hub_client)
from .logs import configure_logging, keep_secrets_out_of_logs
from .profiles import ProfilesFile, demo_wanted, every_profile, read_profiles, selected_settings
from .signin import SignedIn, SignInDesk, WaitingForSignIn
from .startup import HubReport, check_hub
from .status import PREFIX as STATUS_PREFIX
from .status import StatusBoard
from .tokens import ExpiryWarnings, HubCredential, TokenStore, credential_for, describe_expiry
from .watch import ServerWatch

# Signals that mean "stop now, cleanly": Ctrl-C in a terminal, and what service managers send.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# How long in-flight requests get to finish after a stop signal before connections are closed.
SHUTDOWN_GRACE_SECONDS = 2.0

EXIT_OK, EXIT_UNFINISHED, EXIT_USAGE = 0, 1, 2  # EXIT_UNFINISHED: a command whose outcome is not (yet) the one asked
EXIT_INTERRUPTED = 128 + signal.SIGINT  # stopped before the proxy was serving, as shells report Ctrl-C

log = logging.getLogger("jupyter_dev_proxy")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_line(report: HubReport, demo: DemoServer | None) -> str:
    hub = report.settings.hub
    if demo is not None:
        return (f"Demo: a throwaway Jupyter server for user '{hub.user}'; its files in {demo.root_dir} "
                "are deleted when the proxy stops. To use your hub, set JUPYTER_SERVER_IP_OR_NAME or JUPYTERHUB_URL.")
    if report.hub_version is None:
        return f"Upstream: a plain Jupyter server at {hub.server_prefix} (no hub API), {report.state.value}."
    line = (f"Hub: JupyterHub {report.hub_version} · user {hub.user} · "
            f"{hub.server_label} {hub.server_prefix}: {report.state.value}.")
    return f"{line} {report.note}" if report.note else line


def _banner(settings: Settings, port: int, report: HubReport | None = None, demo: DemoServer | None = None,
            apps: dict[ForwardedPort, int] | None = None) -> str:
    host = settings.listen_host if settings.listen_host not in ("0.0.0.0", "::") else "localhost"
    local = f"http://{host}:{port}/"
    token = "<YOUR_API_TOKEN>" if settings.forwards_ide_token else settings.local_token
    checked = f" (certificate checked for '{settings.tls_name}')" if settings.tls_name else ""
    reached = f", {settings.reached_through}" if settings.reached_through != "directly" else ""
    lines = [f"jupyter-dev-proxy {__version__}: {local} → {settings.hub.server_url}{checked}{reached}"]
    if report is not None:
        lines.append(_server_line(report, demo))
    if report is not None and report.token is not None and demo is None:
        lines.append(_token_line(settings, report.token))
    lines.append(f"Authorization URL with token for IDE: {local}?token={token}")
    lines.append(f"Status page: {local}{STATUS_PREFIX[1:]}?token={settings.local_token}")
    for app, app_port in (apps or {}).items():
        lines.append(f"Web app on port {app.remote} of your server: http://{host}:{app_port}/?token={token}")
    if settings.forwards_ide_token:
        lines.append("No JUPYTERHUB_API_TOKEN is set: replace <YOUR_API_TOKEN> with your hub API token "
                     f"(make one at {settings.hub.page('token')}).")
    lines.append("Paste the URL into PyCharm or VS Code as an existing Jupyter server. Press Ctrl-C to stop.")
    return "\n".join(lines)


def _token_line(settings: Settings, token: TokenInfo) -> str:
    """Whose the hub token is, where it is kept, and when it expires where the hub tells."""
    expiry = f", {describe_expiry(token.expires_at, datetime.now(timezone.utc))}" if token.expiry_known else ""
    return f"Token: {token.owner}'s, from {settings.token_source}{expiry}."


def progress_bar(event: Progress, width: int) -> str:
    """One line of the terminal progress display: ``[#####·····]  50% Spawning server...``, cut to ``width``."""
    cells = 20
    filled = cells * max(0, min(100, event.percent or 0)) // 100
    percent = f"{event.percent:3d}%" if event.percent is not None else "    "
    line = f"[{'#' * filled}{'·' * (cells - filled)}] {percent} {event.message}"
    return line[:max(width - 1, cells + 7)]


class ProgressDisplay:
    """The hub's progress while it starts the server: a bar redrawn in place on a terminal, log lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()

    def __call__(self, event: Progress) -> None:
        if not self._tty:
            percent = f"{event.percent}% " if event.percent is not None else ""
            log.info("Starting your server: %s%s", percent, event.message)
            return
        width = shutil.get_terminal_size().columns
        end = "\n" if event.ready or event.failed else ""
        self._stream.write(f"\r\x1b[K{progress_bar(event, width)}{end}")
        self._stream.flush()


def _warnings(settings: Settings) -> list[str]:
    warnings = []
    if not _is_loopback(settings.listen_host):
        warnings.append(f"The proxy listens on {settings.listen_host}, not only on this computer: anyone who "
                        "can reach it and learns the token can use your hub account.")
    origin = settings.hub.origin
    if origin.scheme == "http" and not _is_loopback(origin.host or ""):
        warnings.append(f"The hub address {settings.hub} is plain http: your token crosses the network "
                        "unencrypted. Use https:// unless you know the network is private.")
    return warnings


async def _ask_hub(settings: Settings, credential: HubCredential | None, stop: asyncio.Event,
                   can_sign_in: bool = False) -> HubReport | int | None:
    """The hub check (which may start the server and take minutes), abandoned if a stop signal comes first; None
    when the hub refused the token and signing in can give a new one."""
    check = asyncio.ensure_future(check_hub(settings, credential, ProgressDisplay(sys.stderr)))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([check, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not check.done():
        check.cancel()
        print("jupyter-dev-proxy: stopped before the server was ready.", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return check.result()
    except TokenRefused as exc:
        if can_sign_in:
            return None
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (HubError, ConfigError) as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _signed_in(waiting: WaitingForSignIn, stop: asyncio.Event, why: str) -> SignedIn | int:
    """A sign-in in the browser; the exit status when there was none."""
    try:
        signed = await waiting.signed_in(stop, why)
    except ConfigError as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if signed is None:
        print("jupyter-dev-proxy: stopped before you signed in.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return signed


async def _ask_hub_signing_in(settings: Settings, store: TokenStore, waiting: WaitingForSignIn | None,
                              stop: asyncio.Event) -> tuple[HubReport, HubCredential | None] | int:
    """The hub check with the credential it was made with; without a usable token where the hub's login gives one,
    a sign-in first (again when the hub refuses the token it had)."""
    credential = credential_for(settings, store)
    why = "no hub token is kept for this hub yet"
    while True:
        if credential is None and waiting is not None:
            signed = await _signed_in(waiting, stop, why)
            if isinstance(signed, int):
                return signed
            settings = replace(settings, hub=settings.hub.for_user(signed.user), hub_token=signed.token,
                               token_source=signed.source)
            credential = credential_for(settings, store)
            assert credential is not None
            credential.expires_at = signed.expires_at
        report = await _ask_hub(settings, credential, stop, can_sign_in=waiting is not None)
        if report is None:
            credential, why = None, _why_sign_in_again(settings)
            continue
        return report if isinstance(report, int) else (report, credential)


async def serve(settings: Settings, stop: asyncio.Event, demo: DemoServer | None = None,
                store: TokenStore | None = None) -> int:
    """Run the proxy until ``stop`` is set; return the exit status."""
    store = store or TokenStore()
    desk = SignInDesk(settings, store) if settings.oauth is not None else None
    # Where the hub's login gives the token: the address a sign-in before serving holds until the proxy serves.
    async with WaitingForSignIn(settings, desk) if desk is not None else contextlib.nullcontext() as waiting:
        return await _serve(settings, stop, demo, store, desk, waiting)


async def _serve(settings: Settings, stop: asyncio.Event, demo: DemoServer | None, store: TokenStore,
                 desk: SignInDesk | None, waiting: WaitingForSignIn | None) -> int:
    # 1. Ask the hub who we are and whether the server runs; start it if it should be started (signing in first
    #    where the hub's login gives the token). From here on the token lives in the credential, which every
    #    sender reads as it sends.
    asked = await _ask_hub_signing_in(settings, store, waiting, stop)
    if isinstance(asked, int):
        return asked
    report, credential = asked
    settings = report.settings
    if desk is not None and credential is not None:
        desk.user = settings.hub.user  # the hub has said whose server this is: every sign-in must be theirs
        _sign_in_while_serving(desk, credential)
    # 2. Listen (where a sign-in held the address, it is let go just before).
    status = StatusBoard(settings, report.hub_version, report.token)
    status.note = report.note or None
    watch = (ServerWatch(settings, report.hub_version, credential, status) if report.hub_version is not None
             else None)
    try:
        runner = ProxyRunner(settings, watch, shutdown_timeout=SHUTDOWN_GRACE_SECONDS, credential=credential,
                             status=status, sign_in=desk)
        await runner.setup()
    except ConfigError as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if waiting is not None:
        await waiting.release()
    if not await _listen_on(runner, settings, "JUPYTER_PROXY_PORT"):
        await runner.cleanup()
        return EXIT_USAGE
    port = runner.addresses[0][1]
    status.ide_port = port
    apps_token = await _apps_token(settings, credential, report.hub_version) if settings.forwards else ("", None)
    apps = await _serve_apps(runner, settings) if apps_token is not None else None
    if apps_token is None or apps is None:
        await runner.cleanup()
        return EXIT_USAGE
    runner.serve_apps_with(apps_token[0])
    for warning in _warnings(settings):
        log.warning(warning)
    # 3. Tell the user where to point the IDE, then serve until told to stop.
    print(_banner(settings, port, report, demo, apps), flush=True)
    expiry = _expiry_warnings(report, credential, status, desk)
    reload_on_hangup(runner.credential)
    await stop.wait()
    expiry.cancel()
    if desk is not None:
        desk.close()
    log.info("Stopping: closing connections.")
    await runner.cleanup()
    await _revoke_apps_token(settings, credential, apps_token[1])
    return EXIT_OK


@dataclass
class _ProfileStart:
    """One profile's start: its place on the front (filled in when the start ends), and, when it serves, its hub's
    report and expiry warnings."""

    slot: ProfileSlot
    report: HubReport | None = None
    expiry: ExpiryWarnings | None = None


# The front opens its port once every profile has started, or after this long with the slow ones still starting (a
# spawn that pulls an image takes minutes, a hub that hangs takes the API's timeout): those answer 503 "still
# starting" until they are ready. A hub check and a usual spawn take a few seconds.
_PROFILES_START_GRACE_SECONDS = 8.0


async def serve_profiles(profiles: dict[str, Settings | ConfigError], stop: asyncio.Event,
                         store: TokenStore | None = None) -> int:
    """Every profile of the profiles file at once on one port, each under /<profile>/, until ``stop`` is set; the
    exit status. Their starts run in parallel; a profile whose hub is down, whose server does not start or whose
    settings are wrong answers 503 with why, one still starting after the grace time answers 503 until it is ready,
    and the others serve."""
    listening = _listening_settings(profiles)
    profiles = _without_address_names(profiles)
    store = store or TokenStore()
    name_profiles_in_log()
    starts = {name: _ProfileStart(ProfileSlot(name, settings if isinstance(settings, Settings) else None))
              for name, settings in profiles.items()}
    tasks = {name: asyncio.ensure_future(_start_profile(starts[name],
                                                        replace(settings, local_token=listening.local_token,
                                                                browser_session=listening.browser_session), store)
                                         if isinstance(settings, Settings) else _unusable(starts[name], settings))
             for name, settings in profiles.items()}
    every: asyncio.Future[Any] = asyncio.gather(*tasks.values())  # each start says its own failures
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([every, stopping], timeout=_PROFILES_START_GRACE_SECONDS,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    front = FrontRunner(listening, {name: start.slot for name, start in starts.items()},
                        shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    try:
        if stop.is_set():
            print("jupyter-dev-proxy: stopped before the servers were ready.", file=sys.stderr)
            return EXIT_INTERRUPTED
        return await _serve_front(front, listening, starts, tasks, stop)
    finally:
        every.cancel()  # and with it every start still asking its hub
        with contextlib.suppress(asyncio.CancelledError):
            await every
        for start in starts.values():
            if start.expiry is not None:
                start.expiry.cancel()
        await front.cleanup()  # every runner that started, whenever it did


async def _serve_front(front: FrontRunner, listening: Settings, starts: dict[str, _ProfileStart],
                       tasks: Mapping[str, asyncio.Future[None]], stop: asyncio.Event) -> int:
    """Open the front's port, print the banner (and a line for each profile that becomes ready later), serve until
    ``stop``."""
    await front.setup()
    if not await _listen_on(front, listening, "listen-port in the profiles file's [defaults]"):
        return EXIT_USAGE
    front.port = front.addresses[0][1]
    for name, start in starts.items():
        if tasks[name].done():
            _serving(front, start)
        else:  # a slow one: said when it is ready (or not served)
            tasks[name].add_done_callback(functools.partial(_ready_later, front, listening, start))
    for warning in dict.fromkeys(w for s in starts.values() if s.slot.settings is not None
                                 for w in _warnings(s.slot.settings)):
        log.warning(warning)
    print(_profiles_banner(listening, front, {name: start.report for name, start in starts.items()}), flush=True)
    reload_on_hangup(*(start.slot.runner.credential for start in starts.values() if start.slot.runner is not None))
    await stop.wait()
    log.info("Stopping: closing connections.")
    return EXIT_OK


async def _listen_on(runner: web.BaseRunner, settings: Settings, setting: str) -> bool:
    """Listen where ``settings`` say; False, said on stderr with the ``setting`` to change, when that is taken."""
    try:
        await web.TCPSite(runner, settings.listen_host, settings.listen_port).start()
    except OSError as exc:
        print(f"jupyter-dev-proxy: cannot listen on {settings.listen_host}:{settings.listen_port} "
              f"({exc.strerror}): another program (maybe another proxy) uses it; stop it or set {setting} to "
              "another port.", file=sys.stderr)
        return False
    return True


def _serving(front: FrontRunner, start: _ProfileStart) -> None:
    """A profile's start has ended while the front listens: its runner learns the front's address."""
    runner = start.slot.runner
    if runner is not None:
        runner.status.ide_port, runner.status.ide_path = front.port, f"{start.slot.prefix}/"


def _ready_later(front: FrontRunner, listening: Settings, start: _ProfileStart, task: asyncio.Future[None]) -> None:
    """A profile that was still starting when the banner was printed has ended its start: its line, as the banner's."""
    if task.cancelled():
        return
    _serving(front, start)
    front.find_nested_servers()  # its hub has said whose server it is
    slot = start.slot
    if slot.runner is not None:
        reload_on_hangup(*(other.runner.credential for other in front.slots.values() if other.runner is not None))
        print(f"IDE URL for {slot.name}: {front.ide_url(slot)}?token={listening.local_token}  now ready", flush=True)


def _without_address_names(profiles: dict[str, Settings | ConfigError]) -> dict[str, Settings | ConfigError]:
    """A profile named as the first part of the servers' own addresses (``user`` in /user/alice/...) cannot be served
    under that name: the addresses a server hands out whole would be taken for its paths."""
    taken = {settings.hub.server_prefix.split("/")[1]: settings.hub.server_prefix for settings in profiles.values()
             if isinstance(settings, Settings)}
    return {name: ConfigError(f"its name is the start of your servers' addresses ({taken[name]}...), which the proxy "
                              f"serves as they are: give the profile another name in its file.")
            if name in taken else settings for name, settings in profiles.items()}


def _listening_settings(profiles: dict[str, Settings | ConfigError]) -> Settings:
    """The settings of the one port every profile is served on: the first usable profile's, whose token and
    browser session every profile gets. ConfigError when profiles disagree on where to listen, or none can be
    used."""
    usable = {name: settings for name, settings in profiles.items() if isinstance(settings, Settings)}
    if not usable:
        raise ConfigError("No profile can be used: " + " ".join(f"{name}: {error}" for name, error in
                                                                 profiles.items()))
    first, listening = next(iter(usable.items()))
    for name, settings in usable.items():
        if (settings.listen_host, settings.listen_port) != (listening.listen_host, listening.listen_port):
            raise ConfigError(f"The profiles '{first}' and '{name}' listen on different addresses "
                              f"({listening.listen_host}:{listening.listen_port}, {settings.listen_host}:"
                              f"{settings.listen_port}), but one proxy serves them all on one port: set listen-host "
                              "and listen-port in [defaults] only.")
    return listening


async def _start_profile(start: _ProfileStart, settings: Settings, store: TokenStore) -> None:
    """One profile's start in a task of its own, whose log lines name the profile: the hub check (its server started
    or created with its options), then its runner in ``start.slot``; or why it cannot be served, in a sentence
    (logged)."""
    slot = start.slot
    working_for(slot.name)
    if settings.forwards:
        return _unserved(slot, "forwarding web apps to local ports (forward) takes one profile per proxy: remove it "
                               f"from this profile, or serve it alone with  jupyter-dev-proxy --profile {slot.name}.")
    credential = credential_for(settings, store)
    if credential is None:  # a hub whose login gives the token, none kept yet: signing in needs the browser
        return _unserved(slot, f"no hub token is kept for it yet: run  jupyter-dev-proxy login --profile "
                               f"{slot.name}  first.")

    def progress(event: Progress) -> None:
        _log_progress(event)
        slot.progress = f"{event.percent}% {event.message}" if event.percent is not None else event.message

    try:
        report = await check_hub(settings, credential, progress)
        status = StatusBoard(report.settings, report.hub_version, report.token)
        status.note = report.note or None
        watch = (ServerWatch(report.settings, report.hub_version, credential, status)
                 if report.hub_version is not None else None)
        runner = ProxyRunner(report.settings, watch, shutdown_timeout=SHUTDOWN_GRACE_SECONDS, credential=credential,
                             status=status)
        await runner.setup()
    except (HubError, ConfigError) as exc:
        return _unserved(slot, str(exc))
    except Exception:  # noqa: BLE001 - one profile's unforeseen failure is its own, not every profile's
        log.exception("Its start hit an unexpected error")
        return _unserved(slot, "the proxy hit an unexpected error starting it (its log has the details).")
    start.report, start.expiry = report, _expiry_warnings(report, credential, status)
    slot.settings, slot.runner = report.settings, runner
    log.info("Ready.")


def _unserved(slot: ProfileSlot, why: str) -> None:
    log.warning("Not served: %s", why)
    slot.failure = why


async def _unusable(start: _ProfileStart, error: ConfigError) -> None:
    """A profile whose settings cannot be used: served as a 503 saying why, as one whose hub is down."""
    working_for(start.slot.name)
    _unserved(start.slot, str(error))


def _log_progress(event: Progress) -> None:
    """The hub's progress starting a profile's server as log lines, which name the profile (several start at once:
    one bar redrawn in place cannot show them)."""
    percent = f"{event.percent}% " if event.percent is not None else ""
    log.info("Starting its server: %s%s", percent, event.message)


def _profiles_banner(settings: Settings, front: FrontRunner, reports: dict[str, HubReport | None]) -> str:
    """One IDE URL per profile, each on its line with the server it reaches or that it does not serve."""
    token = settings.local_token
    lines = [f"jupyter-dev-proxy {__version__}: {len(front.slots)} profiles, each a Jupyter server of its own "
             f"under its name:"]
    for name, slot in front.slots.items():
        report = reports.get(name)
        if report is None and slot.failure is None:
            state = "STARTING (its hub is still starting the server; the log says when it is ready)"
        elif report is None:
            state = "NOT SERVING (the warning above says why)"
        else:
            hub = report.settings.hub
            state = f"{hub.user}'s {hub.server_label} on {hub}: {report.state.value}"
            state += " (with other options than asked: see above)" if report.note else ""
        lines.append(f"IDE URL for {name}: {front.ide_url(slot)}?token={token}  {state}")
    lines.append(f"Status page: {front.url(STATUS_PREFIX)}?token={token}")
    lines.append("Paste a profile's URL into PyCharm or VS Code as an existing Jupyter server. Press Ctrl-C to stop.")
    return "\n".join(lines)


def _expiry_warnings(report: HubReport, credential: HubCredential | None, status: StatusBoard,
                     desk: SignInDesk | None = None) -> ExpiryWarnings:
    """Warnings ahead of the hub token's expiry (a sign-in asked ahead where the hub's login gives the token), moved
    to a new token's expiry when one is used."""
    settings = report.settings
    expiry = ExpiryWarnings(settings.hub.page("token"), sign_in=desk.ask if desk is not None else None)
    if report.token is not None and report.token.expiry_known:
        expiry.schedule(report.token.expires_at)
    elif credential is not None:
        expiry.schedule(credential.expires_at)  # where the hub's token model does not say it (JupyterHub < 5)
    if credential is not None and report.hub_version is not None:
        credential.on_change = lambda: asyncio.ensure_future(_follow_new_token(settings, credential, expiry,
                                                                               status))
    return expiry


# How long the web apps' own token lasts (the hub may allow less): the proxy revokes it when it stops.
_APPS_TOKEN_SECONDS = 14 * 24 * 3600


async def _apps_token(settings: Settings, credential: HubCredential | None,
                      hub_version: str | None) -> tuple[str, NewToken | None] | None:
    """The token the web apps' requests carry, and the hub's record of it when the proxy made it: on a hub, a new
    token that reaches only this server (jupyter-server-proxy hands it on to the app); on a plain server, its own
    token, which reaches nothing else. None when the hub will not make one (said on stderr)."""
    if credential is None or hub_version is None:
        return (credential.token if credential is not None else ""), None
    hub = settings.hub
    wanted = WantedToken(note=f"{token_note()}: web apps on local ports", expires_in_seconds=_APPS_TOKEN_SECONDS,
                         scopes=(f"access:servers!server={hub.user}/{hub.server}",))
    try:
        async with hub_client(settings, credential) as client:
            made = await client.new_token(hub.user, wanted)
    except (TokenRefused, HubError) as exc:
        print(f"jupyter-dev-proxy: JUPYTER_PROXY_FORWARD gives your web apps a token of their own that reaches only "
              f"your server (jupyter-server-proxy hands every request's token on to the app), but the hub did not "
              f"make one: {exc} Use a token from {hub.page('token')} (it may make tokens), or remove "
              "JUPYTER_PROXY_FORWARD.", file=sys.stderr)
        return None
    return made.token, made


async def _revoke_apps_token(settings: Settings, credential: HubCredential | None, made: NewToken | None) -> None:
    """Delete the web apps' token from the hub as the proxy stops; when it cannot, the token expires by itself."""
    if made is None or credential is None or not made.token_id:
        return
    try:
        async with hub_client(settings, credential) as client:
            await client.revoke_token(settings.hub.user, made.token_id)
    except HubError as exc:
        log.info("Could not revoke the web apps' token (%s); it expires by itself.", exc)


async def _serve_apps(runner: ProxyRunner, settings: Settings) -> dict[ForwardedPort, int] | None:
    """Listen on each forwarded app's local port; the port each got (a free one for 0), or None when one cannot
    be listened on (said on stderr)."""
    apps: dict[ForwardedPort, int] = {}
    for app in settings.forwards:
        before = set(runner.addresses)
        try:
            await web.TCPSite(runner, settings.listen_host, app.local).start()
        except OSError as exc:
            print(f"jupyter-dev-proxy: cannot listen on {settings.listen_host}:{app.local} for port {app.remote} of "
                  f"your server ({exc.strerror}): another program uses it; give the app another local port with "
                  f"JUPYTER_PROXY_FORWARD={app.remote}:<LOCAL_PORT>.", file=sys.stderr)
            return None
        ports = [address[1] for address in runner.addresses if address not in before]
        for port in ports:  # one per address of the listen host (localhost: 127.0.0.1 and ::1)
            runner.serve_app(port, app)
        apps[app] = ports[0]
    return apps


def _why_sign_in_again(settings: Settings) -> str:
    """Why a start signs in although it had a token: the hub refused it (and a variable keeps coming first)."""
    why = f"the hub no longer accepts the token from {settings.token_source}"
    if settings.token_source.kind in (TokenKind.VARIABLE, TokenKind.FILE):
        why += f"; remove {settings.token_source.setting} from your settings, or every start signs in again"
    return why


def _sign_in_while_serving(desk: SignInDesk, credential: HubCredential) -> None:
    """A refused or expiring token starts a sign-in; the token it ends with is used at once, kernels running."""
    credential.sign_in = desk.ask

    def use(signed: SignedIn) -> None:
        credential.use(signed.token, "from your sign-in", "you signed in again", signed.expires_at)
        credential.source = signed.source
    desk.on_signed_in = use


async def _follow_new_token(settings: Settings, credential: HubCredential, expiry: ExpiryWarnings,
                            board: StatusBoard) -> None:
    """A new token is in use: say when it expires, and warn ahead of that instead of the old one's expiry."""
    expiry.cancel()
    try:
        async with hub_client(settings, credential) as hub:
            info = await hub.token_info(await hub.whoami())
    except HubError:
        return
    board.token = info
    expires_at = info.expires_at if info.expiry_known else credential.expires_at
    if info.expiry_known or expires_at is not None:
        log.info("The new hub token is %s's and %s.", info.owner, describe_expiry(expires_at,
                                                                                   datetime.now(timezone.utc)))
        expiry.schedule(expires_at)


def reload_on_hangup(*credentials: HubCredential | None) -> None:
    """SIGHUP (where the system has it: not on Windows) makes the proxy read its hub tokens again from their files
    or the keyring (every profile's, when it serves several)."""
    rereadable = [credential for credential in credentials if credential is not None and credential.source.rereadable]
    if not rereadable or not hasattr(signal, "SIGHUP"):
        return

    def reload() -> None:
        for credential in rereadable:
            credential.reload_soon("SIGHUP")
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError):
        signal.signal(signal.SIGHUP, lambda number, frame: loop.call_soon_threadsafe(reload))


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on Ctrl-C or a service manager's SIGTERM. Where the event loop cannot take signal handlers
    (Windows' loops), Python's own handler does it, from whichever thread the signal lands on."""
    loop = asyncio.get_running_loop()
    for sig in HANDLED_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            signal.signal(sig, lambda number, frame: loop.call_soon_threadsafe(stop.set))


async def _main(settings: Settings, demo: DemoServer | None, store: TokenStore) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    return await serve(settings, stop, demo, store)


def _serve_every_profile(found: ProfilesFile, argv: list[str]) -> int:
    """``jupyter-dev-proxy`` with a profiles file and no hub or --profile: every profile at once, on one port."""
    store = TokenStore()
    profiles = found.served_settings(argv, os.environ, Path.cwd(), store.lookup)
    usable = [settings for settings in profiles.values() if isinstance(settings, Settings)]
    for settings in usable:
        keep_secrets_out_of_logs(settings.secrets)
    configure_logging(usable[0].log_level if usable else "info")

    async def main() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        return await serve_profiles(profiles, stop, store)
    return _run(main(), usable[0].event_loop if usable else "auto")


def _interactive() -> bool:
    """A person at a terminal, who can be asked for a token."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _doctor(argv: list[str]) -> int:
    """``jupyter-dev-proxy doctor [settings]``: check each link to the user's server, one line each.
    ``doctor --service-entry``: print the service entry the hub's admin adds for signing in with the hub's login."""
    entry = "--service-entry" in argv
    argv = [a for a in argv if a != "--service-entry"]
    try:
        every = None if entry else every_profile(argv, os.environ, Path.cwd())
    except ConfigError as exc:
        print(f"✗ settings: {exc}")
        return 1
    if every is not None:
        return _doctor_every_profile(every, argv)
    try:
        settings = selected_settings(argv, os.environ, Path.cwd(), stored=TokenStore().lookup,
                                     token_can_be_asked=True)
    except ConfigError as exc:
        print(f"✗ settings: {exc}")
        return 1
    keep_secrets_out_of_logs(settings.secrets)
    configure_logging("error")  # the doctor's lines are its output
    from .doctor import run_doctor, run_service_entry  # imported when asked for: every start would pay for it
    if entry:
        return _run(run_service_entry(settings, sys.stdout), settings.event_loop)
    return _run(run_doctor(settings, argv, Path.cwd(), sys.stdout), settings.event_loop)


def _doctor_every_profile(found: ProfilesFile, argv: list[str]) -> int:
    """``doctor`` with a profiles file and no hub or --profile (what the proxy then serves): every profile's links,
    a block each under its name; 0 when all hold."""
    profiles = found.served_settings(argv, os.environ, Path.cwd(), TokenStore().lookup)
    usable = [settings for settings in profiles.values() if isinstance(settings, Settings)]
    for settings in usable:
        keep_secrets_out_of_logs(settings.secrets)
    configure_logging("error")  # the doctor's lines are its output
    from .doctor import run_doctor  # imported when asked for: every start would pay for it

    async def check_each() -> int:
        healthy = True
        for name, settings in profiles.items():
            print(f"Profile {name}:", flush=True)
            if isinstance(settings, ConfigError):
                print(f"✗ settings: {settings}")
                healthy = False
            elif await run_doctor(settings, argv, Path.cwd(), sys.stdout) != 0:
                healthy = False
        return 0 if healthy else 1
    return _run(check_each(), usable[0].event_loop if usable else "auto")


def _forget_token(argv: list[str]) -> int:
    """``jupyter-dev-proxy forget-token [settings]``: remove the token kept for this hub."""
    store = TokenStore()
    settings = selected_settings(argv, os.environ, Path.cwd(), token_can_be_asked=True)
    if store.forget(settings.hub, settings.hub.user):
        print(f"Removed the token kept for {settings.hub} from {store.source}.")
    else:
        print(f"No token was kept for {settings.hub} in {store.source}.")
    return EXIT_OK


def _login(argv: list[str]) -> int:
    """``jupyter-dev-proxy login [--password] [settings]``: get a token for this hub and keep it, replacing a kept
    one: pasted from the token page, or (``--password``, hubs with a password login) made with the password."""
    with_password = "--password" in argv
    settings = selected_settings([a for a in argv if a != "--password"], os.environ, Path.cwd(),
                                 token_can_be_asked=True)
    store = TokenStore()
    if settings.oauth is not None and not with_password:
        keep_secrets_out_of_logs(settings.secrets)
        configure_logging(settings.log_level)
        return _run(_sign_in_now(settings, store), settings.event_loop)
    from .firstrun import ask_for_token, login_with_password  # the prompt and the browser, only when asked
    if with_password:
        done = login_with_password(settings, store, sys.stderr)
    else:
        done = ask_for_token(settings, store, sys.stderr, why="and you asked for a new one (it replaces a kept one)")
    if done is not None and os.environ.get("JUPYTERHUB_API_TOKEN") and settings.profile is None:
        print("Note: JUPYTERHUB_API_TOKEN is set in this environment, and it comes before a kept token: unset it "
              "for the proxy to use the new one.", file=sys.stderr)
    return EXIT_OK if done is not None else EXIT_USAGE


async def _sign_in_now(settings: Settings, store: TokenStore) -> int:
    """``login`` where the hub's login gives the token: sign in in the browser now, keep the token, and end."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with WaitingForSignIn(settings, SignInDesk(settings, store)) as waiting:
        signed = await _signed_in(waiting, stop, "you asked to sign in")
    if isinstance(signed, int):
        return signed
    print(f"Signed in as {signed.user}: the token is kept in {signed.source} for the next starts.", file=sys.stderr)
    return EXIT_OK


# How long ``stop`` waits for the hub to say the server stopped: a spawner's stop (SIGTERM, then SIGKILL after its
# grace, or a pod's deletion) takes seconds; past this the hub is still at it, and ``servers`` shows when it is done.
STOP_WAIT_SECONDS = 60.0
_STOP_POLL_SECONDS = 0.5  # the hub sends no event when a server has stopped: its model is asked again this often

# The name the listing gives a server without one, and the profile column of settings that are not a profile's.
_DEFAULT_SERVER, _NOT_A_PROFILE = "(default)", "(settings)"


def _servers(argv: list[str]) -> int:
    """``jupyter-dev-proxy servers [settings]``: the user's servers on the hub of every profile (the one --profile
    names; without a profiles file, these settings'), one block per hub and user."""
    store = TokenStore()
    listed: dict[str, Settings | ConfigError]
    found = read_profiles(*profiles_file(argv, os.environ))
    name = chosen_profile(argv, os.environ)
    if name is None and found.profiles:
        listed = found.each_settings(os.environ, store.lookup)
    else:
        listed = {name or _NOT_A_PROFILE: selected_settings(argv, os.environ, Path.cwd(), stored=store.lookup)}
    usable = [settings for settings in listed.values() if isinstance(settings, Settings)]
    for settings in usable:
        keep_secrets_out_of_logs(settings.secrets)
    configure_logging("error")  # the listing is the output
    for profile, unusable in listed.items():
        if isinstance(unusable, ConfigError):
            print(f"{profile}: {unusable}")
    if not usable:
        return EXIT_USAGE
    return _run(_list_servers(listed, under_names=name is None and bool(found.profiles)), usable[0].event_loop)


def _url_through_proxy(profile: str, settings: Settings, under_names: bool) -> str:
    """Where the IDE finds the profile's server through this proxy: under /<profile>/ when one proxy serves every
    profile (``under_names``), at the root otherwise; '-' when the port is only chosen at start (0)."""
    if not settings.listen_port:
        return "-"
    host = "localhost" if settings.listen_host in ("0.0.0.0", "::") else settings.listen_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.listen_port}/{f'{profile}/' if under_names else ''}"


async def _list_servers(listed: dict[str, Settings | ConfigError], under_names: bool = False) -> int:
    """Ask every hub at once (one that is down holds no other), then print a block per hub and user."""
    profiles = {profile: settings for profile, settings in listed.items() if isinstance(settings, Settings)}
    answers = await asyncio.gather(*(_hub_servers(settings) for settings in profiles.values()),
                                   return_exceptions=True)
    # One block per hub and user: their servers, and the profiles that point at each.
    blocks: dict[tuple[str, str], tuple[dict[str, ServerModel], dict[str, list[tuple[str, str]]]]] = {}
    failed = False
    for (profile, settings), answer in zip(profiles.items(), answers):
        if isinstance(answer, (HubError, ConfigError)):
            print(f"{profile}: {answer}")
            failed = True
            continue
        if isinstance(answer, BaseException):
            raise answer
        user, servers = answer
        _, pointing = blocks.setdefault((str(settings.hub), user), (servers, {}))
        pointing.setdefault(settings.hub.server, []).append((profile, _url_through_proxy(profile, settings,
                                                                                         under_names)))
    for (hub, user), (servers, pointing) in blocks.items():
        print(f"{user} on {hub}:")
        print(_servers_table(servers, pointing))
    return EXIT_UNFINISHED if failed else EXIT_OK


async def _hub_servers(settings: Settings) -> tuple[str, dict[str, ServerModel]]:
    """The user the settings are for (the token's owner unless they name one) and their servers, as the hub has
    them."""
    if settings.hub_token is None:
        raise ConfigError(f"Listing your servers on {settings.hub} needs a hub token: set JUPYTERHUB_API_TOKEN (or "
                          "run  jupyter-dev-proxy login  to keep one).")
    async with hub_client(settings, FixedToken(settings.hub_token)) as client:
        me = await client.whoami()
        user = settings.hub.user or me.name
        servers = await client.for_user(user).servers(me)
    if servers is None:
        raise HubError(f"The token may not read {user}'s servers: it needs the read:servers scope.")
    return user, servers


def _servers_table(servers: dict[str, ServerModel], profiles: dict[str, list[tuple[str, str]]]) -> str:
    """The servers as rows of aligned columns, the default server first, with the profiles that point at each and
    its URL through this proxy; a profile's server that the hub does not have yet is a row too."""
    rows = [("SERVER", "STATE", "LAST ACTIVITY", "PROFILE", "URL THROUGH THIS PROXY", "OPTIONS")]
    for name in sorted({*servers, *profiles}, key=lambda server: (server != "", server)):
        model = servers.get(name)
        active = model.last_active if model is not None else None
        pointing = profiles.get(name, [])
        rows.append((name or _DEFAULT_SERVER, model.phase.value if model is not None else "not created",
                     active.strftime("%Y-%m-%d %H:%M UTC") if active is not None else "-",
                     ", ".join(profile for profile, _ in pointing) or "-",
                     ", ".join(url for _, url in pointing) or "-",
                     (model.user_options if model is not None else None) or "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def _stop(argv: list[str]) -> int:
    """``jupyter-dev-proxy stop NAME [settings]``: stop the server of the profile NAME on its hub, and wait (a
    bounded time) until the hub says it stopped."""
    if not argv or argv[0].startswith("-"):
        print("jupyter-dev-proxy: name the profile whose server to stop, as in  jupyter-dev-proxy stop gpu  "
              "(jupyter-dev-proxy servers lists them).", file=sys.stderr)
        return EXIT_USAGE
    settings = selected_settings(["--profile", argv[0], *argv[1:]], os.environ, Path.cwd(),
                                 stored=TokenStore().lookup)
    keep_secrets_out_of_logs(settings.secrets)
    configure_logging("error")
    return _run(_stop_server(settings), settings.event_loop)


async def _stop_server(settings: Settings) -> int:
    assert settings.hub_token is not None  # a profile has a token, or its settings are refused
    try:
        async with hub_client(settings, FixedToken(settings.hub_token)) as client:
            me = await client.whoami()
            client = client.for_user(settings.hub.user or me.name)
            server = f"{client.settings.hub.user}'s {client.settings.hub.server_label} on {settings.hub}"
            model = (await client.servers(me) or {}).get(settings.hub.server)
            if model is not None and model.phase is ServerPhase.STOPPED:
                print(f"{server} is not running: there is nothing to stop.")
                return EXIT_OK
            if await client.stop_server():
                print(f"Stopping {server}; waiting up to {STOP_WAIT_SECONDS:.0f} s for the hub...", flush=True)
                if not await _stopped(client, STOP_WAIT_SECONDS):
                    print(f"The hub is still stopping {server} after {STOP_WAIT_SECONDS:.0f} s: it goes on, and "
                          "jupyter-dev-proxy servers shows when it is done.")
                    return EXIT_UNFINISHED
    except HubError as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Stopped {server} (profile {settings.profile}).")
    return EXIT_OK


async def _stopped(client: HubClient, within: float) -> bool:
    """Whether the hub's model of the client's server says stopped within ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        servers = await client.servers()
        if servers is None:
            raise HubError("The hub is stopping the server, but the token may not read whether it has stopped (it "
                           "needs the read:servers scope): jupyter-dev-proxy servers with another token shows it.")
        model = servers.get(client.settings.hub.server)
        if model is None or model.phase is ServerPhase.STOPPED:
            return True
        await asyncio.sleep(_STOP_POLL_SECONDS)
    return False


def _run(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Run on uvloop when it is installed and wanted: it halves the proxy's CPU per request and, on TLS,
    its memory per connection (asyncio reserves a 256 KiB buffer for each)."""
    if event_loop == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    demo: DemoServer | None = None
    try:
        if argv[:1] == ["forget-token"]:
            return _forget_token(argv[1:])
        if argv[:1] == ["login"]:
            return _login(argv[1:])
        if argv[:1] == ["doctor"]:
            return _doctor(argv[1:])
        if argv[:1] == ["servers"]:
            return _servers(argv[1:])
        if argv[:1] == ["stop"]:
            return _stop(argv[1:])
        every = every_profile(argv, os.environ, Path.cwd())
        if every is not None:
            return _serve_every_profile(every, argv)
        if demo_wanted(argv, os.environ, Path.cwd()):
            print("jupyter-dev-proxy: demo mode, starting a throwaway local Jupyter server... (to use your hub "
                  "instead, set JUPYTER_SERVER_IP_OR_NAME or JUPYTERHUB_URL, see --help)", file=sys.stderr, flush=True)
            demo = start_demo_server(getpass.getuser())
        store = TokenStore()
        interactive = demo is None and _interactive()
        settings = selected_settings(argv, os.environ, Path.cwd(), demo.upstream() if demo else None,
                                     stored=store.lookup, token_can_be_asked=interactive)
        if settings.hub_token is None and settings.oauth is None and interactive:
            from .firstrun import ask_for_token  # a first run only: it brings the browser and the prompt
            settings = ask_for_token(settings, store, sys.stderr) or settings
            if settings.hub_token is None and not settings.hub.user:
                raise ConfigError("No token was given: run the proxy again in a terminal to paste one, or set "
                                  "JUPYTERHUB_API_TOKEN (or JUPYTERHUB_API_TOKEN_FILE).")
        keep_secrets_out_of_logs(settings.secrets)
        configure_logging(settings.log_level)
        return _run(_main(settings, demo, store), settings.event_loop)
    except (ConfigError, DemoUnavailable) as exc:
        print(f"jupyter-dev-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed (e.g. while the demo starts)
        return EXIT_INTERRUPTED
    finally:
        if demo is not None:
            demo.stop()
