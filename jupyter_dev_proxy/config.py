"""Settings: built once from flags > environment > .env file > defaults, then frozen.

Every option is one row of ``OPTIONS``; the argument parser, ``--help`` and the precedence rules are all
derived from that table, so an option is never spelled out twice. Secrets (the hub token, the local token)
have no flag on purpose: anything on a command line can be read by every user of the machine with ``ps``.
"""

from __future__ import annotations

import argparse
import base64
import enum
import functools
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values
from yarl import URL

from . import __version__
from .address import HubAddress, base_path


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
    switch: bool = False  # a flag without a value (its variable takes 1/0, true/false, yes/no, on/off)

    @property
    def name(self) -> str:
        """The option's long name without ``--``, as the profiles file writes it; a secret (no flag) still has one,
        so that the file can refuse it by name."""
        return self.flag[2:] if self.flag else self.dest.replace("_", "-")


# The original tool's variable names are kept so existing shell profiles keep working.
OPTIONS: tuple[_Option, ...] = (
    _Option("listen_host", "JUPYTER_PROXY_IP_OR_NAME", "--listen-host", "localhost",
            "Address the proxy listens on. Keep it local: anyone who can reach it and knows the token "
            "uses your hub account.", "HOST"),
    _Option("listen_port", "JUPYTER_PROXY_PORT", "--listen-port", "8000",
            "Port the proxy listens on (0 picks a free one).", "PORT"),
    _Option("hub_url", "JUPYTERHUB_URL", "--hub-url", None,
            "The hub's address as one URL, e.g. https://hub.example.org, or https://example.edu/jupyter/ for a "
            "hub under a path (a URL from the browser works too). Use this or --server.",
            "URL"),
    _Option("server_host", "JUPYTER_SERVER_IP_OR_NAME", "--server", None,
            "IP address or name of the hub to connect to.", "HOST"),
    _Option("server_port", "JUPYTER_SERVER_PORT", "--server-port", "8000",
            "HTTPS port of the hub.", "PORT"),
    _Option("server_base_url", "JUPYTER_SERVER_BASE_URL", "--server-base-url", "/",
            "The hub's base path when it is not at the root of its host, e.g. /jupyter/ (goes with "
            "JUPYTER_SERVER_IP_OR_NAME; JUPYTERHUB_URL carries it in its own path).", "PATH"),
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
    _Option("server_options", "JUPYTERHUB_SERVER_OPTIONS", "--server-options", None,
            'Spawn options the proxy starts your server with, as JSON: a profile of the hub\'s list, e.g. '
            '{"profile": "gpu"} (the names are on the hub\'s spawn page).', "JSON"),
    _Option("start_server", "JUPYTER_PROXY_START_SERVER", "--start-server", "at-startup",
            "When the proxy starts your server on the hub: 'at-startup' (if it is not running when the proxy "
            "starts), 'always' (also again on the next request after it stopped, e.g. culled overnight) or "
            "'never' (only report its state).", "WHEN"),
    _Option("ca_file", "JUPYTER_CLUSTER_CA_CERT", "--ca-cert", None,
            "PEM file of the CA that signed the hub's certificate (trusted in addition to the public CAs).",
            "FILE"),
    _Option("client_cert", "JUPYTER_CLIENT_CERT", "--client-cert", None,
            "PEM file of a client certificate, for a hub or access gateway that asks for one (the key may be "
            "in the same file).", "FILE"),
    _Option("client_key", "JUPYTER_CLIENT_KEY", "--client-key", None,
            "PEM file of the client certificate's private key, when it is not in the certificate's file.",
            "FILE"),
    _Option("hub_proxy", "JUPYTER_HUB_PROXY", "--hub-proxy", None,
            "Company proxy to reach the hub through: http://host:port, or 'none' for a direct connection. "
            "Default: HTTPS_PROXY / ALL_PROXY as curl reads them, unless NO_PROXY names the hub. Put a proxy "
            "that needs user:password in the environment or .env, not on the command line.", "URL"),
    _Option("hub_headers", "JUPYTER_HUB_HEADERS", None, None,
            "A JSON object of headers sent with every request to the hub, for an access gateway in front of it, "
            'e.g. {"CF-Access-Client-Id": "...", "CF-Access-Client-Secret": "..."}.'),
    _Option("hub_token_file", "JUPYTERHUB_API_TOKEN_FILE", "--hub-token-file", None,
            "File holding your hub API token (instead of JUPYTERHUB_API_TOKEN).", "FILE"),
    _Option("hub_token", "JUPYTERHUB_API_TOKEN", None, None,
            "Your hub API token (make one at <hub>/hub/token). Without one anywhere, a start in a terminal asks "
            "for it and keeps it; otherwise the token the IDE presents is sent to the hub, as the original "
            "proxy.py did."),
    _Option("oauth_client_id", "JUPYTERHUB_OAUTH_CLIENT_ID", "--oauth-client-id", None,
            "Sign in with the hub's own login page in your browser (single sign-on included) instead of pasting a "
            "token: the client id (service-...) of the service your hub's admin registered for the proxy. See "
            "'Signing in' in the guide.", "ID"),
    _Option("oauth_client_secret", "JUPYTERHUB_OAUTH_CLIENT_SECRET", None, None,
            "With JUPYTERHUB_OAUTH_CLIENT_ID: that service's client secret (its api_token), which your hub's admin "
            "gives out; or a file holding it, named by JUPYTERHUB_OAUTH_CLIENT_SECRET_FILE."),
    _Option("oauth_client_secret_file", "JUPYTERHUB_OAUTH_CLIENT_SECRET_FILE", "--oauth-client-secret-file", None,
            "File holding the sign-in service's client secret (instead of JUPYTERHUB_OAUTH_CLIENT_SECRET).",
            "FILE"),
    _Option("oauth_callback_url", "JUPYTERHUB_OAUTH_CALLBACK_URL", "--oauth-callback-url", None,
            "Where the hub sends your browser back after you sign in: exactly the oauth_redirect_uri of the "
            "service (localhost and 127.0.0.1 differ). Default: "
            "http://<listen host>:<listen port>/jupyter-dev-proxy/oauth/callback.", "URL"),
    _Option("local_token", "JUPYTER_PROXY_TOKEN", None, None,
            "The token the IDE must present to this proxy. Default: a new random one at every start."),
    _Option("allowed_hosts", "JUPYTER_PROXY_ALLOWED_HOSTS", "--allowed-hosts", None,
            "Other names the IDE reaches the proxy by, comma-separated (requests naming any other host are "
            "refused, against DNS rebinding); localhost, loopback addresses and the listen address always work.",
            "NAMES"),
    _Option("forward", "JUPYTER_PROXY_FORWARD", "--forward", None,
            "Web apps running on your server (TensorBoard, Dash, Streamlit...) to open on local ports, "
            "comma-separated REMOTE_PORT[:LOCAL_PORT], e.g. 6006,8050:18050 (the same port locally when LOCAL_PORT "
            "is left out); http://localhost:LOCAL_PORT/ is then the app. Add /absolute (6006/absolute) for an app "
            "that serves under its whole path. Your server needs jupyter-server-proxy.", "PORTS"),
    _Option("log_level", "JUPYTER_PROXY_LOG_LEVEL", "--log-level", "info",
            "How much to log: debug, info, warning or error.", "LEVEL"),
    _Option("keep_warm_minutes", "JUPYTER_PROXY_KEEP_WARM_MINUTES", "--keep-warm-minutes", "30",
            "For how long after the IDE's last request the proxy keeps connections to the hub ready, so that the "
            "first request after a pause costs one network round trip instead of three (0: never). Nothing is "
            "sent on them, so your server's idle culling is not affected.", "MINUTES"),
    _Option("reconnect_seconds", "JUPYTER_PROXY_RECONNECT_SECONDS", "--reconnect-seconds", "60",
            "When the connection of a kernel's websocket to the hub breaks (a VPN reconnect, a hub restart), for "
            "how long the proxy reconnects it while the IDE stays connected and loses no output (0: never).",
            "SECONDS"),
    _Option("allow_origin", "JUPYTER_PROXY_ALLOW_ORIGIN", "--allow-origin", None,
            "Web pages on other origins that may use the proxy from a browser (CORS), comma-separated, e.g. "
            "https://dash.example.org, or * for any; they still need the proxy's token. Off by default.",
            "ORIGINS"),
    _Option("allow_headers", "JUPYTER_PROXY_ALLOW_HEADERS", "--allow-headers",
            "Authorization, Content-Type, X-XSRFToken",
            "With --allow-origin: the request headers such pages may send.", "HEADERS"),
    _Option("allow_methods", "JUPYTER_PROXY_ALLOW_METHODS", "--allow-methods", "GET, POST, PUT, PATCH, DELETE",
            "With --allow-origin: the methods such pages may use.", "METHODS"),
    _Option("allow_credentials", "JUPYTER_PROXY_ALLOW_CREDENTIALS", "--allow-credentials", "0",
            "With --allow-origin: let such pages send credentials (Access-Control-Allow-Credentials).",
            switch=True),
    _Option("trace", "JUPYTER_PROXY_TRACE", "--trace", "0",
            "Log one line per kernel message on every kernel websocket: direction, channel, type, a short id, "
            "size (never the content), to see what the IDE and the kernel say to each other.", switch=True),
    _Option("event_loop", "JUPYTER_PROXY_EVENT_LOOP", "--event-loop", "auto",
            "auto: the faster uvloop when it is installed; asyncio: Python's own event loop.", "LOOP"),
)

OPTIONS_BY_NAME: dict[str, _Option] = {option.name: option for option in OPTIONS}

_LOG_LEVELS = ("debug", "info", "warning", "error")
_EVENT_LOOPS = ("auto", "asyncio")
START_AT_STARTUP, START_ALWAYS, START_NEVER = "at-startup", "always", "never"
_START_CHOICES = (START_AT_STARTUP, START_ALWAYS, START_NEVER)
_IP_TLS_NAME = "jupyterhub"


class TokenKind(enum.Enum):
    """Where a hub token came from; the words are how messages name it."""

    VARIABLE = "JUPYTERHUB_API_TOKEN"
    FILE = "JUPYTERHUB_API_TOKEN_FILE"
    KEYRING = "the system keyring"
    STORED_FILE = "the proxy's token file"
    NONE = "nowhere"


@dataclass(frozen=True)
class TokenSource:
    """Where the hub token came from, and where a new one would come from."""

    kind: TokenKind = TokenKind.VARIABLE
    path: Path | None = None  # the file, for FILE and STORED_FILE
    variable: str | None = None  # for VARIABLE, when a profile's hub-token-env names another than JUPYTERHUB_API_TOKEN

    def __str__(self) -> str:
        return f"{self.setting} ({self.path})" if self.path is not None else self.setting

    @property
    def setting(self) -> str:
        """The setting that holds the token, as advice names it: the variable, the file's setting, the keyring."""
        return self.variable or self.kind.value

    @property
    def rereadable(self) -> bool:
        """Whether a running proxy can pick up a new token from here (a variable is fixed at start)."""
        return self.kind in (TokenKind.FILE, TokenKind.KEYRING, TokenKind.STORED_FILE)


def user_config_dir() -> Path:
    """The user's configuration directory, as each system has it: the kept tokens and the profiles file live in
    its ``jupyter-dev-proxy`` folder."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


# The profiles file: named by --config or this variable, else config.toml in the user's configuration directory.
CONFIG_VARIABLE = "JUPYTER_DEV_PROXY_CONFIG"
PROFILE_VARIABLE = "JUPYTER_DEV_PROXY_PROFILE"  # the profile to serve, when --profile does not name one


def profiles_file(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[Path, bool]:
    """Where the profiles file is, and whether the user named it (--config, JUPYTER_DEV_PROXY_CONFIG): a file
    named must exist, the default one may not."""
    named = _parser().parse_args(list(argv)).config or (environ.get(CONFIG_VARIABLE) or "").strip()
    if named:
        return Path(named).expanduser(), True
    return user_config_dir() / "jupyter-dev-proxy" / "config.toml", False


def chosen_profile(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The profile --profile (or JUPYTER_DEV_PROXY_PROFILE) names; None: none is named."""
    return _parser().parse_args(list(argv)).profile or (environ.get(PROFILE_VARIABLE) or "").strip() or None


@dataclass(frozen=True)
class Profile:
    """One ``[profiles.<name>]`` of the profiles file with its ``[defaults]``: settings that rank below flags and the
    environment, for one hub, user and server."""

    name: str
    file: Path
    values: tuple[tuple[str, str], ...]  # (long option name, value as the environment would write it)
    token_variable: str | None = None  # hub-token-env: the variable holding this profile's hub token

    def value(self, dest: str) -> str | None:
        """The profile's value of one option, by its ``dest``; None where the profile leaves it unset."""
        name = next(option.name for option in OPTIONS if option.dest == dest)
        return next((value for key, value in self.values if key == name), None)


def read_token_file(path: Path) -> str:
    """The token in a file, stripped; OSError or ValueError (empty, not text) if there is none to read.

    A leading UTF-8 byte-order mark is dropped: PowerShell 5 and older Notepad write one, and it would otherwise
    become the token's first character. The file is read once: a token caught half-written is refused by the hub,
    and the watch rereads the file when its size or time changes, that is when the writer finishes.
    """
    token = path.read_bytes().decode("utf-8-sig").strip()
    if not token:
        raise ValueError("empty")
    return token


@dataclass(frozen=True)
class ForwardProxy:
    """A company's forward proxy between the laptop and the hub, spoken to with ``CONNECT host:port``."""

    host: str
    port: int
    setting: str  # the setting that named it, for messages: JUPYTER_HUB_PROXY, HTTPS_PROXY, ...
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """The proxy as messages and the banner show it: credentials masked."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}:***@" if self.username is not None else ""
        return f"http://{user}{host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value (Basic), or None without credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True)
class CorsPolicy:
    """Which other web origins may use the proxy from a browser, and what they may send."""

    origins: frozenset[str]  # "https://dash.example.org"; "*" for any
    headers: str
    methods: str
    credentials: bool

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin.rstrip("/").lower() in self.origins


# Where the hub sends the browser back after a sign-in, by default: among the proxy's own pages, which are never
# forwarded (everything else belongs to the user's server).
OWN_PAGES_PREFIX = "/jupyter-dev-proxy/"
SIGN_IN_CALLBACK_PATH = OWN_PAGES_PREFIX + "oauth/callback"


@dataclass(frozen=True)
class OAuthClient:
    """The service a hub's admin registered for the proxy: with it, the user signs in with the hub's own login in a
    browser, and the hub gives the proxy a token (OAuth 2 authorization code with PKCE)."""

    client_id: str
    client_secret: str = field(repr=False)
    callback_url: URL  # exactly the service's oauth_redirect_uri, served by the proxy itself


@dataclass(frozen=True)
class ForwardedPort:
    """A web app on the user's server, reached through its jupyter-server-proxy and served at the root of a local
    port of its own (apps such as Dash and TensorBoard expect to be at the root of a host)."""

    remote: int  # the app's port on the server
    local: int  # the port the proxy listens on for it
    absolute: bool = False  # the app serves under its whole path (jupyter-server-proxy's /proxy/absolute/<port>/)

    def __str__(self) -> str:
        return f"{self.remote}:{self.local}{_ABSOLUTE_SUFFIX if self.absolute else ''}"


_ABSOLUTE_SUFFIX = "/absolute"


@dataclass(frozen=True)
class Settings:
    """Everything the proxy needs to know, decided once at startup."""

    listen_host: str
    listen_port: int
    hub: HubAddress  # the hub, its base path, the user (once known) and the server
    tls_name: str | None
    ca_file: Path | None
    # The hub token as read at startup: it only builds the credential (tokens.credential_for), whose token every
    # sender reads as it sends; None: the IDE's own token is forwarded.
    hub_token: str | None
    local_token: str
    log_level: str
    start_server: str = START_AT_STARTUP
    token_source: TokenSource = TokenSource()  # where the hub token came from, and where a new one will
    server_options: str | None = None  # spawn options as canonical JSON (Settings stay hashable)
    event_loop: str = "auto"
    keep_warm_minutes: float = 30.0
    reconnect_seconds: float = 60.0
    trace: bool = False
    # How the hub is reached: a client certificate, a forward proxy, headers for an access gateway.
    client_cert: Path | None = None
    client_key: Path | None = None
    forward_proxy: ForwardProxy | None = None
    hub_headers: tuple[tuple[str, str], ...] = ()
    # Names the IDE may reach the proxy by, besides loopback addresses (the Host check).
    allowed_hosts: frozenset[str] = frozenset({"localhost"})
    # Browser pages on other origins (CORS): none unless set; "*" in it means any.
    cors: CorsPolicy | None = None
    # The browser cookie's value, new at every start: it stands for the proxy's token, which never goes into a
    # cookie (a browser sends a host's cookies to every port of it, that is to every other local service).
    browser_session: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Signing in with the hub's login in a browser; None: the hub does not know the proxy (a token is pasted).
    oauth: OAuthClient | None = None
    # Web apps on the user's server, each on a local port of its own.
    forwards: tuple[ForwardedPort, ...] = ()
    # The profile of the profiles file these settings were built for; None: flags, environment and .env alone.
    profile: str | None = None

    def __hash__(self) -> int:
        """Hashed once: per-request caches (routing's paths, auth's hosts) key on the settings, and a frozen
        dataclass would hash all its fields at every lookup."""
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self)))

    @property
    def hub_token_setting(self) -> str:
        """Where the hub token came from, as advice names it: the setting, or the keyring."""
        return self.token_source.setting

    @property
    def forwards_ide_token(self) -> bool:
        """No hub token configured and no sign-in: the IDE's own token is the hub credential (the original
        workflow)."""
        return self.hub_token is None and self.oauth is None

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """Every value the logs must never show: tokens, the browser's session, the company proxy's password, gateway
        credentials."""
        proxy = self.forward_proxy
        proxy_secrets = (proxy.password, proxy.authorization) if proxy is not None else ()
        return (self.hub_token, self.local_token, self.browser_session, *proxy_secrets,
                *(value for _, value in self.hub_headers), self.oauth.client_secret if self.oauth else None)

    @property
    def reached_through(self) -> str:
        """How the hub is reached, in a few words: direct, through a forward proxy, through a gateway."""
        hops = []
        if self.forward_proxy is not None:
            hops.append(f"through the proxy {self.forward_proxy}")
        if self.hub_headers or self.client_cert is not None:
            hops.append("with gateway credentials")
        return ", ".join(hops) or "directly"


def _parser() -> argparse.ArgumentParser:
    env_only = "\n".join(f"  {o.env:<26} {o.help}" for o in OPTIONS if o.flag is None)
    parser = argparse.ArgumentParser(
        prog="jupyter-dev-proxy",
        allow_abbrev=False,  # else --hub-token TOKEN is taken as --hub-token-file
        description="Serve your JupyterHub server on localhost so that PyCharm, VS Code or any Jupyter client "
                    "can use it as a plain Jupyter server.",
        epilog=f"Secrets are read from the environment or a .env file, never from flags:\n{env_only}\n\n"
               "Settings come from flags first, then the environment, then the .env file; with --profile NAME,\n"
               "flags, then the environment, then that profile of the profiles file, then its [defaults].\n"
               "With profiles in the file, no hub set and no --profile, every profile is served at once, each\n"
               "under its name: http://localhost:8000/<profile>/?token=...\n\n"
               "Commands (with the same settings):\n"
               "  jupyter-dev-proxy doctor        check each link to your server, one line each, no secret shown\n"
               "  jupyter-dev-proxy doctor --service-entry  for your hub's admin: the service entry that lets you\n"
               "                                  sign in with the hub's login in your browser\n"
               "  jupyter-dev-proxy login         paste a new token from the hub's token page, or sign in in the\n"
               "                                  browser where JUPYTERHUB_OAUTH_CLIENT_ID is set (replaces a kept one)\n"
               "  jupyter-dev-proxy login --password  on a hub where you sign in with a password: the hub makes the\n"
               "                                  proxy a token of its own; the password is not kept\n"
               "  jupyter-dev-proxy forget-token  remove the hub token a first run kept for this hub\n"
               "  jupyter-dev-proxy servers       list your servers on the hub of every profile (or of these\n"
               "                                  settings): state, URL through this proxy, spawn options, last\n"
               "                                  activity\n"
               "  jupyter-dev-proxy stop NAME     stop the server of the profile NAME on its hub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        if option.flag is None:
            continue
        default = f"default: {option.default}" if option.default else "no default"
        if option.switch:
            parser.add_argument(option.flag, dest=option.dest, action="store_const", const="1", default=None,
                                help=f"{option.help} [env {option.env}=1; {default}]")
            continue
        parser.add_argument(option.flag, dest=option.dest, metavar=option.metavar, default=None,
                            help=f"{option.help} [env {option.env}; {default}]")
    parser.add_argument("--env-file", metavar="FILE", default=None,
                        help="Read settings from this file instead of ./.env.")
    parser.add_argument("--profile", metavar="NAME", default=None,
                        help="Serve only the server this profile of the profiles file names, at the root (flags "
                             "and the environment "
                             "still override its settings; the environment's hub token is never used for it) "
                             f"[env {PROFILE_VARIABLE}].")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"The profiles file (TOML) [env {CONFIG_VARIABLE}; default: config.toml in the "
                             "jupyter-dev-proxy folder of your configuration directory, e.g. "
                             "~/.config/jupyter-dev-proxy/config.toml].")
    parser.add_argument("--demo", action="store_true",
                        help="Try the proxy without a hub: start a throwaway local Jupyter server at "
                             "/user/<your login>/ over TLS and proxy to it (the hub settings are ignored; "
                             "its files are deleted when the proxy stops). Needs pip install \".[demo]\".")
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


# Where a setting's value came from, by the precedence of _merged.
_ORIGINS = ("flag", "environment", ".env", "profile", "default")


def _ranked(args: argparse.Namespace, environ: Mapping[str, str], dotenv: Mapping[str, str],
            profile: Profile | None = None) -> dict[str, tuple[int, str | None]]:
    """Each setting's value and where it came from (an index into _ORIGINS; past its end: unset)."""
    ranked: dict[str, tuple[int, str | None]] = {}
    for option in OPTIONS:
        candidates = (
            getattr(args, option.dest, None),
            environ.get(option.env) if option.env else None,
            dotenv.get(option.env) if option.env else None,
            profile.value(option.dest) if profile is not None else None,
            option.default,
        )
        found = [(i, c.strip()) for i, c in enumerate(candidates) if c is not None and c.strip()]
        ranked[option.dest] = found[0] if found else (len(candidates), None)
    return ranked


def _merged(args: argparse.Namespace, environ: Mapping[str, str], dotenv: Mapping[str, str],
            profile: Profile | None = None) -> dict[str, str | None]:
    """flags > environment > .env > profile > defaults; an empty value counts as unset."""
    ranked = _ranked(args, environ, dotenv, profile)
    merged = {dest: value for dest, (_, value) in ranked.items()}
    # A token and a token file are one setting: the one from the higher-precedence source wins.
    if ranked["hub_token"][0] < ranked["hub_token_file"][0]:
        merged["hub_token_file"] = None
    return merged


# A user name and password in a URL as written: from after the scheme's // to the last @ before a query or
# fragment (a password may itself hold / or @), so that what is shown never holds any part of it.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^?#]*@")


def _without_userinfo(url: str) -> str:
    """A URL as messages may quote it: ``https://alice:pw@hub/`` → ``https://***@hub/``."""
    return _USERINFO.sub(lambda match: f"{match.group(1) or ''}***@", url)


# Settings that decide who may use the proxy, or whom it trusts with the hub token: listening beyond this computer,
# a company proxy or CA (together, a man in the middle of the hub's TLS), other web pages and host names. A .env
# in the working directory may have come with a cloned project, so these are taken from it only when the user
# names the file (--env-file); flags and the environment are the user's own.
_TRUSTED_SOURCE_ONLY = frozenset({"listen_host", "hub_proxy", "ca_file", "allow_origin", "allowed_hosts"})
# The hub's address may come from ./.env (the README's workflow) with the token beside it; but a hub address from
# ./.env while the token comes from elsewhere (the environment, a token file) would send that token to whatever
# hub the file names. A token kept by a first run is looked up for the named hub only, so it is not exposed.
_HUB_ADDRESS = ("hub_url", "server_host")
_HUB_TOKEN = ("hub_token", "hub_token_file")


def _could_expose(dest: str, value: str) -> bool:
    """Whether this value of a guarded setting changes anything from what the defaults keep safe."""
    if dest == "listen_host":
        return not (value.lower() == "localhost" or (_is_ip_address(value) and
                                                     ipaddress.ip_address(value.strip("[]")).is_loopback))
    return not (dest == "hub_proxy" and value.lower() == "none")


def _exposing(ranked: Mapping[str, tuple[int, str | None]], ignored: set[str]) -> list[str]:
    """The guarded settings whose value comes from the .env file and could expose the hub token."""
    from_dotenv = _ORIGINS.index(".env")
    exposing = [option.env or option.dest for option in OPTIONS if option.dest in _TRUSTED_SOURCE_ONLY - ignored
                for rank, value in [ranked[option.dest]]
                if rank == from_dotenv and value is not None and _could_expose(option.dest, value)]
    token_elsewhere = any(ranked[dest][1] is not None and ranked[dest][0] != from_dotenv for dest in _HUB_TOKEN)
    if token_elsewhere and "hub_url" not in ignored:
        exposing += [option.env or option.dest for option in OPTIONS if option.dest in _HUB_ADDRESS
                     and ranked[option.dest][0] == from_dotenv and ranked[option.dest][1] is not None]
    return exposing


def _refuse_from_implicit_dotenv(path: Path, names: Sequence[str]) -> None:
    if names:
        them = "it" if len(names) == 1 else "them"
        raise ConfigError(f"The .env file {path} sets {', '.join(names)}, which decide{'s' if them == 'it' else ''} "
                          "who may use this proxy or whom it trusts with your hub token, and a .env may have come "
                          f"with a project you cloned: if it is yours, start the proxy with --env-file .env (or set "
                          f"{them} in the environment).")


def setting_origins(argv: Sequence[str], environ: Mapping[str, str], cwd: Path,
                    profile: Profile | None = None) -> list[tuple[str, str, str]]:
    """(setting's variable, where it came from, the value or '(secret)') for every setting that has a value."""
    args = _parser().parse_args(list(argv))
    ranked = _ranked(args, *_sources(args, environ, cwd, profile), profile)
    def shown(dest: str, value: str) -> str:
        if dest in ("hub_token", "local_token", "hub_headers", "oauth_client_secret") or (
                dest == "hub_proxy" and "@" in value):
            return "(secret)"
        return _without_userinfo(value) if dest == "hub_url" else value
    return [(option.env or option.dest, _ORIGINS[rank], shown(option.dest, value))
            for option in OPTIONS for rank, value in [ranked[option.dest]] if value is not None]


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


_SWITCH_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False}


def _switch(value: str, env: str) -> bool:
    if value.lower() not in _SWITCH_WORDS:
        raise ConfigError(f"{env}={value!r} is neither on nor off: use 1 (on) or 0 (off).")
    return _SWITCH_WORDS[value.lower()]


def _quantity(value: str, env: str, unit: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 1e6:
        raise ConfigError(f"{env}={value!r} is not a number of {unit}: use a number like 30 (0 turns it off).")
    return number


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _hub_address(values: Mapping[str, str | None]) -> HubAddress:
    """The hub's origin and base path (the user and server are added by ``load_settings``)."""
    if values["hub_url"] and values["server_host"]:
        raise ConfigError("Both JUPYTERHUB_URL and JUPYTER_SERVER_IP_OR_NAME are set: keep only one of them.")
    base = base_path(values["server_base_url"] or "/")
    if values["hub_url"]:
        try:
            url = URL(values["hub_url"])
            valid = url.scheme in ("https", "http") and bool(url.host) and url.port is not None
        except ValueError:
            valid = False
        shown = _without_userinfo(values["hub_url"])
        if not valid:
            raise ConfigError(f"JUPYTERHUB_URL={shown!r} is not a hub address: "
                              "write it like https://hub.example.org or https://example.edu/jupyter/.")
        if url.user is not None or url.password is not None:
            raise ConfigError(f"JUPYTERHUB_URL={shown!r} holds a user name or password, which the proxy never "
                              "sends to the hub: remove it from the URL (the hub takes your API token, "
                              "JUPYTERHUB_API_TOKEN).")
        hub = HubAddress.parse(url)
        if base != "/" and hub.base != base:
            raise ConfigError(f"JUPYTER_SERVER_BASE_URL={values['server_base_url']!r} and the path of "
                              f"JUPYTERHUB_URL ({hub.base}) disagree: keep the base path in JUPYTERHUB_URL only.")
        return hub
    if not values["server_host"]:
        raise ConfigError("No hub is set: set JUPYTER_SERVER_IP_OR_NAME to your hub's address "
                          "(or JUPYTERHUB_URL=https://your-hub), in the environment or in a .env file, "
                          "or run with --demo to try the proxy on a local Jupyter server first.")
    port = _port(values["server_port"] or "", "JUPYTER_SERVER_PORT")
    try:
        origin = URL.build(scheme="https", host=values["server_host"].strip("[]"), port=port)
    except ValueError:
        shown = _without_userinfo(values["server_host"])
        raise ConfigError(f"JUPYTER_SERVER_IP_OR_NAME={shown!r} is not a host name or IP address: write only the "
                          "name, like hub.example.org.") from None
    return HubAddress(origin=origin, base=base)


def _server_name(values: Mapping[str, str | None]) -> str:
    name = values["server_name"] or ""
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"JUPYTERHUB_NAMED_SERVER={name!r} is not a server name: use the name shown on "
                          "your hub's home page, without slashes.")
    return name


# The variables curl reads for a proxy, in its order: the lowercase one first; for a plain-http hub only
# the lowercase http_proxy (an HTTP_PROXY can be injected by a web server's CGI environment: "httpoxy").
_PROXY_VARIABLES = {"https": ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
                    "http": ("http_proxy", "all_proxy", "ALL_PROXY")}
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
_DEFAULT_PROXY_PORT = 1080  # curl's, for a proxy URL without a port


def _bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY names ``host``, as curl reads it: ``*``, a name and its subdomains (with or without
    a leading dot), an IP address or a CIDR range."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        entry = entry.strip("[]").lstrip(".")
        if not entry:
            continue
        if entry == "*" or host == entry or host.endswith("." + entry):
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _forward_proxy(value: str, setting: str, from_flag: bool) -> ForwardProxy:
    try:
        url = URL(value if "://" in value else f"http://{value}")
        port = url.explicit_port or _DEFAULT_PROXY_PORT
        valid = url.scheme == "http" and bool(url.host) and url.path in ("", "/")
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"{setting} is not a proxy address the proxy can use: write it like "
                          "http://proxy.example.com:3128 (an http:// proxy, which also carries https).")
    if from_flag and url.password is not None:
        raise ConfigError("--hub-proxy holds a password, which every user of this computer can read from the "
                          "process list: put the proxy URL in JUPYTER_HUB_PROXY (environment or .env) instead.")
    assert url.host is not None
    return ForwardProxy(host=url.host, port=port, setting=setting, username=url.user, password=url.password)


def _hub_proxy(values: Mapping[str, str | None], args: argparse.Namespace, environ: Mapping[str, str],
               dotenv: Mapping[str, str], hub: HubAddress, implicit_dotenv: Path | None) -> ForwardProxy | None:
    """The forward proxy for the hub: JUPYTER_HUB_PROXY ('none': no proxy), else curl's variables (from
    ``implicit_dotenv``, a ./.env not named by the user, refused)."""
    own = values["hub_proxy"]
    if own is not None:
        if own.lower() == "none":
            return None
        return _forward_proxy(own, "--hub-proxy" if args.hub_proxy else "JUPYTER_HUB_PROXY", bool(args.hub_proxy))

    def lookup(name: str) -> str | None:
        value = environ.get(name) or dotenv.get(name)
        return value.strip() if value and value.strip() else None

    no_proxy = next((v for v in map(lookup, _NO_PROXY_VARIABLES) if v), "")
    if no_proxy and hub.origin.host and _bypasses_proxy(hub.origin.host, no_proxy):
        return None
    for name in _PROXY_VARIABLES[hub.origin.scheme]:
        value = lookup(name)
        if value:
            if implicit_dotenv is not None and not (environ.get(name) or "").strip():
                _refuse_from_implicit_dotenv(implicit_dotenv, [name])
            return _forward_proxy(value, name, from_flag=False)
    return None


# Headers an access gateway may not set: the proxy writes these itself for every request.
_RESERVED_HEADERS = frozenset({
    "host", "authorization", "connection", "upgrade", "content-length", "transfer-encoding", "te", "trailer",
    "keep-alive", "proxy-authorization", "proxy-connection", "expect",
})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\uffff]*")


def _hub_headers(values: Mapping[str, str | None]) -> tuple[tuple[str, str], ...]:
    raw = values["hub_headers"]
    if raw is None:
        return ()
    advice = 'write it like {"CF-Access-Client-Id": "...", "CF-Access-Client-Secret": "..."}'
    try:
        headers = json.loads(raw)
    except ValueError:
        raise ConfigError(f"JUPYTER_HUB_HEADERS is not JSON: {advice}.") from None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"JUPYTER_HUB_HEADERS must be a JSON object of names and text values: {advice}.")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise ConfigError(f"JUPYTER_HUB_HEADERS has a header the proxy cannot send ({ascii(name[:40])}): "
                              "names are letters, digits and dashes, and values are one line of text.")
        if name.lower().startswith("sec-websocket-") or name.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"JUPYTER_HUB_HEADERS sets {name}, which the proxy writes itself: remove it "
                              "(your hub token goes in JUPYTERHUB_API_TOKEN).")
    return tuple(headers.items())


def _pem_file(values: Mapping[str, str | None], dest: str, setting: str) -> Path | None:
    if not values[dest]:
        return None
    path = Path(values[dest] or "").expanduser()
    if not path.is_file():
        raise ConfigError(f"The file {path} does not exist: fix {setting}.")
    return path


def _client_cert(values: Mapping[str, str | None]) -> Path | None:
    if values["client_key"] and not values["client_cert"]:
        raise ConfigError("JUPYTER_CLIENT_KEY is set without JUPYTER_CLIENT_CERT: set the certificate too (or "
                          "only JUPYTER_CLIENT_CERT, if its file holds the key as well).")
    return _pem_file(values, "client_cert", "JUPYTER_CLIENT_CERT")


def _cors(values: Mapping[str, str | None]) -> CorsPolicy | None:
    if not values["allow_origin"]:
        return None
    origins = frozenset(o.strip().rstrip("/").lower() for o in (values["allow_origin"] or "").split(",") if o.strip())
    for origin in origins - {"*"}:
        try:
            url = URL(origin)
            valid = url.scheme in ("http", "https") and bool(url.host) and url.path in ("", "/")
        except ValueError:
            valid = False
        if not valid:
            raise ConfigError(f"JUPYTER_PROXY_ALLOW_ORIGIN has {origin!r}, which is not an origin: write it like "
                              "https://dash.example.org (scheme, host and port only), or *.")
    return CorsPolicy(origins, values["allow_headers"] or "", values["allow_methods"] or "",
                      _switch(values["allow_credentials"] or "0", "JUPYTER_PROXY_ALLOW_CREDENTIALS"))


# The proxy's token goes into URLs (?token=) and, where the hub token is not JupyterHub's hex, into the pages the
# server writes: a character that a URL, JSON or HTML writes differently would make it another string there.
_URL_SAFE_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")


def _local_token(value: str | None) -> str:
    if not value:
        return secrets.token_urlsafe(32)
    if not _URL_SAFE_TOKEN.fullmatch(value):
        raise ConfigError("JUPYTER_PROXY_TOKEN has characters that URLs and web pages write differently: use only "
                          "letters, digits, '-', '_', '.' and '~' (for example the output of  python3 -c "
                          "\"import secrets; print(secrets.token_urlsafe(32))\"), or leave it unset for a new one "
                          "at every start.")
    return value


def _forwards(value: str | None, listen_port: int) -> tuple[ForwardedPort, ...]:
    """JUPYTER_PROXY_FORWARD's ``6006,8050:18050,5000/absolute``, each local port once and none the proxy's own."""
    forwards: list[ForwardedPort] = []
    for item in (part.strip() for part in (value or "").split(",")):
        if not item:
            continue
        ports, slash, kind = item.partition("/")
        remote, _, local = ports.partition(":")
        if slash and "/" + kind != _ABSOLUTE_SUFFIX:
            raise ConfigError(f"JUPYTER_PROXY_FORWARD has {item!r}: write each app as REMOTE_PORT[:LOCAL_PORT], "
                              "e.g. 6006 or 8050:18050, with /absolute after it for an app that serves under its "
                              "whole path.")
        forward = ForwardedPort(_port(remote.strip(), "JUPYTER_PROXY_FORWARD"),
                                _port((local or remote).strip(), "JUPYTER_PROXY_FORWARD", allow_zero=True),
                                bool(slash))
        # Local port 0: a free one, picked when the proxy listens (the banner says which).
        if forward.local and forward.local == listen_port:
            raise ConfigError(f"JUPYTER_PROXY_FORWARD puts port {forward.remote} of your server on local port "
                              f"{forward.local}, the proxy's own (JUPYTER_PROXY_PORT): give it another local port "
                              "with REMOTE_PORT:LOCAL_PORT.")
        if forward.local and any(known.local == forward.local for known in forwards):
            raise ConfigError(f"JUPYTER_PROXY_FORWARD uses local port {forward.local} twice: give each app its own "
                              "local port with REMOTE_PORT:LOCAL_PORT.")
        forwards.append(forward)
    return tuple(forwards)


def _allowed_hosts(values: Mapping[str, str | None], listen_host: str) -> frozenset[str]:
    extra = (values["allowed_hosts"] or "").split(",")
    names = {"localhost", listen_host, *extra}
    return frozenset(n.strip().lower().strip("[]") for n in names if n.strip())


def _start_server(values: Mapping[str, str | None], has_hub_token: bool) -> str:
    when = (values["start_server"] or START_AT_STARTUP).lower()
    if when not in _START_CHOICES:
        raise ConfigError(f"JUPYTER_PROXY_START_SERVER={values['start_server']!r} is not a choice: use one of "
                          f"{', '.join(_START_CHOICES)}.")
    if when == START_ALWAYS and not has_hub_token:
        raise ConfigError("JUPYTER_PROXY_START_SERVER=always needs a hub token: set JUPYTERHUB_API_TOKEN "
                          "(the token the IDE sends cannot be used to start your server).")
    return when


def _secret_file(path_value: str, setting: str, what: str) -> str:
    """A secret kept in a file, as ``read_token_file`` reads it; ConfigError saying what is wrong with the file."""
    path = Path(path_value).expanduser()
    try:
        return read_token_file(path)
    except ValueError as exc:
        problem = f"is empty: put {what} in it" if str(exc) == "empty" else "is not text: check it"
        raise ConfigError(f"The file {path} {problem}, or fix {setting}.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the file {path} ({exc.strerror or exc}): fix {setting}.") from None


def _oauth_client(values: Mapping[str, str | None], listen_host: str, listen_port: int,
                  allowed_hosts: frozenset[str]) -> OAuthClient | None:
    """The sign-in service, when JUPYTERHUB_OAUTH_CLIENT_ID is set: its secret, and a callback this proxy serves."""
    client_id = values["oauth_client_id"]
    secret = (values["oauth_client_secret"] or
              (_secret_file(values["oauth_client_secret_file"], "JUPYTERHUB_OAUTH_CLIENT_SECRET_FILE",
                            "the sign-in service's client secret") if values["oauth_client_secret_file"] else None))
    if client_id is None:
        if secret is not None or values["oauth_callback_url"]:
            raise ConfigError("A sign-in client secret or callback URL is set without JUPYTERHUB_OAUTH_CLIENT_ID: set "
                              "the client id your hub's admin gave out too (or remove the others).")
        return None
    if not client_id.startswith("service-"):
        raise ConfigError(f"JUPYTERHUB_OAUTH_CLIENT_ID={client_id!r} is not a JupyterHub service's client id, which "
                          "starts with 'service-': use the one your hub's admin gave out.")
    if secret is None:
        raise ConfigError("JUPYTERHUB_OAUTH_CLIENT_ID is set without its secret: set JUPYTERHUB_OAUTH_CLIENT_SECRET "
                          "(or JUPYTERHUB_OAUTH_CLIENT_SECRET_FILE) to the secret your hub's admin gave out.")
    return OAuthClient(client_id, secret, _callback_url(values["oauth_callback_url"], listen_host, listen_port,
                                                        allowed_hosts))


def default_callback_url(listen_host: str, listen_port: int) -> URL:
    """The sign-in callback on the proxy's listen address, where JUPYTERHUB_OAUTH_CALLBACK_URL names none: what a
    service entry for this proxy registers (``doctor --service-entry``)."""
    host = "localhost" if listen_host in ("0.0.0.0", "::") else listen_host
    return URL.build(scheme="http", host=host.strip("[]"), port=listen_port, path=SIGN_IN_CALLBACK_PATH)


def _callback_url(value: str | None, listen_host: str, listen_port: int, allowed_hosts: frozenset[str]) -> URL:
    """The sign-in callback: the given URL, which must reach this proxy's own pages, or the default on the listen
    address. The hub matches it exactly, so the port cannot be picked at random."""
    if listen_port == 0:
        raise ConfigError("Signing in with the hub needs a fixed port (the hub sends the browser back to exactly "
                          "the address it knows): set JUPYTER_PROXY_PORT to a port number, not 0.")
    if value is None:
        return default_callback_url(listen_host, listen_port)
    advice = (f"write it like http://localhost:{listen_port}{SIGN_IN_CALLBACK_PATH}, as the service's "
              "oauth_redirect_uri says")
    try:
        url = URL(value)
        host = (url.host or "").lower()
        port = url.port
    except ValueError:
        raise ConfigError(f"JUPYTERHUB_OAUTH_CALLBACK_URL={value!r} is not a URL: {advice}.") from None
    reaches_proxy = host in allowed_hosts or (_is_ip_address(host) and ipaddress.ip_address(host).is_loopback)
    if url.scheme != "http" or not reaches_proxy or port != listen_port or url.query_string or url.fragment:
        raise ConfigError(f"JUPYTERHUB_OAUTH_CALLBACK_URL={value!r} does not reach this proxy (http, on this "
                          f"computer, port {listen_port}): {advice}.")
    if not url.path.startswith(OWN_PAGES_PREFIX) or url.path == OWN_PAGES_PREFIX:
        raise ConfigError(f"JUPYTERHUB_OAUTH_CALLBACK_URL={value!r} has a path outside the proxy's own pages "
                          f"({OWN_PAGES_PREFIX}...; every other path belongs to your server): {advice}.")
    return url


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


StoredTokenLookup = Callable[[HubAddress, str], "tuple[str, str, TokenSource] | None"]


def _hub_token(values: Mapping[str, str | None], hub: HubAddress, stored: StoredTokenLookup | None,
               environ: Mapping[str, str], profile: Profile | None) -> tuple[str | None, str, TokenSource]:
    """The hub token, the user it was kept for (when it came from the store), and where it came from."""
    if values["hub_token_file"]:
        path = Path(values["hub_token_file"]).expanduser()
        token = _secret_file(values["hub_token_file"], "JUPYTERHUB_API_TOKEN_FILE", "your hub API token")
        return token, "", TokenSource(TokenKind.FILE, path)
    if values["hub_token"]:
        return values["hub_token"], "", TokenSource(TokenKind.VARIABLE)
    if profile is not None and profile.token_variable is not None:
        variable = profile.token_variable
        token = (environ.get(variable) or "").strip()
        if not token:
            raise ConfigError(f"The profile '{profile.name}' takes its hub token from the variable {variable} "
                              f"(hub-token-env in {profile.file}), which is not set: set it to your token from "
                              f"{hub.page('token')}, or use hub-token-file instead.")
        return token, "", TokenSource(TokenKind.VARIABLE, variable=variable)
    found = stored(hub, values["username"] or "") if stored is not None else None
    if found is not None:
        user, token, source = found
        return token, user, source
    return None, "", TokenSource(TokenKind.NONE)


def _server_options(values: Mapping[str, str | None]) -> str | None:
    raw = values["server_options"]
    if raw is None:
        return None
    try:
        options = json.loads(raw)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise ConfigError(f"JUPYTERHUB_SERVER_OPTIONS={raw!r} is not a JSON object: write it like "
                          '{"profile": "gpu"}, with the names your hub\'s spawn page shows.')
    return json.dumps(options, sort_keys=True)


def _event_loop(values: Mapping[str, str | None]) -> str:
    loop = (values["event_loop"] or "").lower()
    if loop not in _EVENT_LOOPS:
        raise ConfigError(f"JUPYTER_PROXY_EVENT_LOOP={values['event_loop']!r} is not an event loop: use "
                          f"{' or '.join(_EVENT_LOOPS)}.")
    return loop


# The settings that hold one hub's credentials: a profile never takes them from the environment (or an --env-file),
# where they are meant for another hub; its own come from its file (hub-token-file, hub-token-env) or are the token
# kept for its hub and user.
_HUB_CREDENTIALS = frozenset({"hub_token", "hub_token_file", "hub_headers", "oauth_client_secret",
                              "oauth_client_secret_file"})
# The settings that say where the hub is: a profile's come from its file only, or its token would go elsewhere.
_HUB_LOCATION = frozenset({"hub_url", "server_host", "server_port", "server_base_url"})


def _without_hub_credentials(variables: Mapping[str, str]) -> dict[str, str]:
    names = {option.env for option in OPTIONS if option.dest in _HUB_CREDENTIALS}
    return {name: value for name, value in variables.items() if name not in names}


def _sources(args: argparse.Namespace, environ: Mapping[str, str], cwd: Path,
             profile: Profile | None) -> tuple[Mapping[str, str], dict[str, str]]:
    """The environment and .env that settings come from: with a profile, ./.env is not read (the profile is the
    settings file; a named --env-file is) and neither gives a hub credential."""
    if profile is None:
        return environ, _read_env_file(args.env_file, cwd)
    dotenv = _read_env_file(args.env_file, cwd) if args.env_file else {}
    return _without_hub_credentials(environ), _without_hub_credentials(dotenv)


def _check_profile_hub(profile: Profile, ranked: Mapping[str, tuple[int, str | None]]) -> None:
    """A profile's hub is the one its file names, and no flag or variable moves it to another."""
    for option in OPTIONS:
        rank = ranked[option.dest][0]
        if option.dest in _HUB_LOCATION and rank < _ORIGINS.index("profile"):
            setting = option.flag if _ORIGINS[rank] == "flag" else option.env
            raise ConfigError(f"{setting} is set ({_ORIGINS[rank]}) with the profile '{profile.name}', whose hub is "
                              f"in {profile.file}: unset it (a profile's token goes to its own hub only), or run "
                              "without --profile.")
    if not (profile.value("hub_url") or profile.value("server_host")):
        raise ConfigError(f"The profile '{profile.name}' in {profile.file} names no hub: add hub-url = "
                          '"https://your-hub.example.org" to it (or to [defaults]).')


def load_settings(argv: Sequence[str], environ: Mapping[str, str], cwd: Path,
                  upstream: Upstream | None = None, stored: StoredTokenLookup | None = None,
                  token_can_be_asked: bool = False, profile: Profile | None = None) -> Settings:
    """Parse flags and read the environment and .env file into one validated Settings.

    With ``upstream`` (the demo server), the hub settings are taken from it and the user's are ignored. A token
    kept by an earlier start comes from ``stored`` when no setting names one; with ``token_can_be_asked`` (a
    terminal), a missing token is not an error: the first run asks for it. With ``profile``, its settings rank
    below flags and the environment; ./.env is not read (the profile is the settings file) and no hub credential
    is taken from the environment.
    """
    args = _parser().parse_args(list(argv))
    environ, dotenv = _sources(args, environ, cwd, profile)
    if profile is not None:
        _check_profile_hub(profile, _ranked(args, environ, dotenv, profile))
    values = _merged(args, environ, dotenv, profile)
    implicit_dotenv = cwd / ".env" if args.env_file is None and dotenv else None
    if implicit_dotenv is not None:
        ignored = {"hub_proxy", "ca_file", "hub_url"} if upstream is not None else set()  # the demo's own are used
        _refuse_from_implicit_dotenv(implicit_dotenv, _exposing(_ranked(args, environ, dotenv), ignored))
    if upstream is not None:
        values.update(hub_url=str(upstream.url), server_host=None, server_base_url=None, tls_name=upstream.tls_name,
                      username=upstream.username, ca_file=str(upstream.ca_file), hub_token_file=None,
                      hub_token=upstream.token, server_name=None, hub_proxy="none", hub_headers=None,
                      client_cert=None, client_key=None)

    hub = _hub_address(values)
    hub_token, kept_for, token_source = _hub_token(values, hub, stored if upstream is None else None, environ,
                                                   profile)
    listen_host = values["listen_host"] or "localhost"
    listen_port = _port(values["listen_port"] or "", "JUPYTER_PROXY_PORT", allow_zero=True)
    allowed_hosts = _allowed_hosts(values, listen_host)
    oauth = _oauth_client(values, listen_host, listen_port, allowed_hosts) if upstream is None else None
    if profile is not None and hub_token is None and oauth is None and not token_can_be_asked:
        raise ConfigError(f"The profile '{profile.name}' has no hub token: add hub-token-file (or hub-token-env) to "
                          f"it in {profile.file}, or run  jupyter-dev-proxy login --profile {profile.name}  to keep "
                          "one (JUPYTERHUB_API_TOKEN is never used for a profile: it may be another hub's).")
    if not values["username"] and hub_token is None and oauth is None and not token_can_be_asked:
        raise ConfigError("No username is set: set JUPYTER_USERNAME to your JupyterHub username "
                          "(or set JUPYTERHUB_API_TOKEN, and the proxy asks the hub whose token it is).")
    if values["forward"] and hub_token is None and oauth is None and not token_can_be_asked:
        raise ConfigError("JUPYTER_PROXY_FORWARD needs a hub token (JUPYTERHUB_API_TOKEN) or sign-in: without one the "
                          "IDE's own token goes to the hub, and a browser opening a web app would have to carry your "
                          "hub token in every address.")
    ca_file = Path(values["ca_file"]).expanduser() if values["ca_file"] else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"The CA file {ca_file} does not exist: fix JUPYTER_CLUSTER_CA_CERT "
                          "(ask your cluster admin for the CA certificate of the hub).")
    log_level = (values["log_level"] or "").lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"JUPYTER_PROXY_LOG_LEVEL={values['log_level']!r} is not a log level: "
                          f"use one of {', '.join(_LOG_LEVELS)}.")
    tls_name = None
    if hub.origin.scheme == "https":
        host = hub.origin.host or ""
        tls_name = values["tls_name"] or (_IP_TLS_NAME if _is_ip_address(host) else host)

    return Settings(
        listen_host=listen_host,
        listen_port=listen_port,
        hub=HubAddress(origin=hub.origin, base=hub.base, user=values["username"] or kept_for,
                       server=_server_name(values)),
        tls_name=tls_name,
        ca_file=ca_file,
        hub_token=hub_token,
        local_token=_local_token(values["local_token"]),
        log_level=log_level,
        start_server=_start_server(values, hub_token is not None or oauth is not None),
        token_source=token_source,
        server_options=_server_options(values),
        event_loop=_event_loop(values),
        keep_warm_minutes=_quantity(values["keep_warm_minutes"] or "", "JUPYTER_PROXY_KEEP_WARM_MINUTES", "minutes"),
        reconnect_seconds=_quantity(values["reconnect_seconds"] or "", "JUPYTER_PROXY_RECONNECT_SECONDS", "seconds"),
        trace=_switch(values["trace"] or "", "JUPYTER_PROXY_TRACE"),
        client_cert=_client_cert(values),
        client_key=_pem_file(values, "client_key", "JUPYTER_CLIENT_KEY"),
        forward_proxy=_hub_proxy(values, args, environ, dotenv, hub, implicit_dotenv),
        hub_headers=_hub_headers(values),
        allowed_hosts=allowed_hosts,
        cors=_cors(values),
        oauth=oauth,
        forwards=_forwards(values["forward"], listen_port),
        profile=profile.name if profile is not None else None,
    )
