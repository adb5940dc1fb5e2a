"""Real network servers between the proxy and a hub: a forward proxy, an access gateway, a name-resolving proxy.

``start_tinyproxy`` and ``start_nginx_gateway`` run Debian's own daemons (``apt-get install -y
--no-install-recommends tinyproxy nginx``), in the foreground in their own session, on a free port of 127.0.0.1,
with their config, logs and temp files in a temp dir; ``stop()`` ends them by PID and removes that dir.
``ResolvingConnectProxy`` is a CONNECT proxy of our own, in-process, for what tinyproxy cannot show: a hub name
that only the proxy can resolve, and every Proxy-Authorization it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import trustme
from aiohttp.test_utils import BaseTestServer

from jupyter_dev_proxy.demo import free_port, terminate

START_SECONDS = 15.0  # both daemons listen within ~50 ms
STOP_SECONDS = 10.0  # tinyproxy takes ~1 s to notice SIGTERM (its poll timeout); nginx is immediate

GATEWAY_TLS_NAMES = ("gateway.test", "127.0.0.1", "localhost")
CLIENT_IDENTITY = "ide-user@example.org"

# What a tinyproxy config line takes unquoted (BasicAuth has no quoting).
_CONFIG_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_HEADER_VALUE_SAFE = re.compile(r"[A-Za-z0-9._+/=:-][A-Za-z0-9 ._+/=:-]*")


def find_program(name: str) -> str | None:
    """``name`` on PATH, else in /usr/sbin, where Debian puts nginx and which is not on a normal user's PATH."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


def real_servers_required() -> bool:
    """In CI a test that needs a real server fails when it is missing, instead of being skipped: CI set to anything
    but empty, "0" or "false" (CI services set "true", "1" or their name)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def missing_programs(*names: str) -> str | None:
    """Why these daemons cannot run here (with the command that installs them), or None when they can."""
    missing = [name for name in names if find_program(name) is None]
    if not missing:
        return None
    return f"{' and '.join(missing)} not installed (apt-get install -y --no-install-recommends {' '.join(missing)})"


# -- tinyproxy ------------------------------------------------------------------------------------------------------

# Logged (at level Connect and above) for every request, before tinyproxy checks the credentials.
_CONNECT_REQUEST = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/")

# No ConnectPort line: CONNECT may reach any port (one ConnectPort line would allow only the listed ports, and the
# tests' hubs listen on random high ports). No Allow line: any client may use it; it listens on 127.0.0.1 only.
# No User/Group: as root tinyproxy warns "You SHOULD set a UserName" and stays root, which a throwaway daemon
# whose log is in a root-only temp dir needs.
_TINYPROXY_CONF = """\
Listen 127.0.0.1
Port {port}
LogFile "{log}"
LogLevel Info
"""


@dataclass
class ForwardProxy:
    """tinyproxy running; ``url`` carries the credentials it requires, if any."""

    url: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def log_file(self) -> Path:
        return self.workdir / "tinyproxy.log"

    def connects(self) -> list[str]:
        """Every CONNECT target ("host:port") asked of it so far, in order, refused ones (407, 401) included."""
        return _CONNECT_REQUEST.findall(self.log_file.read_bytes().decode(errors="replace"))

    def log_tail(self) -> str:
        return _tail(self.log_file, self.workdir / "stderr.log")

    def stop(self) -> None:
        terminate(self.process, timeout=STOP_SECONDS)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_tinyproxy(user: str | None = None, password: str | None = None) -> ForwardProxy:
    """Start tinyproxy, requiring Basic credentials if given; return once it accepts connections.

    tinyproxy answers a CONNECT without credentials 407 (Proxy-Authenticate: Basic realm="Tinyproxy"), one with
    wrong credentials 401 (WWW-Authenticate, not Proxy-Authenticate), and one to a closed port or unknown host
    500 "Unable to connect".
    """
    if (user is None) != (password is None):
        raise ValueError("give both user and password, or neither")
    for value in (user, password):
        if value is not None and not _CONFIG_SAFE.fullmatch(value):
            raise ValueError(f"{value!r}: use letters, digits and ._~- only (tinyproxy's config has no quoting)")
    program = find_program("tinyproxy")
    if program is None:
        raise RuntimeError(missing_programs("tinyproxy"))
    workdir = Path(tempfile.mkdtemp(prefix="jupyter-dev-proxy-tinyproxy-"))
    port = free_port()
    config = _TINYPROXY_CONF.format(port=port, log=workdir / "tinyproxy.log")
    if user is not None:
        config += f"BasicAuth {user} {password}\n"
    (workdir / "tinyproxy.conf").write_text(config)
    credentials = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
    with (workdir / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen([program, "-d", "-c", str(workdir / "tinyproxy.conf")], cwd=workdir,
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    proxy = ForwardProxy(url=f"http://{credentials}127.0.0.1:{port}", port=port, workdir=workdir, process=process)
    try:
        _wait_for_port(port, process, "tinyproxy", proxy.log_tail)
    except BaseException:
        proxy.stop()
        raise
    return proxy


# -- nginx ----------------------------------------------------------------------------------------------------------

# Every path nginx writes is in the prefix (the compiled-in ones are under /var/lib/nginx and /run). As root the
# workers run as root too: the default, nobody, could not enter the root-only temp dir.
# ssl_verify_client on: a client without a certificate completes the TLS handshake and is answered 400 "No
# required SSL certificate was sent" (one from another CA: 400 "The SSL certificate error"); nginx checks that
# before the header rule below, whose refusal is 403.
# The Host header goes through as the client sent it ($http_host keeps the port, $host would not), so a
# jupyter_server behind the gateway sees the Host that a websocket's Origin names.
_NGINX_CONF = """\
{user_line}worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;

events {{
    worker_connections 512;
}}

http {{
    log_format gateway '$remote_addr "$request" $status client_cert=$ssl_client_verify '
                       '"$ssl_client_s_dn" host="$http_host" upgrade="$http_upgrade" upstream=$upstream_status';
    access_log {workdir}/access.log gateway;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" close;
    }}
    map $http_{header_variable} $gateway_header_ok {{
        default 0;
        "{header_value}" 1;
    }}

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name gateway.test;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {workdir}/gateway.pem;
        ssl_certificate_key {workdir}/gateway.key;
        ssl_client_certificate {client_ca_file};
        ssl_verify_client on;

        client_max_body_size 0;
        default_type application/json;
        if ($gateway_header_ok = 0) {{
            return 403 '{{"message": "refused by the access gateway (nginx): no valid {header_name} header"}}\\n';
        }}

        location / {{
            proxy_pass {upstream_url};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1d;
            proxy_send_timeout 1d;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {upstream_ca};
            proxy_ssl_name {upstream_tls_name};
            proxy_ssl_server_name on;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class ClientCert:
    """A client certificate as an IDE user holds it: separate PEM files, and both in one file."""

    cert_file: Path
    key_file: Path
    combined_file: Path


def write_client_cert(client_ca: trustme.CA, directory: Path, identity: str = CLIENT_IDENTITY) -> ClientCert:
    """Issue a client certificate for ``identity`` and write it to ``directory`` (cert.pem, key.pem, combined.pem)."""
    issued = client_ca.issue_cert(identity)
    cert_file, key_file, combined_file = directory / "cert.pem", directory / "key.pem", directory / "combined.pem"
    chain = b"".join(pem.bytes() for pem in issued.cert_chain_pems)
    cert_file.write_bytes(chain)
    key_file.write_bytes(issued.private_key_pem.bytes())
    combined_file.write_bytes(chain + issued.private_key_pem.bytes())
    return ClientCert(cert_file=cert_file, key_file=key_file, combined_file=combined_file)


@dataclass
class Gateway:
    """nginx running as an access gateway in front of a hub: client certificate and a header, or no entry."""

    url: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    def log_tail(self) -> str:
        return _tail(self.access_log, self.error_log)

    async def access_logged(self, fragment: str, timeout: float = 10.0) -> str:
        """The access log once it holds ``fragment``: nginx writes a websocket's line only when it closes, which
        may be a moment after the client side saw its close."""
        deadline = asyncio.get_running_loop().time() + timeout
        while fragment not in (log := self.access_log.read_text()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{fragment!r} not in the gateway's access log after {timeout} s:\n{log}")
            await asyncio.sleep(0.05)
        return log

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL to its process group: workers left behind, if any."""
        terminate(self.process, timeout=STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_nginx_gateway(upstream_url: str, upstream_ca: Path, server_ca: trustme.CA, client_ca_file: Path,
                        required_header: tuple[str, str], upstream_tls_name: str = "jupyterhub") -> Gateway:
    """Start nginx at https://127.0.0.1:<port> in front of ``upstream_url`` (no path); return once it listens.

    Its certificate is from ``server_ca`` for GATEWAY_TLS_NAMES. It lets through only clients with a certificate
    from ``client_ca_file`` that send ``required_header``, and checks the upstream's certificate against
    ``upstream_ca`` for ``upstream_tls_name``, as a gateway inside a cluster would: by name, because nginx
    matches only DNS names there (never an IP address in the certificate; "127.0.0.1" gives 502).
    """
    header_name, header_value = required_header
    if not re.fullmatch(r"[A-Za-z0-9-]+", header_name) or not _HEADER_VALUE_SAFE.fullmatch(header_value):
        raise ValueError(f"{required_header!r}: use a plain header name and a value of letters, digits, ._+/=:- "
                         "and spaces (it is written into nginx's config)")
    upstream = urlsplit(upstream_url)
    if upstream.scheme != "https" or upstream.path.strip("/") or upstream.query:
        raise ValueError(f"{upstream_url!r}: give https://host:port without a path, so nginx passes paths as sent")
    program = find_program("nginx")
    if program is None:
        raise RuntimeError(missing_programs("nginx"))
    workdir = Path(tempfile.mkdtemp(prefix="jupyter-dev-proxy-nginx-"))
    issued = server_ca.issue_cert(*GATEWAY_TLS_NAMES)
    (workdir / "gateway.pem").write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(workdir / "gateway.key"))
    port = free_port()
    (workdir / "nginx.conf").write_text(_NGINX_CONF.format(
        user_line="user root;\n" if os.geteuid() == 0 else "", workdir=workdir, port=port,
        client_ca_file=client_ca_file, header_variable=header_name.lower().replace("-", "_"),
        header_value=header_value, header_name=header_name, upstream_url=f"https://{upstream.netloc}",
        upstream_ca=upstream_ca, upstream_tls_name=upstream_tls_name,
    ))
    with (workdir / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen([program, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                    "-e", str(workdir / "error.log"), "-g", "daemon off;"], cwd=workdir,
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    gateway = Gateway(url=f"https://127.0.0.1:{port}", port=port, workdir=workdir, process=process)
    try:
        _wait_for_port(port, process, "nginx", lambda: _tail(workdir / "stderr.log", gateway.error_log))
    except BaseException:
        gateway.stop()
        raise
    return gateway


# -- a CONNECT proxy of our own -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeenConnect:
    target: str  # "host:port" as the client wrote it
    proxy_authorization: str | None


@dataclass
class ResolvingConnectProxy:
    """An HTTP CONNECT proxy that alone knows the addresses of the made-up names in ``hosts``.

    A client that reaches such a name went through this proxy and let it resolve the name. Any other target,
    IP literals included, is answered 502. With ``credentials`` it wants ``Proxy-Authorization: Basic`` (else 407);
    with ``refuse_status`` set (it may change while running) it answers every CONNECT with that status.
    Serve it from the test's event loop (``await start()`` ... ``await close()``) or, for a proxy under test in
    a subprocess, from a thread of its own (``with run_in_thread():``).
    """

    hosts: Mapping[str, str]
    credentials: tuple[str, str] | None = None
    refuse_status: int | None = None
    realm: str = "resolving test proxy"
    seen: list[SeenConnect] = field(default_factory=list, init=False)
    port: int = field(default=0, init=False)
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)
    _connections: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    @property
    def url(self) -> str:
        """Where it listens, with its credentials if it wants some."""
        if self.credentials is None:
            return f"http://127.0.0.1:{self.port}"
        user, password = (quote(part, safe="") for part in self.credentials)
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[str]:
        return [connect.target for connect in self.seen]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and cut every tunnel still open (a websocket through it would otherwise hold on)."""
        if self._server is None:
            return
        self._server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[ResolvingConnectProxy]:
        """Serve from an event loop in a thread for the duration of the ``with`` block."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="resolving-connect-proxy", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=START_SECONDS)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout=STOP_SECONDS)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=STOP_SECONDS)
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.rstrip("\r\n").split("\r\n")
        method, _, rest = request_line.partition(" ")
        target = rest.partition(" ")[0]
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in header_lines)}
        if method != "CONNECT":
            return await _answer(writer, 405, "this test proxy only tunnels (CONNECT)", {"Allow": "CONNECT"})
        authorization = headers.get("proxy-authorization")
        self.seen.append(SeenConnect(target=target, proxy_authorization=authorization))
        if self.refuse_status is not None:
            return await _answer(writer, self.refuse_status, "this test proxy refuses every CONNECT")
        if self.credentials is not None and not _is_basic(authorization, self.credentials):
            return await _answer(writer, 407, "proxy credentials missing or wrong",
                                 {"Proxy-Authenticate": f'Basic realm="{self.realm}"'})
        host, _, port = target.rpartition(":")
        address = self.hosts.get(host.lower())
        if address is None or not port.isdigit():
            return await _answer(writer, 502, f"this test proxy cannot resolve {host!r}")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(address, int(port))
        except OSError as error:
            return await _answer(writer, 502, f"this test proxy cannot reach {address}:{port}: {error}")
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()


def _is_basic(authorization: str | None, credentials: tuple[str, str]) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    expected = base64.b64encode(":".join(credentials).encode()).decode()
    return scheme.lower() == "basic" and token.strip() == expected


async def _answer(writer: asyncio.StreamWriter, status: int, message: str,
                  headers: Mapping[str, str] | None = None) -> None:
    body = f"{message}\n".encode()
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{name}: {value}" for name, value in (headers or {}).items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (half-close), as a TCP tunnel does."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def wait_until_idle(server: BaseTestServer, timeout: float = 5.0) -> None:
    """Wait until no connection to an aiohttp test server is open.

    A proxy closes its side of a tunnel a few ms after the client closes its own; a test server stopped before that
    cuts a TLS connection mid-shutdown, and Python warns of an unclosed transport in whichever test runs next.
    """
    assert server.runner is not None
    deadline = time.monotonic() + timeout
    while server.runner.server is not None and server.runner.server.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


# -- shared ---------------------------------------------------------------------------------------------------------

def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log_tail: Callable[[], str]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at startup (status {process.returncode}):\n{log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_SECONDS:.0f} s:\n{log_tail()}")


def _tail(*logs: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
