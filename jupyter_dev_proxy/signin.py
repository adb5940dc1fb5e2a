"""Signing in with the hub's own login in a browser, where the hub's admin registered the proxy as a service: the
user signs in as on the hub's pages (single sign-on included) and the hub gives the proxy a token (OAuth 2
authorization code, PKCE S256 and ``state``; JupyterHub issues no refresh tokens, so a new sign-in replaces an
expiring token).

    SignInDesk(settings, store)          one per run: the sign-in under way and its callback
        .ask(why) → str                  a sentence naming the sign-in URL; the first ask of a sign-in logs it and
                                         opens it in a browser where there is one
        .answer(request) → Response      the callback, the one route the hub's redirect reaches; never forwarded
        .on_signed_in(SignedIn)          told of each completed sign-in (the token is kept already)
    WaitingForSignIn(settings, desk)     a start with no usable token: the proxy's address, serving only the
        .signed_in(stop, why)            callback (the IDE: 401 naming the URL, then 503 while starting), listening
        .release()                       from the first sign-in until the serving proxy takes the address over
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import os
import secrets
import shutil
import sys
import tempfile
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import ide_server
from .auth import check_host, check_proxy_token
from .config import ConfigError, OAuthClient, Settings, TokenSource
from .errors import ProxyError, json_error
from .hubapi import FixedToken, HubError, hub_client
from .routing import loggable
from .tokens import TokenStore

log = logging.getLogger("jupyter_dev_proxy")

# When no sign-in has come back after this long, the log says once what may be wrong; the sign-in stays open (a
# person may be at lunch, and the URL keeps working).
SIGN_IN_REMINDER_SECONDS = 300.0


@dataclass(frozen=True)
class PendingSignIn:
    """One sign-in under way: the ``state`` that ties the hub's redirect to it, and the PKCE verifier that only the
    proxy knows (a code caught on its way back is useless without it)."""

    state: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(64), repr=False)

    @property
    def challenge(self) -> str:
        """The S256 code challenge: base64url(sha256(verifier)) without padding (RFC 7636 §4.2)."""
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def url(self, settings: Settings, client: OAuthClient) -> str:
        """The hub's authorize URL for this sign-in, which the user opens in a browser."""
        query = {"client_id": client.client_id, "redirect_uri": str(client.callback_url), "response_type": "code",
                 "state": self.state, "code_challenge": self.challenge, "code_challenge_method": "S256"}
        return str(settings.hub.url(settings.hub.api("oauth2/authorize")).with_query(query))


@dataclass(frozen=True)
class SignedIn:
    """A completed sign-in: the token the hub gave (kept already) and whose it is."""

    token: str = field(repr=False)
    user: str
    expires_at: datetime | None
    source: TokenSource  # where it is kept


def _equal(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _has_browser() -> bool:
    """Whether opening a URL can show it to someone: BROWSER names one, or a desktop is there (on Linux and the
    BSDs, a display; without one, Python's webbrowser would start a text browser with no terminal to show it)."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _quoted(text: str) -> str:
    """Words from the hub's redirect, as a message may quote them: printable, and short."""
    return ascii(text[:120])


class SignInDesk:
    """The proxy's side of signing in: at most one sign-in under way, its callback, and the token it ends with."""

    def __init__(self, settings: Settings, store: TokenStore,
                 open_browser: Callable[[str], object] = webbrowser.open) -> None:
        assert settings.oauth is not None
        self._settings = settings
        self._client = settings.oauth
        self._store = store
        self._open_browser = open_browser
        self._pending: PendingSignIn | None = None
        self._completing = False  # a code is being exchanged: an ask meanwhile starts no second sign-in
        self._redirect_dir: Path | None = None  # where the browser's redirect page is written (the user's only)
        self._reminder: asyncio.TimerHandle | None = None
        self._opening: set[asyncio.Future[object]] = set()
        self.user = settings.hub.user  # once known, every sign-in must be this user's: the proxy serves their server
        self.on_signed_in: Callable[[SignedIn], object] | None = None

    @property
    def callback_path(self) -> str:
        return self._client.callback_url.path

    @property
    def pending_url(self) -> str | None:
        """The URL of the sign-in under way, for the status page; None when none is."""
        return self._pending.url(self._settings, self._client) if self._pending is not None else None

    def ask(self, why: str) -> str:
        """The sentence that sends the user to sign in (a new sign-in unless one is under way). The first ask of a
        sign-in logs ``why`` with the URL and opens the URL in a browser where there is one."""
        if self._completing:
            return "A sign-in is completing; try again in a moment"
        if self._pending is None:
            self._pending = PendingSignIn()
            url = self._pending.url(self._settings, self._client)
            log.warning("%s: sign in to the hub in your browser%s:\n    %s", why,
                        " (it is opening)" if _has_browser() else "", url)
            self._open(url)
            self._remind_later()
        return f"Sign in to the hub in your browser: {self.pending_url}"

    def _open(self, url: str) -> None:
        """Open ``url`` in a browser, through a page only the user may read: a browser's command line is visible to
        every user of the computer, and with this URL another user signed in to the hub as themselves could finish
        the sign-in first and have the proxy use *their* server (as Jupyter does for its token). In a thread: a
        browser command may take its time, and the callback must be served meanwhile."""
        if not _has_browser():
            return
        try:
            page = self._redirect_page(url)
        except OSError as exc:
            log.info("Could not write the page that opens the sign-in (%s): open the sign-in URL yourself.", exc)
            return
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_browser, page))
        self._opening.add(opening)
        opening.add_done_callback(self._opened)

    def _opened(self, opening: asyncio.Future[object]) -> None:
        self._opening.discard(opening)
        if not opening.cancelled() and opening.exception() is not None:
            log.info("Could not open a browser (%s): open the sign-in URL yourself.", opening.exception())

    def _redirect_page(self, url: str) -> str:
        """A file URL of a page that sends the browser on to ``url``, in a directory only the user may enter."""
        if self._redirect_dir is None:
            self._redirect_dir = Path(tempfile.mkdtemp(prefix="jupyter-dev-proxy-sign-in-"))
        page = self._redirect_dir / "sign-in.html"
        descriptor = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(_REDIRECT_PAGE.format(url=html.escape(url, quote=True)))
        return page.as_uri()

    def _remind_later(self) -> None:
        if self._reminder is not None:
            self._reminder.cancel()
        self._reminder = asyncio.get_running_loop().call_later(SIGN_IN_REMINDER_SECONDS, self._remind)

    def _remind(self) -> None:
        if self._pending is None:
            return
        log.warning("No sign-in has come back in %.0f minutes. If the hub showed an error page instead of sending "
                    "you back, `jupyter-dev-proxy doctor` explains each cause; the sign-in URL keeps working:\n    %s",
                    SIGN_IN_REMINDER_SECONDS / 60, self.pending_url)

    def close(self) -> None:
        """No sign-in is awaited any more: no reminder, and the redirect page gone."""
        if self._reminder is not None:
            self._reminder.cancel()
        if self._redirect_dir is not None:
            shutil.rmtree(self._redirect_dir, ignore_errors=True)
            self._redirect_dir = None

    async def answer(self, request: web.BaseRequest) -> web.Response:
        """The hub's redirect back: accepted only for the sign-in under way (its ``state``), once; the code is
        exchanged for a token, which is kept and handed on. ProxyError for anything else."""
        if request.method != "GET":
            raise ProxyError(405, "method-not-allowed", "The sign-in callback takes the browser's GET from the hub "
                                                        "only.")
        pending = self._pending
        if pending is None:
            raise ProxyError(400, "no-sign-in-pending",
                             "No sign-in is under way, so this page from the hub was not used: if you already signed "
                             "in, the proxy has its token and this tab can be closed; otherwise open the sign-in URL "
                             "the proxy printed last.")
        query = request.query
        if not _equal(query.get("state", ""), pending.state):
            raise ProxyError(400, "sign-in-state-wrong",
                             "This page does not belong to the sign-in the proxy started (an old tab, or a link from "
                             "somewhere else), so it was not used: open the sign-in URL the proxy printed last.")
        if "error" in query:
            said = query.get("error_description") or query["error"]
            raise ProxyError(403, "sign-in-refused", f"The hub did not sign you in ({_quoted(said)}): "
                                                     "`jupyter-dev-proxy doctor` explains why, then sign in again.")
        code = query.get("code", "")
        if not code:
            raise ProxyError(400, "sign-in-code-missing", "The hub sent the browser back without a sign-in code: "
                                                          "open the sign-in URL the proxy printed last.")
        self._pending, self._completing = None, True  # one use: a replay, or a second tab, finds none under way
        try:
            signed = await self._complete(pending, code)
        except BaseException:
            self._pending = self._pending or pending  # the URL stays good for another try
            raise
        finally:
            self._completing = False
        self.close()
        if self.on_signed_in is not None:
            self.on_signed_in(signed)
        until = f" until {signed.expires_at.astimezone():%Y-%m-%d %H:%M}" if signed.expires_at else ""
        log.info("Signed in to the hub as %s: the proxy's token is kept in %s%s.", signed.user, signed.source, until)
        return web.Response(text=_SIGNED_IN_PAGE.format(user=html.escape(signed.user),
                                                        hub=html.escape(str(self._settings.hub)),
                                                        until=html.escape(until)),
                            content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _complete(self, pending: PendingSignIn, code: str) -> SignedIn:
        """Exchange the code (with the verifier), ask the hub whose the token is, keep it."""
        settings = self._settings
        try:
            async with hub_client(settings, None) as hub:
                made = await hub.token_for_code(self._client, code, pending.verifier)
            async with hub_client(settings, FixedToken(made.token)) as hub:
                me = await hub.whoami()
        except HubError as exc:
            raise ProxyError(502, "sign-in-failed", f"Signing in did not end with a token: {exc}") from None
        if not me.is_user:
            raise ProxyError(403, "sign-in-not-a-user", f"The hub signed in the {me.kind} '{me.name}', not a user: "
                                                        "sign in as yourself.")
        if self.user and me.name != self.user:
            raise ProxyError(403, "sign-in-other-user", f"You signed in as '{me.name}', but this proxy serves "
                                                        f"'{self.user}''s server: sign in as '{self.user}' (sign out "
                                                        "of the hub first), or change JUPYTER_USERNAME.")
        try:
            source = await asyncio.to_thread(self._store.save, settings.hub, me.name, made.token)
        except (OSError, ConfigError) as exc:
            raise ProxyError(500, "token-not-kept", f"Signed in, but the token could not be kept ({exc}): the "
                                                    "proxy needs it kept; fix that and sign in again.") from None
        self.user = me.name
        return SignedIn(made.token, me.name, made.expires_at, source)

    def required(self) -> ProxyError:
        """The IDE's answer while there is no token yet: 401 naming the sign-in URL."""
        return ProxyError(401, "sign-in-required", f"The proxy has no hub token yet. {self.ask('No hub token yet')}, "
                                                   "then try again.", logged=True)


# What the browser is given to open: this page, which goes on to the hub's sign-in (its URL stays in the file).
_REDIRECT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={url}">
<title>Signing in · jupyter-dev-proxy</title></head>
<body><p><a href="{url}">Sign in to the hub</a> (your browser should go there by itself).</p></body></html>
"""

_SIGNED_IN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in · jupyter-dev-proxy</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}</style></head>
<body><h1>✓ Signed in</h1>
<p>jupyter-dev-proxy has a token for <b>{user}</b> on {hub}{until}, kept for its next starts.</p>
<p>You can close this tab and go back to your IDE.</p></body></html>
"""


class WaitingForSignIn:
    """The proxy's address while it has no usable token, from the first sign-in until the proxy serves: the
    callback, and the IDE told to sign in (401 naming the URL) or, once signed in, that the proxy is starting (503).
    Held until the serving proxy takes the address over, so that no other program can take the port meanwhile (the
    hub's check after a sign-in may start the server for minutes)."""

    def __init__(self, settings: Settings, desk: SignInDesk) -> None:
        self._settings = settings
        self._desk = desk
        self._signed: SignedIn | None = None
        self._runner: web.ServerRunner | None = None  # listening since the first sign-in, until released

    async def _listen(self) -> None:
        """ConfigError when the address is taken."""
        if self._runner is not None:
            return
        settings = self._settings
        # The proxy's own server (its access log drops the query: here the hub's code and state). A stop does not
        # wait for a code's exchange with a slow hub: the sign-in is given up anyway.
        runner = web.ServerRunner(ide_server(self._handle), handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.listen_host, settings.listen_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"Cannot listen on {settings.listen_host}:{settings.listen_port} for the sign-in "
                              f"({exc.strerror}): another program (maybe another proxy) uses it, and the hub sends "
                              "your browser back to exactly this port; stop that program.") from None
        self._runner = runner

    async def release(self) -> None:
        """Let the address go (the serving proxy listens there next, or the proxy stops)."""
        self._desk.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WaitingForSignIn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    async def signed_in(self, stop: asyncio.Event, why: str) -> SignedIn | None:
        """Listen (ConfigError when the address is taken), ask for a sign-in (``why`` says why) and wait for it;
        None when stopped first. The address stays held until ``release``."""
        await self._listen()
        signed: asyncio.Future[SignedIn] = asyncio.get_running_loop().create_future()

        def done(result: SignedIn) -> None:
            if not signed.done():
                signed.set_result(result)
        desk = self._desk
        desk.on_signed_in, self._signed = done, None
        try:
            desk.ask(why)
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([signed, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
        finally:
            desk.on_signed_in = None
        self._signed = signed.result() if signed.done() else None
        return self._signed

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        settings, desk = self._settings, self._desk
        try:
            check_host(request, settings)
            if request.path == desk.callback_path:
                return await desk.answer(request)
            check_proxy_token(request, settings)
            if self._signed is not None:
                raise ProxyError(503, "proxy-starting", f"Signed in as {self._signed.user}: the proxy is asking the "
                                                       "hub for your server (it may be starting it); try again in a "
                                                       "moment.")
            raise desk.required()
        except ProxyError as error:
            if not error.logged:
                log.warning("%s → %d %s: %s", loggable(request.method, request.raw_path), error.status,
                            error.reason, error.message)
            return json_error(error)
