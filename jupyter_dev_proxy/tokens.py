"""The hub token: where it is kept, how a running proxy notices a new one, and how the hub's refusal of it is told.

    TokenStore                   the operating system's keyring (macOS Keychain, Windows Credential Locker, Secret
                                 Service) when one is usable, else a file only the user may read, under the user's
                                 configuration directory; keyed by hub and user
    HubCredential                the token in use while serving: reread when its file changes or on SIGHUP, and
                                 checked with the hub when the hub's answers say it may have expired
    ExpiryWarnings               the log's warnings a day and an hour before the token expires
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, cast

from .address import HubAddress
from .config import ConfigError, Settings, TokenKind, TokenSource, read_token_file, user_config_dir
from .errors import ProxyError
from .hubapi import HubClient, HubError, TokenRefused, UnexpectedAnswer
from .logs import keep_secrets_out_of_logs

log = logging.getLogger("jupyter_dev_proxy")

# The keyring service under which tokens are kept; the account is "<user> on <hub>".
KEYRING_SERVICE = "jupyter-dev-proxy"

# How often a token file is looked at for a new token while serving.
FILE_CHECK_SECONDS = 2.0

# After asking the hub whether it still accepts the token, the answer holds this long (the IDE polls).
_REJECTION_CHECK_SECONDS = 10.0


def _account(hub: HubAddress, user: str) -> str:
    return f"{user} on {hub}"


class TokenStore:
    """Tokens kept for later starts: in the keyring when one is usable, else in a file only the user may read."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file or user_config_dir() / "jupyter-dev-proxy" / "tokens.json"
        self._looked_for_keyring = False  # importing keyring is slow: only when a token is looked for or kept
        self._backend: _Keyring | None = None

    @property
    def _keyring(self) -> _Keyring | None:
        if not self._looked_for_keyring:
            self._backend, self._looked_for_keyring = _usable_keyring(), True
        return self._backend

    @_keyring.setter
    def _keyring(self, backend: _Keyring | None) -> None:
        self._backend, self._looked_for_keyring = backend, True

    @property
    def source(self) -> TokenSource:
        return (TokenSource(TokenKind.KEYRING) if self._keyring is not None
                else TokenSource(TokenKind.STORED_FILE, self.file))

    def find(self, hub: HubAddress, user: str) -> tuple[str, str] | None:
        """The (user, token) kept for this hub: for ``user``, or for whoever it was kept for when ``user`` is ''."""
        if self._keyring is not None:
            if user:
                token = self._keyring.get_password(KEYRING_SERVICE, _account(hub, user))
                return (user, token) if token else None
            kept = self._keyring.get_password(KEYRING_SERVICE, f"user on {hub}")
            token = self._keyring.get_password(KEYRING_SERVICE, _account(hub, kept)) if kept else None
            return (kept, token) if kept and token else None
        users = self._read_file().get(str(hub), {})
        if user:
            return (user, users[user]) if user in users else None
        return next(iter(users.items()), None)

    def lookup(self, hub: HubAddress, user: str) -> tuple[str, str, TokenSource] | None:
        """What ``config.load_settings`` asks when no setting names a token: (user, token, where it was kept)."""
        found = self.find(hub, user)
        return (*found, self.source) if found is not None else None

    def save(self, hub: HubAddress, user: str, token: str) -> TokenSource:
        """Keep ``token`` for ``user`` on ``hub``; where it went."""
        if self._keyring is not None:
            self._keyring.set_password(KEYRING_SERVICE, _account(hub, user), token)
            self._keyring.set_password(KEYRING_SERVICE, f"user on {hub}", user)
            return self.source
        tokens = self._read_file()
        tokens.setdefault(str(hub), {})[user] = token
        self._write_file(tokens)
        return self.source

    def forget(self, hub: HubAddress, user: str) -> bool:
        """Remove the token kept for ``user`` (or for whoever) on ``hub``; whether there was one."""
        found = self.find(hub, user)
        if found is None:
            return False
        if self._keyring is not None:
            self._keyring.delete_password(KEYRING_SERVICE, _account(hub, found[0]))
            return True
        tokens = self._read_file()
        tokens.get(str(hub), {}).pop(found[0], None)
        if not tokens.get(str(hub)):
            tokens.pop(str(hub), None)
        self._write_file(tokens)
        return True

    def _read_file(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_file(self, tokens: dict[str, dict[str, str]]) -> None:
        """Write the file readable by the user only (0600 where the system has such modes), replacing it whole.

        It is written as a new file of a unique name (created exclusively, so nothing already there, a link
        included, is written through, and two saves never share it), in a directory only the user may enter;
        a token file that is a symbolic link is refused, as it would put the tokens wherever it points.
        """
        if self.file.is_symlink():
            raise ConfigError(f"The proxy's token file {self.file} is a symbolic link, which the proxy does not "
                              "write through: remove it (or put a regular file there), then run the proxy again.")
        self.file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(prefix=".tokens-", suffix=".tmp", dir=self.file.parent)
        try:
            if hasattr(os, "fchmod"):  # POSIX; on Windows the file inherits the user's profile folder's rights
                os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                json.dump(tokens, out, indent=1)
            os.replace(partial, self.file)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise


class _Keyring(Protocol):
    """What the proxy uses of a ``keyring`` backend."""

    def get_password(self, service: str, username: str) -> str | None: ...
    def set_password(self, service: str, username: str, password: str) -> None: ...
    def delete_password(self, service: str, username: str) -> None: ...


def _usable_keyring() -> _Keyring | None:
    """The system keyring, when the optional ``keyring`` package is installed and finds a real backend."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    chained = getattr(backend, "backends", None)
    if isinstance(backend, fail.Keyring) or chained == []:
        return None
    return cast(_Keyring, backend)


class HubCredential:
    """The hub token in use while serving, and what the hub thinks of it.

    A token from a file or the keyring is reread when the file changes (looked at every 2 s) or on SIGHUP, and
    from then on every request and websocket handshake carries the new one; the IDE's URL does not change. It is
    the one holder of the token while serving: every sender reads ``token`` as it sends.
    """

    def __init__(self, token: str, source: TokenSource, hub: HubAddress,
                 reread: Callable[[], str | None]) -> None:
        self.token = token
        self.source = source
        self._hub = hub
        self._reread = reread
        self._file_stamp = self._stamp()
        self._refused: tuple[str, float] | None = None  # (token, when the hub refused it)
        self._checked: tuple[str, float, bool] | None = None  # (token, when, refused?)
        self.on_change: Callable[[], object] | None = None  # told when a new token is in use
        # The expiry the hub said as it gave the token (a sign-in), for hubs whose token model does not (< 5).
        self.expires_at: datetime | None = None
        # Where the hub's login gives a new token (signing in): the sentence that starts a sign-in and names its URL.
        self.sign_in: Callable[[str], str] | None = None
        self._reloading: set[asyncio.Task[bool]] = set()  # reloads asked for by a signal, kept until done

    def _stamp(self) -> tuple[float, int] | None:
        if self.source.path is None:
            return None
        try:
            status = self.source.path.stat()
        except OSError:
            return None
        return status.st_mtime, status.st_size

    async def reload(self, why: str) -> bool:
        """Read the token again from where it came from; True when a new one is now in use. The reading runs in a
        thread: a locked keyring may wait for its user to unlock it, and the relays must not wait with it."""
        try:
            token = await asyncio.to_thread(self._reread)
        except (OSError, ValueError) as exc:
            log.warning("Could not read a new hub token from %s (%s); the current one stays in use.", self.source,
                        exc)
            return False
        if not token or token == self.token:
            return False
        self.use(token, f"from {self.source}", why)
        return True

    def use(self, token: str, origin: str, why: str, expires_at: datetime | None = None) -> None:
        """From now on every request and handshake carries ``token``; said once in the log (never the token).
        ``expires_at``: its expiry where the hub said it as it gave the token (a sign-in)."""
        keep_secrets_out_of_logs((token,))
        self.token = token
        self.expires_at = expires_at
        self._checked = None
        was_refused, self._refused = self._refused is not None, None
        log.info("A new hub token %s is in use (%s)%s.", origin, why, ": the IDE can carry on" if was_refused else "")
        if self.on_change is not None:
            self.on_change()

    def reload_soon(self, why: str) -> None:
        """Start a reload from where no one can wait for it (a signal handler)."""
        task = asyncio.get_running_loop().create_task(self.reload(why))
        self._reloading.add(task)
        task.add_done_callback(self._reloading.discard)

    async def watch(self) -> None:
        """Look at the token's file every few seconds; pick up a new token when it changes."""
        while True:
            await asyncio.sleep(FILE_CHECK_SECONDS)
            stamp = self._stamp()
            if stamp is not None and stamp != self._file_stamp:
                self._file_stamp = stamp
                await self.reload("its file changed")

    def refused(self) -> ProxyError:
        """The IDE's answer once the hub has refused the token, and the log's sentence, said once per token."""
        if self._refused is None or self._refused[0] != self.token:
            self._refused = (self.token, time.monotonic())
            log.warning("The hub no longer accepts the proxy's token (it expired or was revoked). %s",
                        self._what_to_do())
        return ProxyError(401, "hub-token-rejected", "The hub no longer accepts the proxy's token: it expired or "
                                                     f"was revoked. {self._what_to_do()}", logged=True)

    def _what_to_do(self) -> str:
        if self.sign_in is not None:
            return f"{self.sign_in('The hub no longer accepts the proxy token')}: the proxy picks the new token up " \
                   "by itself."
        page = self._hub.page("token")
        if self.source.kind in (TokenKind.KEYRING, TokenKind.STORED_FILE):
            return (f"Make a new one at {page} and start jupyter-dev-proxy once in a terminal to store it (or "
                    "put it in JUPYTERHUB_API_TOKEN_FILE): this proxy then picks it up by itself.")
        if self.source.kind is TokenKind.FILE:
            return (f"Make a new one at {page} and write it to {self.source.path}: the proxy picks it up by itself "
                    "within seconds.")
        return (f"Make a new one at {page} and restart the proxy with it in {self.source.setting} (or keep it in a "
                "file named by JUPYTERHUB_API_TOKEN_FILE, which a running proxy rereads).")

    async def refused_by_hub(self, hub: HubClient) -> bool:
        """Whether the hub refuses the current token, asked when its answers suggest so (a login redirect, a
        401/403): a new token in the file or keyring is picked up first; the hub's verdict holds 10 s."""
        checked = self._checked
        if checked is not None and checked[0] == self.token and time.monotonic() - checked[1] < _REJECTION_CHECK_SECONDS:
            return checked[2]
        if self.source.rereadable and await self.reload("the hub refused the previous one"):
            return False
        token = self.token
        try:
            await hub.whoami()
            refused = False
        except TokenRefused:
            refused = True
        except UnexpectedAnswer:
            refused = False  # the hub answered, just not about the token
        except HubError:
            return False  # the hub cannot be asked: its own answer stands
        self._checked = (token, time.monotonic(), refused)
        return refused


def credential_for(settings: Settings, store: TokenStore | None = None) -> HubCredential | None:
    """The credential a running proxy uses, built once from the token read at startup: None when the IDE's own
    token is forwarded instead."""
    if settings.hub_token is None:
        return None
    source, hub = settings.token_source, settings.hub
    kept = store or TokenStore() if source.kind in (TokenKind.KEYRING, TokenKind.STORED_FILE) else None

    def reread() -> str | None:
        if source.kind is TokenKind.FILE and source.path is not None:
            return read_token_file(source.path)
        if kept is not None:  # one store: finding the keyring is asked of the system once
            found = kept.find(hub, hub.user)
            return found[1] if found else None
        return None  # a variable does not change under a running process
    return HubCredential(settings.hub_token, source, hub, reread)


# Where signing in gives a new token, the proxy asks for a sign-in this long before the token expires: enough to
# find the browser tab, short enough not to ask a day ahead every day of a short-lived token.
_SIGN_IN_AHEAD_SECONDS = 3600.0

# How long before the token expires the log warns, and in what words.
_EXPIRY_WARNINGS = ((24 * 3600.0, "a day"), (3600.0, "an hour"))


def describe_expiry(expires_at: datetime | None, now: datetime) -> str:
    """'expires in 6 days, on 2026-12-06' / 'expires in 3 hours, on ...' / 'expired on ...' / 'does not expire'."""
    if expires_at is None:
        return "does not expire"
    left = (expires_at - now).total_seconds()
    when = expires_at.astimezone().strftime("%Y-%m-%d %H:%M")
    if left <= 0:
        return f"expired on {when}"
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if left >= seconds:
            count = int(left // seconds)
            return f"expires in {count} {unit}{'s' if count > 1 else ''}, on {when}"
    return f"expires in less than a minute, on {when}"


class ExpiryWarnings:
    """Warns in the log a day and an hour before the token expires, and at once when that is already close; where
    signing in gives a new token (``sign_in``, as ``HubCredential.sign_in``), asks for one sign-in ahead instead."""

    def __init__(self, token_page: str, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 sign_in: Callable[[str], str] | None = None) -> None:
        self._page = token_page
        self._clock = clock
        self._sign_in = sign_in
        self._timers: list[asyncio.TimerHandle] = []

    def schedule(self, expires_at: datetime | None) -> None:
        """Warn ahead of ``expires_at`` (None: the token does not expire, or its expiry is not known)."""
        self.cancel()
        if expires_at is None:
            return
        loop = asyncio.get_running_loop()
        left = (expires_at - self._clock()).total_seconds()
        if self._sign_in is not None:
            # One sign-in ahead: an hour before, or halfway for a token that lasts less than two hours (a hub's
            # short oauth_token_expires_in), so that a fresh token never starts a sign-in at once.
            ask_in = left - min(_SIGN_IN_AHEAD_SECONDS, left / 2)
            if 0 < ask_in < 1e8:
                self._timers.append(loop.call_later(ask_in, self._ask_to_sign_in, expires_at))
            return
        if left <= _EXPIRY_WARNINGS[0][0]:
            self._warn(expires_at)
        for ahead, _ in _EXPIRY_WARNINGS:
            if left > ahead and (left - ahead) < 1e8:  # asyncio's timers take no further future
                self._timers.append(loop.call_later(left - ahead, self._warn, expires_at))

    def _ask_to_sign_in(self, expires_at: datetime) -> None:
        assert self._sign_in is not None
        self._sign_in(f"The hub token {describe_expiry(expires_at, self._clock())}")  # says it, with the URL

    def _warn(self, expires_at: datetime) -> None:
        log.warning("The hub token %s: make a new one at %s before then.", describe_expiry(expires_at, self._clock()),
                    self._page)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
