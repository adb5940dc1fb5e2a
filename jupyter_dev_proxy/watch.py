"""While serving: a server that stopped (culled overnight, stopped from the hub) is said once in the log,
answered as Jupyter's "not running" (424), and, opt-in, started again on the next request. The request funnel
asks it: ``not_running`` for the answer to a stopped server, ``answered`` after each other answer."""

from __future__ import annotations

import asyncio
import logging
import time
from .config import START_ALWAYS, Settings
from .errors import ServerNotRunning
from .hubapi import Credential, HubError, Progress, hub_client
from .startup import start_server
from .status import StatusBoard

log = logging.getLogger("jupyter_dev_proxy")

# After a failed restart while serving, the next attempt waits this long: the IDE polls every few seconds,
# and a server that cannot start must not be asked to start that often.
RESTART_BACKOFF_SECONDS = 30.0


class ServerWatch:
    """Notices that the user's server stopped (the hub's redirect, turned into ServerNotRunning by routing)."""

    def __init__(self, settings: Settings, hub_version: str, credential: Credential | None,
                 status: StatusBoard | None = None) -> None:
        self._settings = settings
        self._hub_version = hub_version
        self._credential = credential  # a restart carries its token of the moment, not the one at startup
        self._status = status
        self._restart = settings.start_server == START_ALWAYS and credential is not None
        self._stopped = False
        self._starting: asyncio.Task[None] | None = None
        self._last_failure = -RESTART_BACKOFF_SECONDS

    def answered(self, status: int) -> None:
        """A request was answered with ``status``: after a stop, an answer from the server says it is back."""
        if self._stopped and status not in (424, 502, 503, 504):
            self._stopped = False
            log.info("Your %s answers again.", self._settings.hub.server_label)

    def not_running(self, error: ServerNotRunning) -> ServerNotRunning:
        """The IDE's answer for a stopped server, already in the log (said once, not at every poll); the restart
        is started here when the proxy should start the server."""
        hub = self._settings.hub
        first = not self._stopped
        self._stopped = True
        if not self._restart:
            if first:
                log.warning("Your %s on the hub has stopped (culled when idle, or stopped from the hub): the "
                            "IDE is told it is not running. Start it from %s and the IDE can reconnect; "
                            "JUPYTER_PROXY_START_SERVER=always makes the proxy start it on the next request.",
                            hub.server_label, hub.page("home"))
            return ServerNotRunning(error.message, logged=True)
        if self._starting is None and time.monotonic() - self._last_failure >= RESTART_BACKOFF_SECONDS:
            if first:
                log.warning("Your %s on the hub has stopped (culled when idle, or stopped from the hub): "
                            "starting it again.", hub.server_label)
            self._starting = asyncio.ensure_future(self._start_again())
        if self._starting is not None:
            return ServerNotRunning(f"Your server on the hub ({hub.server_prefix}) stopped; the proxy is starting "
                                    "it again: retry in a few seconds.", logged=True)
        return ServerNotRunning(f"Your server on the hub ({hub.server_prefix}) stopped and the proxy could not "
                                f"start it again (its log says why); start it from {hub.page('home')}.", logged=True)

    async def _start_again(self) -> None:
        label = self._settings.hub.server_label

        def show(event: Progress) -> None:
            percent = f"{event.percent}% " if event.percent is not None else ""
            log.info("Starting your %s: %s%s", label, percent, event.message)
            if self._status is not None:
                self._status.progress = f"{percent}{event.message}"
        try:
            async with hub_client(self._settings, self._credential) as hub:
                await start_server(hub, self._hub_version, show)
        except HubError as exc:
            self._last_failure = time.monotonic()
            log.error("Could not start your %s again: %s", label, exc)
        except Exception:  # a background task: its failure must reach the log, not vanish
            self._last_failure = time.monotonic()
            log.exception("Could not start your %s again: unexpected error", label)
        finally:
            self._starting = None

    async def close(self) -> None:
        """Stop a restart in progress (the proxy is shutting down)."""
        if self._starting is not None:
            self._starting.cancel()
            try:
                await self._starting
            except asyncio.CancelledError:
                pass
