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


def hub_escaped(name: str) -> str:
    """A user or server name as JupyterHub writes it in URLs."""
    return quote(name, safe="@~")


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
            "Your JupyterHub username: the proxy serves /user/<username>/ and nothing else. With a hub token "
            "it is optional (the hub says whose token it is) and, if set, must match the token's owner.",
            "NAME"),
    _Option("server_name", "JUPYTERHUB_NAMED_SERVER", "--named-server", None,
            "Use your named server /user/<username>/<name>/ instead of your default server. (Not the "
            "certificate name: that is JUPYTER_SERVER_NAME.)", "NAME"),
    _Option("start_server", "JUPYTER_PROXY_START_SERVER", "--start-server", "at-startup",
            "When the proxy starts your server on the hub: 'at-startup' (if it is not running when the proxy "
            "starts), 'always' (also again on the next request after it stopped, e.g. culled overnight) or "
            "'never' (only report its state).", "WHEN"),
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
    _Option("event_loop", "JUPYTER_PROXY_EVENT_LOOP", "--event-loop", "auto",
            "auto: the faster uvloop when it is installed; asyncio: Python's own event loop.", "LOOP"),
)

_LOG_LEVELS = ("debug", "info", "warning", "error")
_EVENT_LOOPS = ("auto", "asyncio")
START_AT_STARTUP, START_ALWAYS, START_NEVER = "at-startup", "always", "never"
_START_CHOICES = (START_AT_STARTUP, START_ALWAYS, START_NEVER)
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
    # Added with hub awareness; defaults keep every existing Settings(...) call valid.
    server_name: str = ""  # "" is the default server
    start_server: str = START_AT_STARTUP
    hub_token_setting: str = "JUPYTERHUB_API_TOKEN"  # where the hub token came from, named in advice
    event_loop: str = "auto"

    @property
    def server_prefix(self) -> str:
        """The user's server on the hub, escaped the way JupyterHub escapes it.

        ``username`` is empty only until the hub has said whose token it is (``hub.check_hub``), before any
        request is served.
        """
        prefix = f"/user/{hub_escaped(self.username)}/"
        return prefix + f"{hub_escaped(self.server_name)}/" if self.server_name else prefix

    @property
    def server_label(self) -> str:
        """How the banner and the log name the server: 'default server' or "named server 'dev'"."""
        return f"named server '{self.server_name}'" if self.server_name else "default server"

    @property
    def forwards_ide_token(self) -> bool:
        """No hub token configured: the IDE's own token is the hub credential (the original workflow)."""
        return self.hub_token is None


def _parser() -> argparse.ArgumentParser:
    env_only = "\n".join(f"  {o.env:<26} {o.help}" for o in OPTIONS if o.flag is None)
    parser = argparse.ArgumentParser(
        prog="jupyter-dev-proxy",
        allow_abbrev=False,  # else --hub-token TOKEN is taken as --hub-token-file
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
    parser.add_argument("--demo", action="store_true",
                        help="Try the proxy without a hub: start a throwaway local Jupyter server at "
                             "/user/<your login>/ over TLS and proxy to it (the hub settings are ignored; "
                             "its files are deleted when the proxy stops). Needs requirements-demo.txt.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _read_env_file(path_flag: str | None, cwd: Path) -> dict[str, str]:
    if path_flag is None:
        path = cwd / ".env"
        if not path.is_file():
            return {}
    else:
        path = cwd / path_flag
        if not path.is_file():
            raise ConfigError(f"The settings file {path} does not exist: fix the path given to --env-file.")
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _merged(args: argparse.Namespace, environ: Mapping[str, str], dotenv: Mapping[str, str]) -> dict[str, str | None]:
    """flags > environment > .env > defaults; an empty value counts as unset."""
    merged: dict[str, str | None] = {}
    rank: dict[str, int] = {}
    for option in OPTIONS:
        candidates = (
            getattr(args, option.dest, None),
            environ.get(option.env) if option.env else None,
            dotenv.get(option.env) if option.env else None,
            option.default,
        )
        found = [(i, c.strip()) for i, c in enumerate(candidates) if c is not None and c.strip()]
        rank[option.dest], merged[option.dest] = found[0] if found else (len(candidates), None)
    # A token and a token file are one setting: the one from the higher-precedence source wins.
    if rank["hub_token"] < rank["hub_token_file"]:
        merged["hub_token_file"] = None
    return merged


def _port(value: str, env: str, allow_zero: bool = False) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= 65535:
        hint = " (0 picks a free one)" if allow_zero else ""
        raise ConfigError(f"{env}={value!r} is not a port number: use a number from {lowest} to 65535{hint}.")
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
        try:
            url = URL(values["hub_url"])
        except ValueError:
            url = URL()
        if url.scheme not in ("https", "http") or not url.host:
            raise ConfigError(f"JUPYTERHUB_URL={values['hub_url']!r} is not a hub address: "
                              "write it like https://hub.example.org.")
        # A URL pasted from the browser (…/hub/home, …/user/alice/lab) means the hub at the root.
        if url.path not in ("", "/") and not url.path.startswith(("/hub/", "/user/")):
            raise ConfigError(f"JUPYTERHUB_URL={values['hub_url']!r} has a path ({url.path}); hubs served under "
                              "a base URL are not supported yet: give only https://host[:port].")
        return url.origin()
    if not values["server_host"]:
        raise ConfigError("No hub is set: set JUPYTER_SERVER_IP_OR_NAME to your hub's address "
                          "(or JUPYTERHUB_URL=https://your-hub), in the environment or in a .env file, "
                          "or run with --demo to try the proxy on a local Jupyter server first.")
    port = _port(values["server_port"] or "", "JUPYTER_SERVER_PORT")
    try:
        return URL.build(scheme="https", host=values["server_host"].strip("[]"), port=port)
    except ValueError:
        raise ConfigError(f"JUPYTER_SERVER_IP_OR_NAME={values['server_host']!r} is not a host name or IP "
                          "address: write only the name, like hub.example.org.") from None


def _server_name(values: Mapping[str, str | None]) -> str:
    name = values["server_name"] or ""
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"JUPYTERHUB_NAMED_SERVER={name!r} is not a server name: use the name shown on "
                          "your hub's home page, without slashes.")
    return name


def _start_server(values: Mapping[str, str | None], has_hub_token: bool) -> str:
    when = (values["start_server"] or START_AT_STARTUP).lower()
    if when not in _START_CHOICES:
        raise ConfigError(f"JUPYTER_PROXY_START_SERVER={values['start_server']!r} is not a choice: use one of "
                          f"{', '.join(_START_CHOICES)}.")
    if when == START_ALWAYS and not has_hub_token:
        raise ConfigError("JUPYTER_PROXY_START_SERVER=always needs a hub token: set JUPYTERHUB_API_TOKEN "
                          "(the token the IDE sends cannot be used to start your server).")
    return when


@dataclass(frozen=True)
class Upstream:
    """A server the program chose itself instead of the hub settings (the ``--demo`` server)."""

    url: URL
    tls_name: str
    ca_file: Path
    token: str
    username: str


def wants_demo(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> bool:
    """``--demo``, or no hub set anywhere (flags, environment, .env): a first run on a new machine then shows
    the whole path on a local server. Decided before the settings, which then need the demo server."""
    args = _parser().parse_args(list(argv))
    if args.demo:
        return True
    values = _merged(args, environ, _read_env_file(args.env_file, cwd))
    return not (values["hub_url"] or values["server_host"])


def _hub_token(values: Mapping[str, str | None]) -> str | None:
    if values["hub_token_file"]:
        path = Path(values["hub_token_file"]).expanduser()
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the hub token file {path} ({getattr(exc, 'strerror', None) or 'not text'}): "
                              "fix JUPYTERHUB_API_TOKEN_FILE.") from None
        if not token:
            raise ConfigError(f"The hub token file {path} is empty: put your hub API token in it, or fix JUPYTERHUB_API_TOKEN_FILE.")
        return token
    return values["hub_token"]


def _event_loop(values: Mapping[str, str | None]) -> str:
    loop = (values["event_loop"] or "").lower()
    if loop not in _EVENT_LOOPS:
        raise ConfigError(f"JUPYTER_PROXY_EVENT_LOOP={values['event_loop']!r} is not an event loop: use "
                          f"{' or '.join(_EVENT_LOOPS)}.")
    return loop


def load_settings(argv: Sequence[str], environ: Mapping[str, str], cwd: Path,
                  upstream: Upstream | None = None) -> Settings:
    """Parse flags and read the environment and .env file into one validated Settings.

    With ``upstream`` (the demo server), the hub settings are taken from it and the user's are ignored.
    """
    args = _parser().parse_args(list(argv))
    values = _merged(args, environ, _read_env_file(args.env_file, cwd))
    if upstream is not None:
        values.update(hub_url=str(upstream.url), server_host=None, tls_name=upstream.tls_name,
                      username=upstream.username, ca_file=str(upstream.ca_file), hub_token_file=None,
                      hub_token=upstream.token, server_name=None)

    hub_url = _hub_url(values)
    hub_token = _hub_token(values)
    if not values["username"] and hub_token is None:
        raise ConfigError("No username is set: set JUPYTER_USERNAME to your JupyterHub username "
                          "(or set JUPYTERHUB_API_TOKEN, and the proxy asks the hub whose token it is).")
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
        username=values["username"] or "",
        ca_file=ca_file,
        hub_token=hub_token,
        local_token=values["local_token"] or secrets.token_urlsafe(32),
        log_level=log_level,
        server_name=_server_name(values),
        start_server=_start_server(values, hub_token is not None),
        hub_token_setting="JUPYTERHUB_API_TOKEN_FILE" if values["hub_token_file"] else "JUPYTERHUB_API_TOKEN",
        event_loop=_event_loop(values),
    )
