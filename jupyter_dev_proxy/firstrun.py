"""A first run on a terminal with a hub but no token: open the hub's token page, ask for the token without showing
it, check it with the hub, and keep it (the keyring, else a file only the user may read) for later starts."""

from __future__ import annotations

import asyncio
import getpass
import webbrowser
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from .config import Settings
from .hubapi import FixedToken, HubError, TokenRefused, UnexpectedAnswer, grants, hub_client, start_scope_name
from .tokens import TokenStore

# Wrong pastes happen; after this many the proxy stops asking and says what to do instead.
_ATTEMPTS = 3


def scopes_to_tick(settings: Settings, user: str) -> list[tuple[str, str]]:
    """The token page's scopes the proxy needs, with what each is for."""
    server = f"{user}/{settings.hub.server}"
    return [(f"access:servers!server={server}", "to use your server (required)"),
            (f"read:servers!user={user}", "to see whether it runs and follow its start"),
            (f"servers!user={user} (JupyterHub 5) or start:servers!user={user} (JupyterHub 6)",
             "to start it when it is stopped")]


async def _check(settings: Settings, token: str) -> tuple[str | None, list[str]]:
    """Whose ``token`` is and what it cannot do, as lines to show; (None, [why]) when the hub refuses it."""
    async with hub_client(settings, FixedToken(token)) as hub:
        try:
            version = await hub.version() or ""
        except UnexpectedAnswer:
            version = ""  # the scope advice then names JupyterHub 6's start scope
        try:
            me = await hub.whoami()
        except TokenRefused as refused:
            return None, [f"The hub does not accept this token ({refused.status}): copy it again from the token "
                          "page."]
    owner = me.name
    if settings.hub.user and owner != settings.hub.user:
        return None, [f"This token belongs to '{owner}', but JUPYTER_USERNAME is '{settings.hub.user}': make the "
                      "token as that user, or change JUPYTER_USERNAME."]
    scopes = me.scopes
    server = settings.hub.server
    lines = [f"✓ The token is {owner}'s."]
    if grants(scopes, "access:servers", owner, server) is False:
        return None, [f"✗ The token may not use your server: tick access:servers!server={owner}/{server} on the "
                      "token page and make a new one."]
    for scope, why in (("read:servers", "the proxy cannot see whether your server runs"),
                       (start_scope_name(version) if version else "start:servers",
                        "the proxy cannot start your server when it is stopped")):
        if grants(scopes, scope, owner, server) is False:
            lines.append(f"✗ It lacks {scope}!user={owner}: {why} (it still works while the server runs).")
    return owner, lines


def ask_for_token(settings: Settings, store: TokenStore, out: TextIO,
                  read_secret: Callable[[str], str] = getpass.getpass,
                  open_browser: Callable[[str], object] = webbrowser.open) -> Settings | None:
    """The settings with a token the user pasted, checked and kept; None when they chose not to give one."""
    hub = settings.hub
    page = hub.page("token")
    user = hub.user or "<you>"
    out.write(f"The proxy needs an API token of your hub to reach your server, and none is set or kept yet.\n"
              f"Opening {page} in your browser (open it yourself if nothing happens). Request a new token there;\n"
              "tick these scopes if the page lists them, or leave them all for a token that can do what you can:\n")
    for scope, why in scopes_to_tick(settings, user):
        out.write(f"  {scope}  — {why}\n")
    skip = (" (Enter alone: no token, the IDE's token is sent instead)" if hub.user else
            " (Enter alone: stop)")
    out.flush()
    open_browser(page)
    for _ in range(_ATTEMPTS):
        token = read_secret(f"Paste the token here, it is not shown{skip}: ").strip()
        if not token:
            return None
        try:
            owner, lines = asyncio.run(_check(settings, token))
        except HubError as exc:
            out.write(f"{exc}\n")
            return None
        out.write("".join(f"{line}\n" for line in lines))
        if owner is not None:
            source = store.save(hub, owner, token)
            out.write(f"Kept in {source} for the next starts; `jupyter-dev-proxy forget-token` removes it.\n")
            out.flush()
            return replace(settings, hub=hub.for_user(owner), hub_token=token, token_source=source)
        out.flush()
    return None
