"""A real JupyterHub for the hub tests: TLS from a throwaway CA, DummyAuthenticator, SimpleLocalProcessSpawner.

Users ``alice`` and ``bob``; alice's own role also lets her open bob's servers (``access:servers!user=bob``),
so a test can show that the proxy, not the hub, keeps her out of them. An admin service token (held only by
the tests) makes scoped tokens and stops servers through the hub API, the way an idle culler would. A named
server called ``broken`` always fails to start, with a message the tests look for.

The proxy is registered as the service OAuth client an admin would add for "sign in with the hub's login": its
callback on a free local port, no confirmation page, PKCE required, only the scopes the proxy needs. Only alice
may sign in with it (``access:services!service=jupyter-dev-proxy``); bob is the user an admin left out.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from jupyter_dev_proxy.demo import free_port, terminate
from tests.kit.env import clean_env, upstream_env
from tests.kit.netservers import missing_programs, real_servers_required

# Where `make test` installs configurable-http-proxy (npm install --prefix <this>), if it is not on PATH.
CHP_PREFIX = Path(__file__).resolve().parents[2] / ".cache" / "node"
CHP_ENV = "JUPYTER_DEV_PROXY_CHP"

# A hub starts in ~3 s and a single-user server in ~3 s on a quiet 2-core machine; CI machines are busier.
HUB_START_SECONDS = 60.0
SERVER_CHANGE_SECONDS = 60.0

# The service an admin registers for the proxy's browser sign-in; the hub names its OAuth client service-<name>.
SIGN_IN_SERVICE = "jupyter-dev-proxy"
SIGN_IN_CALLBACK_PATH = "/jupyter-dev-proxy/oauth/callback"
# The proxy's needs only: open, read and start the user's own servers, read (to tidy) the user's own tokens.
# A bare !user filter becomes !user=<the user signing in> when the hub issues the token (scopes.expand_scopes).
SIGN_IN_SCOPES = ("access:servers!user", "read:servers!user", "start:servers!user", "read:tokens!user")

BROKEN_SERVER = "broken"
BROKEN_MESSAGE = "the 'broken' profile has no capacity left"

_CONFIG = '''
import sys
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.base_url = {base_url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.ssl_cert = {cert!r}
c.JupyterHub.ssl_key = {key!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.pid_file = {hub_pid!r}
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{chp_api_port}"
c.ConfigurableHTTPProxy.pid_file = {chp_pid!r}
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.allow_named_servers = True
# A password login (as on PAM, LDAP or Native hubs): every user's password is the shared one.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {user_password!r}
c.Authenticator.allowed_users = {{"alice", "bob"}}
import json as _json
from jupyterhub.spawner import SimpleLocalProcessSpawner


class RecordingSpawner(SimpleLocalProcessSpawner):
    """Records the spawn options it is started with; knows the profiles 'default' and 'gpu' only."""

    async def start(self):
        options = dict(self.user_options or {{}})
        with open({options_log!r}, "a") as log:
            log.write(_json.dumps({{"server": self.name, "user_options": options}}) + "\\n")
        if options.get("profile", "default") not in ("default", "gpu"):
            raise ValueError(f"unknown profile {{options['profile']!r}}: choose 'default' or 'gpu'")
        return await super().start()


c.JupyterHub.spawner_class = RecordingSpawner
c.SimpleLocalProcessSpawner.home_dir_template = {home_template!r}
# The single-user server runs as the hub's own OS user; as root jupyter_server refuses without --allow-root.
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = {spawner_args!r}
c.Spawner.env_keep = ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL"]

def _pre_spawn_hook(spawner):
    if spawner.name == {broken!r}:
        raise RuntimeError({broken_message!r})

c.Spawner.pre_spawn_hook = _pre_spawn_hook
c.JupyterHub.services = [
    {{"name": "test-admin", "api_token": {admin_token!r}}},
{sign_in_entry}]
c.JupyterHub.oauth_require_pkce = True
c.JupyterHub.oauth_token_expires_in = {oauth_token_seconds!r}
c.JupyterHub.load_roles = [
    {{"name": "test-admin", "services": ["test-admin"],
      "scopes": ["admin:users", "admin:servers", "admin:services", "tokens", "read:hub"]}},
    {{"name": "alice-may-open-bobs-server", "users": ["alice"], "scopes": ["access:servers!user=bob"]}},
    {{"name": "may-sign-in-with-the-proxy", "users": ["alice"],
      "scopes": ["access:services!service={sign_in_service}"]}},
]
'''


def find_chp() -> str | None:
    """configurable-http-proxy: $JUPYTER_DEV_PROXY_CHP, then PATH, then the prefix .ci/run installs into."""
    for candidate in (os.environ.get(CHP_ENV), shutil.which("configurable-http-proxy"),
                      str(CHP_PREFIX / "node_modules" / ".bin" / "configurable-http-proxy")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_real_servers(*programs: str) -> None:
    """At the top of a module of tests against a real hub (and ``programs``, Debian's daemons): skip the module
    when they are missing here, fail it in CI (where .ci/run installs them), so no test is silently skipped."""
    missing = missing_hub_tools() or missing_programs(*programs)
    if missing:
        if real_servers_required():
            raise RuntimeError(f"CI must run the tests against real servers, but {missing}")
        pytest.skip(f"no real hub here: {missing}", allow_module_level=True)


def module_hub(base: str = "/", oauth_token_seconds: int | None = None) -> Any:
    """A module-scoped fixture: one real hub (under ``base``) for every test of the module, stopped after them."""
    @pytest.fixture(scope="module")
    def hub() -> Iterator[Hub]:
        started = start_hub(base=base, oauth_token_seconds=oauth_token_seconds)
        try:
            yield started
        finally:
            started.stop()
    return hub


def missing_hub_tools() -> str | None:
    """Why a real hub cannot run here, or None when it can."""
    try:
        import jupyterhub
    except ImportError:
        return "jupyterhub is not installed (pip install -r requirements-hub-tests.txt)"
    if find_chp() is None:
        return (f"configurable-http-proxy is not on PATH nor in {CHP_PREFIX} "
                f"(npm install --prefix {CHP_PREFIX} configurable-http-proxy)")
    return None


@dataclass
class Hub:
    """A running hub; every call talks to its API with the admin service token unless told otherwise."""

    url: str  # https://127.0.0.1:<port>, the origin; the hub itself is at url + base
    ca_file: Path
    tls_name: str
    admin_token: str
    user_password: str  # every user's, on this hub's password login
    version: str
    workdir: Path
    process: subprocess.Popen[bytes]
    # The proxy's registered OAuth client: its id, its secret (the service's api_token), the local port its
    # callback is on and the callback itself (exactly the registered oauth_redirect_uri).
    sign_in_client_id: str
    sign_in_secret: str
    sign_in_port: int
    sign_in_callback: str
    base: str = "/"
    _server_pids: set[int] = field(default_factory=set)

    @property
    def address(self) -> str:
        """The hub as a user writes it in JUPYTERHUB_URL: its origin and base path."""
        return self.url + self.base.rstrip("/")

    # -- the hub API ----------------------------------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = None, body: Any = None,
            timeout: float = 30.0) -> tuple[int, Any]:
        """Call ``/hub/api<path>``; return (status, parsed JSON or text or None)."""
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        request = urllib.request.Request(f"{self.address}/hub/api{path}", method=method, data=data,
                                         headers={"Authorization": f"token {token or self.admin_token}"})
        try:
            with urllib.request.urlopen(request, context=self.client_tls(), timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def status_of(self, path: str, token: str) -> int:
        """The status the hub itself gives ``path`` (from its origin) for ``token``, asked directly."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(request, context=self.client_tls(), timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    def client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False  # reached by IP; the proxy under test checks the name itself
        return context

    def make_token(self, user: str, scopes: list[str] | None = None, expires_in: int | None = None) -> str:
        """A new API token owned by ``user``; ``scopes=None`` gives it all of the user's own permissions."""
        return str(self.make_token_model(user, scopes, expires_in)["token"])

    def make_token_model(self, user: str, scopes: list[str] | None = None,
                         expires_in: int | None = None) -> dict[str, Any]:
        """The hub's model of a new token of ``user`` (``token``, ``id``, ``expires_at``...)."""
        body: dict[str, Any] = {"note": "jupyter-dev-proxy tests"}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in is not None:
            body["expires_in"] = expires_in
        status, model = self.api("POST", f"/users/{user}/tokens", body=body)
        assert status == 201, f"token for {user} not made: {status} {model}"
        return dict(model)

    def token_model(self, user: str, token_id: str) -> dict[str, Any] | None:
        status, model = self.api("GET", f"/users/{user}/tokens/{token_id}")
        return dict(model) if status == 200 else None

    def spawn_options(self) -> list[dict[str, Any]]:
        """The spawn options each start of a server was given, in order (RecordingSpawner's log)."""
        log = self.workdir / "spawn-options.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def server_model(self, user: str, server: str = "") -> dict[str, Any] | None:
        status, model = self.api("GET", f"/users/{user}?include_stopped_servers=1")
        assert status == 200, (status, model)
        found = model.get("servers", {}).get(server)
        if found and (found.get("state") or {}).get("pid"):
            self._server_pids.add(int(found["state"]["pid"]))
        return found

    def is_running(self, user: str, server: str = "") -> bool:
        model = self.server_model(user, server)
        return bool(model and model["ready"])

    def ensure_running(self, user: str, server: str = "") -> None:
        if self.is_running(user, server):
            return
        status, body = self.api("POST", _server_path(user, server))
        assert status in (201, 202, 400), (status, body)
        self._wait(lambda: self.is_running(user, server), f"{user}'s server {server!r} to start")

    def ensure_stopped(self, user: str, server: str = "") -> None:
        """Stop the server the way an idle culler does (DELETE through the API) and wait until it is gone."""
        model = self.server_model(user, server)
        if model is None or (model["stopped"] and not model["pending"]):
            return
        status, body = self.api("DELETE", _server_path(user, server))
        assert status in (202, 204, 400), (status, body)

        def stopped() -> bool:
            model = self.server_model(user, server)
            return model is None or (model["stopped"] and not model["pending"])
        self._wait(stopped, f"{user}'s server {server!r} to stop")

    def delete_named_server(self, user: str, server: str) -> None:
        self.ensure_stopped(user, server)
        self.api("DELETE", _server_path(user, server), body={"remove": True})

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + SERVER_CHANGE_SECONDS
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return (self.workdir / "hub.log").read_text(errors="replace")[-4000:]

    # -- lifecycle ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM: the hub stops the single-user servers and the proxy it started; then clean up."""
        terminate(self.process, timeout=30)
        for pid in [self.process.pid, *self._server_pids]:
            try:
                os.killpg(pid, signal.SIGKILL)  # anything the hub left behind in its or a server's group
            except (ProcessLookupError, PermissionError):
                pass
        _kill_pid_file(self.workdir / "chp.pid")
        shutil.rmtree(self.workdir, ignore_errors=True)


def hub_env(hub: Hub, token: str | None = None, **more: str) -> dict[str, str]:
    """A user's settings for this hub (its address as JUPYTERHUB_URL, its CA file), with ``token`` as the hub token
    unless None; the proxy on a free local port."""
    return upstream_env(hub.address, hub.ca_file, token, **more)


def _server_path(user: str, server: str) -> str:
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


def _kill_pid_file(path: Path) -> None:
    try:
        os.kill(int(path.read_text().strip()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


# The proxy's service as the config registers it (``registered``); alice's grant to use it is there either way.
_SIGN_IN_ENTRY = """    {{"name": {sign_in_service!r}, "api_token": {sign_in_secret!r}, "oauth_redirect_uri": {sign_in_callback!r},
      "oauth_no_confirm": True, "oauth_client_allowed_scopes": {sign_in_scopes!r}}},
"""


def start_hub(tls_name: str = "jupyterhub", base: str = "/", registered: bool = True,
              oauth_token_seconds: int | None = None) -> Hub:
    """Start a hub on free ports (under ``base``, like c.JupyterHub.base_url); return once its API answers.
    ``registered=False``: without the proxy's service in its config, for an admin to add at run time. Its OAuth
    tokens last ``oauth_token_seconds`` (None: the hub's default, 14 days)."""
    chp = find_chp()
    assert chp is not None, missing_hub_tools()
    workdir = Path(tempfile.mkdtemp(prefix="jupyter-dev-proxy-hub-"))
    ca = trustme.CA()
    cert = ca.issue_cert(tls_name, "127.0.0.1", "localhost")
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "hub.pem", workdir / "hub.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(cert_file), append=i > 0)
    admin_token, user_password = secrets.token_hex(32), secrets.token_urlsafe(16)
    port, sign_in_port, sign_in_secret = free_port(), free_port(), secrets.token_hex(32)
    sign_in_callback = f"http://127.0.0.1:{sign_in_port}{SIGN_IN_CALLBACK_PATH}"
    sign_in_entry = _SIGN_IN_ENTRY.format(sign_in_service=SIGN_IN_SERVICE, sign_in_secret=sign_in_secret,
                                          sign_in_callback=sign_in_callback, sign_in_scopes=list(SIGN_IN_SCOPES))
    config = _CONFIG.format(
        port=port, hub_port=free_port(), chp_api_port=free_port(), cert=str(cert_file), key=str(key_file),
        db_url=f"sqlite:///{workdir / 'hub.sqlite'}", cookie_secret=str(workdir / "cookie_secret"),
        hub_pid=str(workdir / "hub.pid"), chp=chp, chp_pid=str(workdir / "chp.pid"),
        home_template=str(workdir / "home" / "{username}"),
        spawner_args=["--allow-root"] if os.geteuid() == 0 else [],
        broken=BROKEN_SERVER, broken_message=BROKEN_MESSAGE, admin_token=admin_token, base_url=base,
        user_password=user_password, sign_in_service=SIGN_IN_SERVICE,
        sign_in_entry=sign_in_entry if registered else "", options_log=str(workdir / "spawn-options.jsonl"),
        oauth_token_seconds=oauth_token_seconds or 14 * 24 * 3600,
    )
    (workdir / "jupyterhub_config.py").write_text(config)
    env = clean_env(CONFIGPROXY_AUTH_TOKEN=secrets.token_hex(32))
    with (workdir / "hub.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(workdir / "jupyterhub_config.py")],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    hub = Hub(url=f"https://127.0.0.1:{port}", ca_file=ca_file, tls_name=tls_name, admin_token=admin_token,
              user_password=user_password, version="", workdir=workdir, process=process,
              sign_in_client_id=f"service-{SIGN_IN_SERVICE}", sign_in_secret=sign_in_secret,
              sign_in_port=sign_in_port, sign_in_callback=sign_in_callback, base=base)
    try:
        hub.version = _wait_for_api(hub)
    except BaseException:
        hub.stop()
        raise
    return hub


def _wait_for_api(hub: Hub) -> str:
    deadline = time.monotonic() + HUB_START_SECONDS
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            raise RuntimeError(f"JupyterHub exited at startup:\n{hub.log_tail()}")
        try:
            with urllib.request.urlopen(f"{hub.address}/hub/api", context=hub.client_tls(), timeout=2) as response:
                return str(json.loads(response.read())["version"])
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)
    raise RuntimeError(f"JupyterHub did not answer within {HUB_START_SECONDS:.0f} s:\n{hub.log_tail()}")
