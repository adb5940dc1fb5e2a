"""A real Jupyter server laid out like a hub's: ``/user/<name>/`` over TLS from a throwaway CA.

Used by ``--demo`` (so a new user can try the whole path with no hub) and by the tests (so the proxy is
tested against the real thing). Needs the packages in requirements-demo.txt.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from .address import HubAddress
from .config import Upstream

# A kernel start on a busy 2-core machine can take several seconds; the server itself starts in ~2 s.
STARTUP_TIMEOUT_SECONDS = 60.0


class DemoUnavailable(Exception):
    """The demo server cannot start; the message says which package to install or what went wrong."""


@dataclass(frozen=True)
class DemoServer:
    """A running Jupyter server; ``stop()`` ends it and removes every file it made."""

    url: str
    username: str
    token: str
    ca_file: Path
    tls_name: str
    root_dir: Path
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def base_url(self) -> str:
        return HubAddress(URL(self.url), user=self.username).server_url

    def upstream(self) -> Upstream:
        """Where the proxy finds this server, in place of the hub settings."""
        return Upstream(url=URL(self.url), tls_name=self.tls_name, ca_file=self.ca_file, token=self.token,
                        username=self.username)

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL to the server's own process group."""
        terminate(self.process, timeout=10)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # kernels left behind, if any
        except ProcessLookupError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def terminate(process: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM, so the process can clean up; SIGKILL if it still runs after ``timeout`` seconds. The exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What the demo runs; all are in requirements-demo.txt.
_DEMO_MODULES = ("jupyter_server", "ipykernel", "trustme")


# Where / leads, as on a hub's single-user server: JupyterLab when it is installed (jupyterhub.singleuser picks it).
_DEFAULT_PAGE = ("--ServerApp.default_url=/lab",) if importlib.util.find_spec("jupyterlab") else ()


def _check_installed() -> None:
    missing = [m for m in _DEMO_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise DemoUnavailable(f"The demo needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                              f"not installed: run  {sys.executable} -m pip install \".[demo]\"  in the "
                              "jupyter-dev-proxy folder (or give the hub's address to use your hub instead).")


def _throwaway_tls(workdir: Path, tls_name: str) -> tuple[Path, Path, Path]:
    import trustme  # only the demo needs it (requirements-demo.txt)
    ca = trustme.CA()
    cert = ca.issue_cert(tls_name, "127.0.0.1", "localhost")
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


def _wait_until_ready(server: DemoServer, log_file: Path) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.check_hostname = False  # the server is reached by IP here; the proxy checks the name
    request = urllib.request.Request(server.base_url + "api/status",
                                     headers={"Authorization": f"token {server.token}"})
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise DemoUnavailable(f"The Jupyter server exited at startup:\n{log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise DemoUnavailable(f"The Jupyter server did not answer within {STARTUP_TIMEOUT_SECONDS:.0f} s:\n"
                          f"{log_file.read_text()[-2000:]}")


# A free port can be taken by another program between the proxy finding it and the server binding it (tests run
# in parallel workers): the start is tried again on another port this many times.
_PORT_TRIES = 3


def start_demo_server(username: str, tls_name: str = "jupyterhub", root_dir: Path | None = None,
                      extra_args: tuple[str, ...] = ()) -> DemoServer:
    """Start ``jupyter server`` with ipykernel at ``/user/<username>/`` on a free port; wait until it answers."""
    _check_installed()
    for attempt in range(_PORT_TRIES):
        try:
            return _start_on_a_free_port(username, tls_name, root_dir, extra_args)
        except DemoUnavailable as exc:
            if "is not available" not in str(exc) or attempt == _PORT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _start_on_a_free_port(username: str, tls_name: str, root_dir: Path | None,
                          extra_args: tuple[str, ...]) -> DemoServer:
    workdir = Path(tempfile.mkdtemp(prefix="jupyter-dev-proxy-demo-"))
    try:
        ca_file, cert_file, key_file = _throwaway_tls(workdir, tls_name)
        root = root_dir or workdir / "notebooks"
        root.mkdir(parents=True, exist_ok=True)
        token, port = secrets.token_hex(24), free_port()
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(workdir / "config"), "JUPYTER_DATA_DIR":
               str(workdir / "data"), "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
               "IPYTHONDIR": str(workdir / "ipython"), "JUPYTER_PLATFORM_DIRS": "1",
               "JUPYTER_TOKEN": token}  # in the environment, not argv, where any user could read it
        log_file = workdir / "server.log"
        args = [
            sys.executable, "-m", "jupyter_server", "--no-browser",
            f"--ServerApp.base_url={HubAddress(URL(), user=username).server_prefix}", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
            f"--ServerApp.certfile={cert_file}", f"--ServerApp.keyfile={key_file}",
            *(["--allow-root"] if os.geteuid() == 0 else []), *_DEFAULT_PAGE, *extra_args,
        ]
        with log_file.open("wb") as log:
            process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = DemoServer(url=f"https://127.0.0.1:{port}", username=username, token=token, ca_file=ca_file,
                            tls_name=tls_name, root_dir=root, process=process, workdir=workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        _wait_until_ready(server, log_file)
    except BaseException:
        server.stop()
        raise
    return server
