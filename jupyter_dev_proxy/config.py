"""Settings: built once from flags > environment > .env file > defaults, then frozen.

Every option is one row of ``OPTIONS``; the argument parser, ``--help`` and the precedence rules are all
derived from that table, so an option is never spelled out twice. Secrets (the hub token, the local token)
have no flag on purpose: anything on a command line can be read by every user of the machine with ``ps``.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values
from yarl import URL

from . import __version__


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one sentence a user can act on."""


@dataclass(frozen=True)
class _Option:
    dest: str
    env: str | None
    flag: str | None
    default: str | None
    help: str
    metavar: str | None = None


# The original tool's variable names are kept so existing shell profiles keep working.
OPTIONS: tuple[_Option, ...] = (
    _Option("listen_host", "JUPYTER_PROXY_IP_OR_NAME", "--listen-host", "localhost",
            "Address the proxy listens on. Keep it local: anyone who can reach it and knows the token "
            "uses your hub account.", "HOST"),
    _Option("listen_port", "JUPYTER_PROXY_PORT", "--listen-port", "8000",
            "Port the proxy listens on (0 picks a free one).", "PORT"),
    _Option("hub_url", "JUPYTERHUB_URL", "--hub-url", None,
            "The hub's address as one URL, e.g. https://hub.example.org. Use this or the two options below.",
            "URL"),
    _Option("server_host", "JUPYTER_SERVER_IP_OR_NAME", "--server", None,
            "IP address or name of the hub to connect to.", "HOST"),
    _Option("server_port", "JUPYTER_SERVER_PORT", "--server-port", "8000",
            "HTTPS port of the hub.", "PORT"),
    _Option("tls_name", "JUPYTER_SERVER_NAME", "--tls-name", None,
            "Name on the hub's TLS certificate, checked and sent as SNI. Default: the hub's name when you "
            "give a name, 'jupyterhub' (what cluster certificates carry) when you give an IP address.",
            "NAME"),
    _Option("username", "JUPYTER_USERNAME", "--username", None,
            "Your JupyterHub username: the proxy serves /user/<username>/ and nothing else.", "NAME"),
    _Option("ca_file", "JUPYTER_CLUSTER_CA_CERT", "--ca-cert", None,
            "PEM file of the CA that signed the hub's certificate (trusted in addition to the public CAs).",
            "FILE"),
    _Option("hub_token_file", "JUPYTERHUB_API_TOKEN_FILE", "--hub-token-file", None,
            "File holding your hub API token (instead of JUPYTERHUB_API_TOKEN).", "FILE"),
    _Option("hub_token", "JUPYTERHUB_API_TOKEN", None, None,
            "Your hub API token (make one at <hub>/hub/token). Without it, the token the IDE presents is "
            "sent to the hub, as the original proxy.py did."),
    _Option("local_token", "JUPYTER_PROXY_TOKEN", None, None,
            "The token the IDE must present to this proxy. Default: a new random one at every start."),
    _Option("log_level", "JUPYTER_PROXY_LOG_LEVEL", "--log-level", "info",
            "How much to log: debug, info, warning or error.", "LEVEL"),
)

_LOG_LEVELS = ("debug", "info", "warning", "error")
_IP_TLS_NAME = "jupyterhub"


@dataclass(frozen=True)
class Settings:
    """Everything the proxy needs to know, decided once at startup."""

    listen_host: str
    listen_port: int
    hub_url: URL
    tls_name: str | None
    username: str
    ca_file: Path | None
    hub_token: str | None
    local_token: str
    log_level: str

    @property
    def server_prefix(self) -> str:
        """The user's server on the hub, escaped the way JupyterHub escapes it."""
        return f"/user/{quote(self.username, safe='@~')}/"

    @property
    def forwards_ide_token(self) -> bool:
        """No hub token configured: the IDE's own token is the hub credential (the original workflow)."""
        return self.hub_token is None


def _parser() -> argparse.ArgumentParser:
    env_only = "\n".join(f"  {o.env:<26} {o.help}" for o in OPTIONS if o.flag is None)
    parser = argparse.ArgumentParser(
        prog="jupyter-dev-proxy",
        description="Serve your JupyterHub server on localhost so that PyCharm, VS Code or any Jupyter client "
                    "can use it as a plain Jupyter server.",
        epilog=f"Secrets are read from the environment or a .env file, never from flags:\n{env_only}\n\n"
               "Settings come from flags first, then the environment, then the .env file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        if option.flag is None:
            continue
        default = f"default: {option.default}" if option.default else "no default"
        parser.add_argument(option.flag, dest=option.dest, metavar=option.metavar, default=None,
                            help=f"{option.help} [env {option.env}; {default}]")
    parser.add_argument("--env-file", metavar="FILE", default=None,
                        help="Read settings from this file instead of ./.env.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _read_env_file(path_flag: str | None, cwd: Path) -> dict[str, str]:
    if path_flag is None:
        path = cwd / ".env"
        if not path.is_file():
            return {}
    else:
        path = Path(path_flag)
        if not path.is_file():
            raise ConfigError(f"The settings file {path} does not exist: fix the path given to --env-file.")
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _merged(args: argparse.Namespace, environ: Mapping[str, str], dotenv: Mapping[str, str]) -> dict[str, str | None]:
    """flags > environment > .env > defaults; an empty value counts as unset."""
    merged: dict[str, str | None] = {}
    for option in OPTIONS:
        candidates = (
            getattr(args, option.dest, None),
            environ.get(option.env) if option.env else None,
            dotenv.get(option.env) if option.env else None,
            option.default,
        )
        merged[option.dest] = next((c.strip() for c in candidates if c is not None and c.strip()), None)
    return merged


def _port(value: str, env: str, allow_zero: bool = False) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(f"{env}={value!r} is not a port number: use a number from 1 to 65535.")
    return port


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _hub_url(values: Mapping[str, str | None]) -> URL:
    if values["hub_url"] and values["server_host"]:
        raise ConfigError("Both JUPYTERHUB_URL and JUPYTER_SERVER_IP_OR_NAME are set: keep only one of them.")
    if values["hub_url"]:
        url = URL(values["hub_url"])
        if url.scheme not in ("https", "http") or not url.host:
            raise ConfigError(f"JUPYTERHUB_URL={values['hub_url']!r} is not a hub address: "
                              "write it like https://hub.example.org.")
        return url.origin()
    if not values["server_host"]:
        raise ConfigError("No hub is set: set JUPYTER_SERVER_IP_OR_NAME to your hub's address "
                          "(or JUPYTERHUB_URL=https://your-hub), in the environment or in a .env file.")
    port = _port(values["server_port"] or "", "JUPYTER_SERVER_PORT")
    return URL.build(scheme="https", host=values["server_host"], port=port)


def _hub_token(values: Mapping[str, str | None]) -> str | None:
    if values["hub_token_file"]:
        path = Path(values["hub_token_file"])
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"Cannot read the hub token file {path} ({exc.strerror}): "
                              "fix JUPYTERHUB_API_TOKEN_FILE.") from None
        if not token:
            raise ConfigError(f"The hub token file {path} is empty: put your hub API token in it.")
        return token
    return values["hub_token"]


def load_settings(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> Settings:
    """Parse flags and read the environment and .env file into one validated Settings."""
    args = _parser().parse_args(list(argv))
    values = _merged(args, environ, _read_env_file(args.env_file, cwd))

    hub_url = _hub_url(values)
    if not values["username"]:
        raise ConfigError("No username is set: set JUPYTER_USERNAME to your JupyterHub username.")
    ca_file = Path(values["ca_file"]).expanduser() if values["ca_file"] else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"The CA file {ca_file} does not exist: fix JUPYTER_CLUSTER_CA_CERT "
                          "(ask your cluster admin for the CA certificate of the hub).")
    log_level = (values["log_level"] or "").lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"JUPYTER_PROXY_LOG_LEVEL={values['log_level']!r} is not a log level: "
                          f"use one of {', '.join(_LOG_LEVELS)}.")
    tls_name = None
    if hub_url.scheme == "https":
        tls_name = values["tls_name"] or (_IP_TLS_NAME if _is_ip_address(hub_url.host or "") else hub_url.host)

    return Settings(
        listen_host=values["listen_host"] or "localhost",
        listen_port=_port(values["listen_port"] or "", "JUPYTER_PROXY_PORT", allow_zero=True),
        hub_url=hub_url,
        tls_name=tls_name,
        username=values["username"],
        ca_file=ca_file,
        hub_token=_hub_token(values),
        local_token=values["local_token"] or secrets.token_urlsafe(32),
        log_level=log_level,
    )
