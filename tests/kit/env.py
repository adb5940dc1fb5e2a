"""The environment a ``proxy.py`` subprocess starts with: the test's own, minus every setting a user could have
made, plus exactly the settings the test names, as a user would write them."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_dev_proxy.demo import DemoServer

# The forward-proxy variables the proxy reads as curl does: a test names its own, or none.
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})

# The proxy on a free port of the loopback: tests run side by side and never collide on a port.
_LISTEN_ANYWHERE_LOCAL = {"JUPYTER_PROXY_PORT": "0", "JUPYTER_PROXY_IP_OR_NAME": "127.0.0.1"}


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without any setting of the proxy, the hub or a forward proxy, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER") and k.lower() not in _PROXY_VARIABLES}
    env.update(values)
    return env


def upstream_env(url: str, ca_file: Path, token: str | None = None, **more: str) -> dict[str, str]:
    """A user's settings for the hub (or plain server) at ``url``: its URL, its CA file, a hub token unless None;
    the proxy on a free local port; ``more`` added last, so it may replace any of these."""
    token_setting = {} if token is None else {"JUPYTERHUB_API_TOKEN": token}
    return clean_env(**{"JUPYTERHUB_URL": url, "JUPYTER_CLUSTER_CA_CERT": str(ca_file), **token_setting,
                        **_LISTEN_ANYWHERE_LOCAL, **more})


def server_env(server: DemoServer, **more: str) -> dict[str, str]:
    """A user's settings for a single-user server named by address, port and username (no hub URL), as the first
    releases were configured; the proxy on a free local port."""
    return clean_env(**{"JUPYTER_SERVER_IP_OR_NAME": "127.0.0.1", "JUPYTER_SERVER_PORT": server.url.rsplit(":", 1)[1],
                        "JUPYTER_USERNAME": server.username, "JUPYTER_CLUSTER_CA_CERT": str(server.ca_file),
                        "JUPYTERHUB_API_TOKEN": server.token, **_LISTEN_ANYWHERE_LOCAL, **more})
