"""A first run on a terminal with a hub but no token: open the hub's token page and the proxy's paste page (what to
pick there, a paste box: pastepage.py), take the token from the page or the terminal (not shown), whichever first,
check it with the hub, and keep it (the keyring, else a file only the user may read) for later starts.

A pasted token that may make tokens (the token page's default) is not kept: the proxy makes its own, with only the
scopes it needs and an expiry, and revokes the pasted one. On a hub with a password login, ``login --password``
makes that token with the user's password, which is never kept.
"""

from __future__ import annotations

import asyncio
import enum
import getpass
import socket
import time
import webbrowser
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from .config import Settings, TokenSource
from .hubapi import (
    FixedToken,
    HubClient,
    HubError,
    Identity,
    NewToken,
    TokenRefused,
    UnexpectedAnswer,
    WantedToken,
    grants,
    hub_client,
    start_scope_name,
)
from .hidden_line import terminal_input
from .pastepage import OPEN_SECONDS, Advice, Outcome, PastePage, next_paste
from .tokens import TokenStore

# Wrong pastes happen; after this many the proxy stops asking and says what to do instead.
_ATTEMPTS = 3

# How long the proxy's own token lasts: a month of work between two sign-ins. The proxy warns a day and an hour
# ahead; a hub whose limit (token_expires_in_max_seconds) is shorter gives its longest.
OWN_TOKEN_SECONDS = 30 * 24 * 3600


# The scopes the proxy needs, one table for the token page's advice and the proxy's own token: (name, whether it
# is asked for the one server or for the user, what it is for). "start" is the hub's start scope (servers before
# JupyterHub 6); read:tokens lets the token read its own expiry, and is not worth a tick on the token page.
class _Over(enum.Enum):
    """What a scope is asked over: the user's one server, or all that is the user's."""

    SERVER = "server"
    USER = "user"


_NEEDED = (("access:servers", _Over.SERVER, "to use your server (required)"),
           ("read:servers", _Over.USER, "to see whether it runs and follow its start"),
           ("start", _Over.USER, "to start it when it is stopped"),
           ("read:tokens", _Over.USER, "to read its own expiry"))


def _scope(name: str, over: _Over, user: str, server: str) -> str:
    return f"{name}!server={user}/{server}" if over is _Over.SERVER else f"{name}!user={user}"


def scopes_to_tick(settings: Settings, user: str) -> list[tuple[str, str]]:
    """The token page's scopes the proxy needs, with what each is for."""
    server = settings.hub.server
    either_start = f"servers!user={user} (JupyterHub 5) or start:servers!user={user} (JupyterHub 6)"
    return [(either_start if name == "start" else _scope(name, over, user, server), why)
            for name, over, why in _NEEDED if name != "read:tokens"]


def token_note() -> str:
    """The note of the proxy's tokens, and the one the token page is advised: which computer's proxy holds it."""
    return f"jupyter-dev-proxy on {socket.gethostname()}"


def own_token_request(settings: Settings, owner: str, hub_version: str,
                      held: tuple[str, ...] | None = None) -> WantedToken:
    """The proxy's own token for ``owner``: every scope it needs, of those only what ``held`` (the scopes of the
    token that asks, when known) grants, as a token can give no more."""
    server = settings.hub.server
    start = start_scope_name(hub_version) if hub_version else "start:servers"
    names = [(start if name == "start" else name, over) for name, over, _ in _NEEDED]
    return WantedToken(note=token_note(),
                       scopes=tuple(_scope(name, over, owner, server) for name, over in names
                                    if grants(held, name, owner, server) is not False),
                       expires_in_seconds=OWN_TOKEN_SECONDS)


def _made(whose: str, wanted: WantedToken, made: NewToken) -> str:
    """The line that says which token was made, and what it may do until when (never its value)."""
    until = f", until {made.expires_at:%Y-%m-%d}" if made.expires_at else ""
    return f"✓ {whose}, '{wanted.note}', with only what it needs ({', '.join(wanted.scopes)}){until}."


async def _hub_version(hub: HubClient) -> str:
    try:
        return await hub.version() or ""
    except UnexpectedAnswer:
        return ""  # the scope advice then names JupyterHub 6's start scope


# Keeps a token for a user and says where: TokenStore.save for the hub at hand.
_Keep = Callable[[str, str], TokenSource]


async def _check(settings: Settings, token: str,
                 keep: _Keep) -> tuple[list[str], tuple[str, str, TokenSource] | None]:
    """Whose ``token`` is and what it cannot do, as lines to show, and (owner, token, where) once kept: one of the
    proxy's own when the pasted one may make it. ([why], None) when the hub refuses it."""
    async with hub_client(settings, FixedToken(token)) as hub:
        version = await _hub_version(hub)
        try:
            me = await hub.whoami()
        except TokenRefused as refused:
            return [f"The hub does not accept this token ({refused.status}): copy it again from the token "
                    "page."], None
        owner = me.name
        if settings.hub.user and owner != settings.hub.user:
            return [f"This token belongs to '{owner}', but JUPYTER_USERNAME is '{settings.hub.user}': make "
                    "the token as that user, or change JUPYTER_USERNAME."], None
        scopes = me.scopes
        server = settings.hub.server
        lines = [f"✓ The token is {owner}'s."]
        if grants(scopes, "access:servers", owner, server) is False:
            return [f"✗ The token may not use your server: tick access:servers!server={owner}/{server} on "
                    "the token page and make a new one."], None
        for scope, why in (("read:servers", "the proxy cannot see whether your server runs"),
                           (start_scope_name(version) if version else "start:servers",
                            "the proxy cannot start your server when it is stopped")):
            if grants(scopes, scope, owner, server) is False:
                lines.append(f"✗ It lacks {scope}!user={owner}: {why} (it still works while the server runs).")
        if grants(scopes, "tokens", owner, server) is not True:
            lines.append("This token may not make tokens, so the proxy keeps it as it is: it can do all you ticked, "
                         "for as long as you chose.")
            return lines, (owner, token, keep(owner, token))
        said, kept = await _own_token(hub, settings, me, version, token, keep)
        return lines + said, kept


async def _own_token(hub: HubClient, settings: Settings, me: Identity, version: str, pasted: str,
                     keep: _Keep) -> tuple[list[str], tuple[str, str, TokenSource]]:
    """Make the proxy's own token with the pasted one, keep it, and only then revoke the pasted one (a store that
    fails must not leave the user with no token at all): (lines, (owner, token, where))."""
    wanted = own_token_request(settings, me.name, version, me.scopes)
    try:
        made = await hub.new_token(me.name, wanted)
    except HubError as exc:
        return ([f"✗ The proxy could not make a token of its own ({exc}), so it keeps the one you pasted."],
                (me.name, pasted, keep(me.name, pasted)))
    try:
        source = keep(me.name, made.token)
    except Exception:
        await _revoked(hub, me.name, made.token_id)  # unkept, it is of no use: the pasted one stays valid
        raise
    lines = [_made("The proxy made a token of its own", wanted, made)]
    if me.token_id is not None and await _revoked(hub, me.name, me.token_id):
        lines.append("✓ The token you pasted is revoked: nothing needs it any more.")
    else:
        lines.append("The token you pasted still works: revoke it on the token page, the proxy does not need it.")
    return lines, (me.name, made.token, source)


async def _revoked(hub: HubClient, user: str, token_id: str) -> bool:
    """Whether the hub revoked the token; a hub that cannot be reached now has not (the user is told)."""
    try:
        return await hub.revoke_token(user, token_id)
    except HubError:
        return False


def _answer(read: Callable[[str], str], prompt: str) -> str:
    """What the user typed (a password as it is: spaces may be part of it); '' (no answer) when they end the
    input with Ctrl-D."""
    try:
        return read(prompt)
    except EOFError:
        return ""


def _expiry_advice() -> str:
    """Which expiry to pick on the token page: it matters only for a token the proxy keeps as it is."""
    return (f"the longest the page offers, or the longest your organisation's rules allow. With no scope ticked it "
            f"does not matter: the proxy swaps that token at once for its own, which lasts "
            f"{OWN_TOKEN_SECONDS // (24 * 3600)} days.")


def ask_for_token(settings: Settings, store: TokenStore, out: TextIO,
                  open_browser: Callable[[str], object] = webbrowser.open,
                  why: str = "and none is set or kept yet") -> Settings | None:
    """The settings with a token the user pasted, on the terminal (hidden) or on the proxy's paste page, whichever
    first, checked and kept; None when they chose not to give one or none came in time. With no terminal (login
    from a pipe), the page alone."""
    hub = settings.hub
    token_page = hub.page("token")
    user = hub.user or "<you>"
    scopes = scopes_to_tick(settings, user)
    out.write(f"The proxy needs an API token of your hub to reach your server, {why}.\n"
              f"Opening {token_page} in your browser (open it yourself if nothing happens). Request a new token "
              "there;\ntick these scopes if the page lists them, or leave them all for a token that can do what you "
              "can:\n")
    for scope, what_for in scopes:
        out.write(f"  {scope}  — {what_for}\n")
    terminal = terminal_input()
    skip = (" (Enter alone: no token, the IDE's token is sent instead)" if hub.user else
            " (Enter alone: stop)")
    deadline = time.monotonic() + OPEN_SECONDS
    advice = Advice(token_page=token_page, note=token_note(), expiry=_expiry_advice(), scopes=scopes)
    with PastePage(advice) as page:
        out.write(f"{'Or paste' if terminal is not None else 'Paste'} it on this page of the proxy's, which says "
                  f"what to pick: {page.url}\n")
        out.flush()
        open_browser(token_page)
        open_browser(page.url)
        for attempt in range(1, _ATTEMPTS + 1):
            token = next_paste(page, terminal, f"Paste the token here, it is not shown{skip}: ", out, deadline)
            if token is None:
                out.write(f"No token came within {OPEN_SECONDS // 60} minutes, so the proxy stopped asking: run "
                          "`jupyter-dev-proxy login` when you have one.\n")
                return None
            token = token.strip()
            if not token:
                return None
            try:
                lines, kept = asyncio.run(_check(settings, token, lambda owner, value: store.save(hub, owner, value)))
            except HubError as exc:
                out.write(f"{exc}\n")
                page.answer([str(exc)], Outcome.ENDED)
                return None
            if kept is not None:
                owner, token, source = kept
                lines.append(f"Kept in {source} for the next starts; `jupyter-dev-proxy forget-token` removes it.")
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()
            if kept is not None:
                page.answer(lines, Outcome.KEPT)
                return replace(settings, hub=hub.for_user(owner), hub_token=token, token_source=source)
            page.answer(lines, Outcome.TRY_AGAIN if attempt < _ATTEMPTS else Outcome.ENDED)
    return None


def login_with_password(settings: Settings, store: TokenStore, out: TextIO,
                        read_secret: Callable[[str], str] = getpass.getpass,
                        read_line: Callable[[str], str] = input) -> Settings | None:
    """``login --password``, for hubs with a password login (PAM, LDAP, Native, SharedPassword): the hub makes the
    proxy its own token with the user's password, sent once to the hub and never kept. None when not done."""
    hub = settings.hub
    user = hub.user or _answer(read_line, "Your user name on the hub: ").strip()
    password = _answer(read_secret, f"{user}'s password on {hub} (it is not shown, and not kept): ") if user else ""
    if not password:
        out.write("No user name or password given: nothing was changed.\n")
        return None
    try:
        token, line = asyncio.run(_token_with_password(settings, user, password))
    except TokenRefused:
        out.write(f"The hub did not accept that user name and password. If you sign in to the hub through another "
                  f"site (single sign-on), make a token at {hub.page('token')} instead: "
                  "`jupyter-dev-proxy login`.\n")
        return None
    except HubError as exc:
        out.write(f"{exc}\n")
        return None
    source = store.save(hub, user, token)
    out.write(f"{line}\nKept in {source} for the next starts; `jupyter-dev-proxy forget-token` removes it.\n")
    out.flush()
    return replace(settings, hub=hub.for_user(user), hub_token=token, token_source=source)


async def _token_with_password(settings: Settings, user: str, password: str) -> tuple[str, str]:
    async with hub_client(settings, None) as hub:
        wanted = own_token_request(settings, user, await _hub_version(hub))
        made = await hub.new_token(user, wanted, password=password)
    return made.token, _made(f"The hub made the proxy a token of {user}'s", wanted, made)
