"""Settings as the tests build them, and the proxy they start in the test's own event loop."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from jupyter_dev_proxy.address import HubAddress
from jupyter_dev_proxy.config import Settings, load_settings
from tests.kit.ide import ide_session

# The two tokens every in-process proxy is given; the autouse fixture in conftest checks no log line holds either.
LOCAL_TOKEN = "local-token-for-tests"
HUB_TOKEN = "hub-token-for-tests"


@dataclasses.dataclass(frozen=True)
class Proxy:
    """A proxy listening at ``url`` with ``settings`` (the ``start_proxy`` fixture makes these)."""

    url: URL
    settings: Settings

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A client that authenticates to the proxy as an IDE does (Authorization: token ...)."""
        return ide_session(self.url, self.settings.local_token, **kwargs)


def make_settings(hub_url: str, ca_file: Path | None = None, tls_name: str | None = None, *, user: str = "alice",
                  server: str = "", **overrides: Any) -> Settings:
    """The one way tests build Settings: a hub URL (its path is the hub's base, as users write it), the CA and
    certificate name to check, the user and server; anything else of Settings as a keyword."""
    values: dict[str, Any] = {
        "listen_host": "127.0.0.1", "listen_port": 0, "tls_name": tls_name, "ca_file": ca_file,
        "hub": replace(HubAddress.parse(URL(hub_url)), user=user, server=server),
        "hub_token": HUB_TOKEN, "local_token": LOCAL_TOKEN, "log_level": "info",
    }
    values.update(overrides)
    return Settings(**values)


# The least a user must set: where the hub is and who they are.
MINIMAL_ENV = {"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5", "JUPYTER_USERNAME": "alice"}


def load(cwd: Path, *argv: str, **environ: str) -> Settings:
    """Settings as the command line builds them, from ``argv`` and the minimal environment plus ``environ``."""
    return load_settings(list(argv), {**MINIMAL_ENV, **environ}, cwd)
