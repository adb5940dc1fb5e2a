"""Benchmark jupyter-dev-proxy against a direct connection (and nginx / configurable-http-proxy if installed).

    python bench/run.py            # full run: 5 interleaved rounds, ~10-15 minutes
    python bench/run.py --quick    # 2 short rounds, smaller websocket/memory phase, under ~2 minutes
    python bench/run.py --quick --baseline 7915534   # and the proxy of that commit beside this tree's, same run

Starts a fast synthetic upstream (plain HTTP and TLS from a throwaway CA), a real jupyter_server + ipykernel
(TLS), the proxy (``python proxy.py``, configured by environment variables as a user would) in front of
each, and nginx / configurable-http-proxy when they are found. Everything listens on 127.0.0.1 with
ephemeral ports. The proxy (and nginx, CHP) are pinned to core 1; the upstreams and the load generators to
core 0 (``taskset``, when there are two cores). Candidates run interleaved in every round (order rotated),
figures are medians over rounds, and each is shown as a ratio to the direct connection of the same run.
``--baseline REV`` adds the proxy of another commit as one more candidate (``proxy@<short hash>``): its tree
(``git archive``) in the run's temp dir, its ``proxy.py`` run with this virtualenv, so before and after come from
one run, each a ratio to the same direct figures. Prints one Markdown table and writes JSON to bench/results/.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from bench.processes import CLEANUPS, LineReader, cleanup, exit_on_signal, spawn, stop  # noqa: E402

MiB = 1024 * 1024
USER = "alice"
PREFIX = f"/user/{USER}/"
TLS_NAME = "jupyterhub"
PROXY_CORE, REST_CORE = 1, 0

MODES: dict[str, dict[str, Any]] = {
    "quick": {"rounds": 2, "wrk_s": 1, "download": 256 * MiB, "upload": 64 * MiB, "ws_rtt_n": 2000,
              "ws_pipe_n": 6000, "ws_big_n": 64, "ks_s": 1, "exec_n": 15, "ws_many": 2000,
              "ws_many_tls": False, "flat_all": False, "memory_all": False, "startups": 2, "deadline_s": 240},
    "full": {"rounds": 5, "wrk_s": 3, "download": 256 * MiB, "upload": 64 * MiB, "ws_rtt_n": 5000,
             "ws_pipe_n": 30000, "ws_big_n": 256, "ks_s": 2, "exec_n": 30, "ws_many": 2000,
             "ws_many_tls": True, "flat_all": True, "memory_all": True, "startups": 5, "deadline_s": 1800},
}
FLAT_BYTES = 1024 * MiB

# ------------------------------------------------------------------------------------------------ processes

_PIN = False


def pinned(cmd: list[str], core: int) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if _PIN else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        with contextlib.suppress(OSError, http.client.HTTPException, ssl.SSLError):
            if check():
                return
        time.sleep(0.005)
    raise RuntimeError(f"{what}: not ready within {timeout:.0f} s")


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return pids


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    return sum(_status_kib(p, "VmRSS") for p in tree_pids(pid)) / 1024


def hwm_mib(pid: int) -> float:
    return sum(_status_kib(p, "VmHWM") for p in tree_pids(pid)) / 1024


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS to the current RSS (Linux ≥ 4.0: ``echo 5 > /proc/PID/clear_refs``)."""
    ok = True
    for p in tree_pids(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def cpu_s(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------- load generator

class LoadGen:
    """bench/loadgen.py in its own process on the non-proxy core: one JSON command → one JSON result."""

    def __init__(self) -> None:
        self.proc = spawn(pinned([sys.executable, str(BENCH / "loadgen.py")], REST_CORE),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.out = LineReader(self.proc.stdout)

    def __call__(self, timeout: float = 120, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.out.readline(timeout)
        if line is None:
            raise RuntimeError(f"load generator: no answer to {cmd['op']} within {timeout:.0f} s")
        if not line:
            raise RuntimeError("load generator exited")
        result = json.loads(line)
        if not result.pop("ok"):
            raise RuntimeError(f"{cmd['op']} {cmd.get('url', '')}: {result['error']}")
        return result


# --------------------------------------------------------------------------------------------- upstreams

@dataclass
class Upstream:
    name: str             # "http", "tls" (synthetic) or "jupyter"
    origin: str           # scheme://127.0.0.1:port
    token: str
    ca: str | None = None
    pid: int | None = None


def throwaway_tls(workdir: Path) -> tuple[str, str, str]:
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert(TLS_NAME, "127.0.0.1", "localhost")
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return str(paths[0]), str(paths[1]), str(paths[2])


def start_synthetic(workdir: Path) -> tuple[Upstream, Upstream]:
    ca, cert, key = throwaway_tls(workdir)
    token = secrets.token_hex(16)
    proc = spawn(pinned([sys.executable, str(BENCH / "upstream.py"), "--token", token, "--user", USER,
                         "--cert", cert, "--key", key], REST_CORE),
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = LineReader(proc.stdout).readline(30)
    if not line:
        raise RuntimeError("synthetic upstream did not start")
    ports = json.loads(line)
    return (Upstream("http", f"http://127.0.0.1:{ports['http']}", token, None, proc.pid),
            Upstream("tls", f"https://127.0.0.1:{ports['https']}", token, ca, proc.pid))


def start_jupyter() -> Upstream:
    from jupyter_dev_proxy.demo import start_demo_server
    server = start_demo_server(USER, tls_name=TLS_NAME)
    CLEANUPS.append(server.stop)
    return Upstream("jupyter", server.url, server.token, str(server.ca_file), server.process.pid)


# -------------------------------------------------------------------------------------------- candidates

@dataclass
class Candidate:
    kind: str             # direct, proxy, proxy@<commit> (a --baseline), nginx, chp
    upstream: Upstream
    base: str             # client URL that maps to the upstream's /user/alice/
    token: str            # what the client sends as "Authorization: token ..."
    proc: subprocess.Popen[Any] | None = None
    startup_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.upstream.name}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def ca(self) -> str | None:
        return self.upstream.ca if self.kind == "direct" else None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


def _first_answer(url: str, token: str) -> bool:
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=5)
    try:
        conn.request("GET", "/" + rest, headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    finally:
        conn.close()


def start_proxy(up: Upstream, workdir: Path, probe: str, argv: list[str] | None = None, kind: str = "proxy",
                tree: Path = REPO) -> Candidate:
    """``python proxy.py`` of ``tree`` (this checkout, or a --baseline's) configured by environment variables
    (``argv`` replaces the command, for profiling)."""
    local = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JUPYTERHUB"))}
    env.update(JUPYTERHUB_URL=up.origin, JUPYTER_USERNAME=USER, JUPYTERHUB_API_TOKEN=up.token,
               JUPYTER_PROXY_TOKEN=local, JUPYTER_PROXY_PORT="0", JUPYTER_PROXY_IP_OR_NAME="127.0.0.1",
               JUPYTER_PROXY_LOG_LEVEL="warning")
    if up.ca:
        env.update(JUPYTER_CLUSTER_CA_CERT=up.ca, JUPYTER_SERVER_NAME=TLS_NAME)
    log_path = workdir / f"{kind.replace('@', '-')}-{up.name}.log"
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = spawn(pinned(argv or [sys.executable, str(tree / "proxy.py")], PROXY_CORE), cwd=workdir, env=env,
                     stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
    out = LineReader(proc.stdout)
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = out.readline(max(0.0, deadline - time.monotonic()))
        if not line:
            break
        match = re.search(r"Authorization URL with token for IDE: http://127\.0\.0\.1:(\d+)/", line)
        port = int(match.group(1)) if match else None
    if port is None:
        stop(proc)
        raise RuntimeError(f"{kind} did not print its URL; log: {log_path.read_text()[-2000:]}")
    cand = Candidate(kind, up, f"http://127.0.0.1:{port}/", local, proc)
    wait_for(lambda: _first_answer(cand.url(probe), local), 30, kind, proc)
    cand.startup_s = time.perf_counter() - t0
    return cand


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    client_max_body_size 0;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_http_version 1.1;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream hub {{ server 127.0.0.1:{up_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass {scheme}://hub{prefix};
            proxy_set_header Host 127.0.0.1:{up_port};
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            {tls}
        }}
    }}
}}
"""


def start_naive(up: Upstream, workdir: Path, probe: str, argv: list[str] | None = None) -> Candidate:
    """bench/naive_relay.py: the yardstick of issue 19, configured by flags, pinned like the proxy. It checks no
    token, so the client's is a throwaway that the relay replaces with the hub's. (``argv`` replaces the command
    before the flags, for profiling.)"""
    cmd = [*(argv or [sys.executable, str(BENCH / "naive_relay.py")]), "--upstream", up.origin, "--user", USER,
           "--token", up.token]
    if up.ca:
        cmd += ["--ca", up.ca, "--server-name", TLS_NAME]
    t0 = time.perf_counter()
    with open(workdir / f"naive-{up.name}.log", "ab") as log:
        proc = spawn(pinned(cmd, PROXY_CORE), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                     text=True)
    line = LineReader(proc.stdout).readline(30) or ""
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", line)
    if not match:
        stop(proc)
        raise RuntimeError(f"naive relay did not start: {(workdir / f'naive-{up.name}.log').read_text()[-1500:]}")
    local = secrets.token_hex(16)
    cand = Candidate("naive", up, match.group(1), local, proc)
    wait_for(lambda: _first_answer(cand.url(probe), local), 30, "naive relay", proc)
    cand.startup_s = time.perf_counter() - t0
    return cand


def start_nginx(nginx: str, up: Upstream, workdir: Path, probe: str) -> Candidate:
    d = Path(tempfile.mkdtemp(prefix=f"nginx-{up.name}-", dir=workdir))
    port = free_port()
    scheme, _, hostport = up.origin.partition("://")
    tls = ""
    if up.ca:
        tls = (f"proxy_ssl_verify on; proxy_ssl_trusted_certificate {up.ca}; proxy_ssl_name {TLS_NAME}; "
               "proxy_ssl_server_name on; proxy_ssl_session_reuse on;")
    conf = NGINX_CONF.format(dir=d, port=port, up_port=hostport.rsplit(":", 1)[1], scheme=scheme,
                             prefix=PREFIX, tls=tls, user="user root;" if os.geteuid() == 0 else "")
    (d / "nginx.conf").write_text(conf)
    t0 = time.perf_counter()
    proc = spawn(pinned([nginx, "-c", str(d / "nginx.conf"), "-p", str(d), "-e", str(d / "error.log")],
                        PROXY_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 stdin=subprocess.DEVNULL)
    cand = Candidate("nginx", up, f"http://127.0.0.1:{port}/", up.token, proc)
    try:
        wait_for(lambda: _first_answer(cand.url(probe), up.token), 30, "nginx", proc)
    except RuntimeError:
        stop(proc)
        raise RuntimeError(f"nginx did not start: {(d / 'error.log').read_text()[-1500:]}") from None
    cand.startup_s = time.perf_counter() - t0
    return cand


def start_chp(chp: str, up: Upstream, workdir: Path, probe: str) -> Candidate:
    port, api_port = free_port(), free_port()
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16)}
    if up.ca:
        env["NODE_EXTRA_CA_CERTS"] = up.ca
    t0 = time.perf_counter()
    with open(workdir / f"chp-{up.name}.log", "ab") as log:
        proc = spawn(pinned([chp, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
                             "--api-port", str(api_port), "--default-target", up.origin, "--log-level", "warn"],
                            PROXY_CORE), env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    # CHP forwards paths unchanged: the client asks for /user/alice/... itself.
    cand = Candidate("chp", up, f"http://127.0.0.1:{port}{PREFIX}", up.token, proc)
    wait_for(lambda: _first_answer(cand.url(probe), up.token), 30, "configurable-http-proxy", proc)
    cand.startup_s = time.perf_counter() - t0
    return cand


def direct(up: Upstream) -> Candidate:
    return Candidate("direct", up, up.origin + PREFIX, up.token)


def is_proxy(kind: str) -> bool:
    """This checkout's proxy or a --baseline's."""
    return kind == "proxy" or kind.startswith("proxy@")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def checkout_baseline(rev: str, workdir: Path) -> tuple[str, str, Path]:
    """(candidate kind ``proxy@<short hash>``, full hash, the tree of ``rev``): ``git archive`` into the run's
    temp dir, which goes with it, rather than ``git worktree add``, which would leave an entry in the
    repository if the run were killed."""
    try:
        full = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--baseline {rev}: not a commit of {REPO}") from None
    tree = workdir / f"baseline-{full[:12]}"
    tree.mkdir()
    with subprocess.Popen(["git", "-C", str(REPO), "archive", full], stdout=subprocess.PIPE) as archive:
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True, timeout=120)
    if archive.returncode != 0 or not (tree / "proxy.py").is_file():
        raise RuntimeError(f"--baseline {rev}: no proxy.py in {full[:12]}")
    return f"proxy@{_git('rev-parse', '--short=7', full)}", full, tree


def this_commit() -> str:
    """HEAD's hash, with ``+changes`` when the tree the run measures differs from it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "HEAD") + ("+changes" if dirty else "")
    return "unknown"


def page_token(cand: Candidate) -> str:
    """Which token the /lab page reaches the client with: "hub" (the upstream's), "client" (the one the client
    sent, the proxy's own for a proxy), or "none". The check that the page gives the swap work (or not)."""
    ctx = ssl.create_default_context(cafile=cand.ca) if cand.ca else None
    host, _, rest = cand.base.partition("://")[2].partition("/")
    conn = (http.client.HTTPSConnection(host, timeout=10, context=ctx) if cand.base.startswith("https")
            else http.client.HTTPConnection(host, timeout=10))
    try:
        conn.request("GET", f"/{rest}lab", headers=cand.headers())
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET lab through {cand.key}: HTTP {response.status}")
    hub, client = cand.upstream.token.encode() in body, cand.token.encode() in body
    return "hub" if hub else "client" if client else "none"


# ---------------------------------------------------------------------------------------------- measuring

def _wrk_seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_tool(cmd: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout


def wrk(cand: Candidate, path: str, conns: int, seconds: int) -> dict[str, Any]:
    cmd = pinned(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s",
                  "-H", f"Authorization: token {cand.token}", cand.url(path)], REST_CORE)
    out = run_tool(cmd, seconds + 30)
    res: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        res[f"p{pct}_us"] = _wrk_seconds(m.group(1)) * 1e6 if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    if res["errors"]:
        raise RuntimeError(f"wrk against {cand.key}: {res['errors']} errors\n{out}")
    return res


def curl_transfer(cand: Candidate, path: str, upload_file: str | None, size: int, max_s: float) -> dict[str, Any]:
    cmd = ["curl", "-sS", "--max-time", str(max_s), "-H", f"Authorization: token {cand.token}", "-H", "Expect:"]
    if cand.ca:
        cmd += ["--cacert", cand.ca]
    if upload_file:
        cmd += ["-T", upload_file, "-o", "-", "-w", "\n%{http_code} %{size_upload} %{time_total}"]
    else:
        cmd += ["-o", "/dev/null", "-w", "\n%{http_code} %{size_download} %{time_total}"]
    out = run_tool(pinned(cmd + [cand.url(path)], REST_CORE), max_s + 10)
    body, _, last = out.rpartition("\n")
    code, nbytes, seconds = last.split()
    if code != "200" or int(float(nbytes)) != size:
        raise RuntimeError(f"curl {cand.key} {path}: HTTP {code}, {nbytes} bytes of {size}")
    if upload_file and json.loads(body).get("received") != size:
        raise RuntimeError(f"curl upload {cand.key}: upstream says {body!r}")
    return {"mib_s": size / MiB / float(seconds), "seconds": float(seconds)}


@dataclass(frozen=True)
class Transfer:
    mib_s: float
    peak_mib: float | None = None   # peak RSS of the middle process during the transfer
    cpu_s: float | None = None      # CPU time (user + system) of the middle process during the transfer


class Bench:
    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any], workdir: Path, skip: set[str]) -> None:
        self.args, self.cfg, self.workdir, self.skip = args, cfg, workdir, skip
        self.lg = LoadGen()
        self.samples: dict[str, dict[str, list[float]]] = {}   # metric -> candidate key -> per-round values
        self.single: dict[str, dict[str, Any]] = {}            # metric -> candidate key -> value (once)
        self.tools: dict[str, str] = {}
        self.deadline = time.monotonic() + cfg["deadline_s"]
        self.files: dict[int, str] = {}
        self.exec_samples: dict[str, list[float]] = {}

    def add(self, metric: str, cand: Candidate, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(cand.key, []).append(value)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"the run exceeded its {self.cfg['deadline_s']} s bound")

    def sparse_file(self, size: int) -> str:
        """An upload body that costs neither disk nor page cache: a sparse file of zeros."""
        if size not in self.files:
            path = self.workdir / f"upload-{size}.bin"
            with open(path, "wb") as f:
                f.truncate(size)
            with open(path, "rb") as f:  # the first read fills the page cache; it must not be timed
                while f.read(8 * MiB):
                    pass
            self.files[size] = str(path)
        return self.files[size]

    # -- HTTP
    def get_small(self, cand: Candidate) -> None:
        self._get(cand, "api/status", "get")

    def get_page(self, cand: Candidate) -> None:
        """The ~5 KB /lab page with the token in it: what a proxy that swaps the token has to change."""
        self._get(cand, "lab", "page")

    def _get(self, cand: Candidate, path: str, metric: str) -> None:
        """p50/p99 at c=1 and req/s at c=64 of GET ``path``, as ``<metric>_c1_p50_us`` and so on."""
        s = self.cfg["wrk_s"]
        if shutil.which("wrk"):
            self.tools["small GET"] = "wrk"
            cpu0 = cpu_s(cand.pid) if cand.pid else 0.0
            lat = wrk(cand, path, 1, s)
            if cand.pid:
                self.add(f"{metric}_c1_cpu_us_per_req", cand, (cpu_s(cand.pid) - cpu0) / (lat["rps"] * s) * 1e6)
            cpu0 = cpu_s(cand.pid) if cand.pid else 0.0
            tput = wrk(cand, path, 64, s)
            if cand.pid:
                self.add(f"{metric}_c64_cpu_us_per_req", cand,
                         (cpu_s(cand.pid) - cpu0) / (tput["rps"] * s) * 1e6)
        else:
            self.tools["small GET"] = "aiohttp (install wrk for a lighter client)"
            lat = self.lg(op="get_latency", url=cand.url(path), headers=cand.headers(), ca=cand.ca,
                          n=100000, max_s=s)
            tput = self.lg(op="get_throughput", url=cand.url(path), headers=cand.headers(), ca=cand.ca,
                           conc=64, duration=s)
        self.add(f"{metric}_c1_p50_us", cand, lat["p50_us"])
        self.add(f"{metric}_c1_p99_us", cand, lat["p99_us"])
        self.add(f"{metric}_c64_rps", cand, tput["rps"])

    def transfer(self, cand: Candidate, size: int, upload: bool, text: bool = False) -> Transfer:
        """A download of ``size`` bytes (``text``: as text/csv, which a proxy that swaps the token looks into;
        else octet-stream) or an upload, with what it cost the middle process."""
        if cand.pid:
            reset_hwm(cand.pid)
        cpu0 = cpu_s(cand.pid) if cand.pid else 0.0
        path = "api/contents/upload" if upload else f"files/{'text' if text else 'blob'}?bytes={size}"
        max_s = 60 + size / MiB / 20
        if shutil.which("curl"):
            self.tools["transfers"] = "curl"
            res = curl_transfer(cand, path, self.sparse_file(size) if upload else None, size, max_s)
        else:
            self.tools["transfers"] = "aiohttp"
            res = self.lg(op="upload" if upload else "download", url=cand.url(path), headers=cand.headers(),
                          ca=cand.ca, bytes=size, max_s=max_s, timeout=max_s + 10)
        if not cand.pid:
            return Transfer(res["mib_s"])
        return Transfer(res["mib_s"], hwm_mib(cand.pid), cpu_s(cand.pid) - cpu0)

    def transfers(self, cand: Candidate) -> None:
        self._record(cand, "download", self.transfer(cand, self.cfg["download"], upload=False))
        if "text" not in self.skip:
            text = self.transfer(cand, self.cfg["download"], upload=False, text=True)
            self._record(cand, "text_download", text)
        self._record(cand, "upload", self.transfer(cand, self.cfg["upload"], upload=True))

    def _record(self, cand: Candidate, metric: str, done: Transfer) -> None:
        self.add(f"{metric}_mib_s", cand, done.mib_s)
        if done.peak_mib is not None:
            self.add(f"{metric}_peak_rss_in_round_mib", cand, done.peak_mib)
        if done.cpu_s is not None:
            self.add(f"{metric}_cpu_s", cand, done.cpu_s)

    # -- websockets
    def websockets(self, cand: Candidate) -> None:
        url, headers, ca = cand.url("api/kernels/echo/channels"), cand.headers(), cand.ca
        rtt = self.lg(op="ws_rtt", url=url, size=1024, n=self.cfg["ws_rtt_n"], max_s=20, headers=headers, ca=ca)
        self.add("ws_rtt_p50_us", cand, rtt["p50_us"])
        self.add("ws_rtt_p99_us", cand, rtt["p99_us"])
        cpu0 = cpu_s(cand.pid) if cand.pid else 0.0
        pipe = self.lg(op="ws_pipelined", url=url, size=1024, count=self.cfg["ws_pipe_n"], max_s=20,
                       headers=headers, ca=ca)
        self.add("ws_pipe_1k_msgs_s", cand, pipe["msgs_s"])
        self._add_cpu_per_message("ws_pipe_1k_cpu_us_per_msg", cand, cpu0, pipe["messages"])
        cpu0 = cpu_s(cand.pid) if cand.pid else 0.0
        comm = self.lg(op="ws_pipelined", url=url, size=1024, count=self.cfg["ws_pipe_n"], max_s=20, kernel=True,
                       headers=headers, ca=ca)
        self.add("ws_pipe_1k_comm_msgs_s", cand, comm["msgs_s"])
        self._add_cpu_per_message("ws_pipe_1k_comm_cpu_us_per_msg", cand, cpu0, comm["messages"])
        big = self.lg(op="ws_pipelined", url=url, size=MiB, count=self.cfg["ws_big_n"], max_s=30,
                      headers=headers, ca=ca)
        self.add("ws_1m_mib_s", cand, big["mib_s"])

    def _add_cpu_per_message(self, metric: str, cand: Candidate, cpu0: float, echoes: int) -> None:
        """CPU of the middle since ``cpu0`` per message it relayed: each echo crossed it twice (there and back),
        so ``echoes`` plus the test's 10 warm-up echoes, ×2. The websocket's handshake and close are in it too
        (one each among thousands of messages)."""
        if cand.pid and echoes:
            self.add(metric, cand, (cpu_s(cand.pid) - cpu0) / (2 * (echoes + 10)) * 1e6)

    # -- real jupyter_server
    def kernelspecs(self, cand: Candidate) -> None:
        if shutil.which("wrk"):
            lat = wrk(cand, "api/kernelspecs", 1, self.cfg["ks_s"])
        else:
            lat = self.lg(op="get_latency", url=cand.url("api/kernelspecs"), headers=cand.headers(), ca=cand.ca,
                          n=100000, max_s=self.cfg["ks_s"])
        self.add("kernelspecs_p50_ms", cand, lat["p50_us"] / 1000)

    def execute(self, cands: list[Candidate], kernel_id: str) -> None:
        """All candidates at once, taking turns execution by execution (see loadgen.kernel_execute)."""
        targets = [{"url": c.url(f"api/kernels/{kernel_id}/channels"), "headers": c.headers(), "ca": c.ca}
                   for c in cands]
        ex = self.lg(op="kernel_execute", targets=targets, code="1+1", n=self.cfg["exec_n"], max_s=60,
                     timeout=120)
        for c, res in zip(cands, ex["targets"]):
            if res["results"] != ["2"]:
                raise RuntimeError(f"1+1 through {c.key} gave {res['results']}")
            self.add("execute_p50_ms", c, res["p50_us"] / 1000)
            self.add("execute_p99_ms", c, res["p99_us"] / 1000)
            self.exec_samples.setdefault(c.key, []).extend(x / 1000 for x in res["samples_us"])

    def execute_floor(self, cands: list[Candidate]) -> None:
        """p10 over every execution of every round: ipykernel answers either in ~10 ms or in ~45 ms, at
        random, so the p50 jumps between the two; the fast ones show what the path itself adds."""
        for c in cands:
            pool = sorted(self.exec_samples.get(c.key, []))
            if pool:
                self.add("execute_p10_ms", c, pool[len(pool) // 10])

    # -- once per middle candidate, on a fresh process
    def many_websockets(self, cand: Candidate) -> dict[str, Any]:
        url, n = cand.url("api/kernels/echo/channels"), self.cfg["ws_many"]
        self.lg(op="ws_rtt", url=url, size=1024, n=10, max_s=5, warmup=5, headers=cand.headers())
        time.sleep(0.5)
        before = rss_mib(cand.pid)  # type: ignore[arg-type]
        opened = self.lg(op="ws_open_many", url=url, n=n, conc=50, max_s=180, headers=cand.headers(), timeout=200)
        time.sleep(1.0)
        after = rss_mib(cand.pid)  # type: ignore[arg-type]
        check = self.lg(op="ws_check_close_all", max_s=120, timeout=150)
        return {"n": n, "opened": opened["opened"], "echoed_first": opened["echoed"],
                "echoed_second": check["echoed"], "errors": opened["first_errors"],
                "rss_before_mib": before, "rss_after_mib": after, "open_seconds": opened["seconds"],
                "kib_per_ws": (after - before) * 1024 / n}

    def memory(self, cand: Candidate, big: bool) -> dict[str, Any]:
        """Peak RSS of a fresh middle process during a download of the benchmark's size, then (``big``) of
        1 GiB down and 1 GiB up: flat means the peak does not grow with the body."""
        base = rss_mib(cand.pid)  # type: ignore[arg-type]
        download = self.transfer(cand, self.cfg["download"], upload=False)
        out: dict[str, Any] = {"rss_idle_mib": base, "peak_download_mib": download.peak_mib}
        if "text" not in self.skip:
            text = self.transfer(cand, self.cfg["download"], upload=False, text=True)
            out["peak_text_download_mib"] = text.peak_mib
        if big:
            down = self.transfer(cand, FLAT_BYTES, upload=False)
            up = self.transfer(cand, FLAT_BYTES, upload=True)
            out.update(peak_1g_download_mib=down.peak_mib, peak_1g_upload_mib=up.peak_mib,
                       download_1g_mib_s=down.mib_s, upload_1g_mib_s=up.mib_s)
        return out


# ------------------------------------------------------------------------------------------------ report

@dataclass(frozen=True)
class Row:
    metric: str
    label: str
    higher_better: bool
    target: str
    fmt: str = "{:.0f}"


ROWS = (
    Row("get_c1_p50_us", "small GET p50, c=1 (µs)", False, "≤ 4×"),
    Row("get_c1_p99_us", "small GET p99, c=1 (µs)", False, ""),
    Row("get_c64_rps", "small GET req/s, c=64", True, "≥ 0.40×"),
    Row("get_c1_cpu_us_per_req", "CPU of the middle per small GET, c=1 (µs)", False, ""),
    Row("get_c64_cpu_us_per_req", "CPU of the middle per small GET, c=64 (µs)", False, ""),
    Row("page_c1_p50_us", "~5 KB /lab page holding the token, p50, c=1 (µs)", False, ""),
    Row("page_c64_rps", "~5 KB /lab page holding the token, req/s, c=64", True, ""),
    Row("page_c64_cpu_us_per_req", "CPU of the middle per /lab page, c=64 (µs)", False, ""),
    Row("download_mib_s", "256 MiB download (MiB/s)", True, "≥ 0.5×"),
    Row("download_cpu_s", "CPU of the middle per 256 MiB download (s)", False, "", "{:.2f}"),
    Row("download_peak_rss_mib", "peak RSS during that download, fresh process (MiB)", False, "≤ 40 MiB",
        "{:.1f}"),
    Row("text_download_mib_s", "256 MiB text/csv download (MiB/s)", True, ""),
    Row("text_download_cpu_s", "CPU of the middle per 256 MiB text download (s)", False, "", "{:.2f}"),
    Row("text_download_peak_rss_mib", "peak RSS during that text download, fresh process (MiB)", False, "",
        "{:.1f}"),
    Row("upload_mib_s", "64 MiB upload (MiB/s)", True, "≥ 0.9×"),
    Row("flat", "peak RSS: 1 GiB download / 1 GiB upload (MiB)", False, "flat"),
    Row("ws_rtt_p50_us", "ws 1 KiB echo RTT p50 (µs)", False, "≤ 1.5×"),
    Row("ws_rtt_p99_us", "ws 1 KiB echo RTT p99 (µs)", False, ""),
    Row("ws_pipe_1k_msgs_s", "ws pipelined 1 KiB (msg/s)", True, "≥ 0.8×"),
    # No target: the price of the kernel ledger reading each message (doc/performance.md); a kernel's own output
    # is capped by jupyter_server at 1,000 messages/s (iopub_msg_rate_limit), far below what this row pushes.
    Row("ws_pipe_1k_comm_msgs_s", "ws pipelined 1 KiB comm_msg, read by the ledger (msg/s)", True, ""),
    Row("ws_pipe_1k_cpu_us_per_msg", "CPU of the middle per 1 KiB ws message relayed (µs)", False, "", "{:.1f}"),
    Row("ws_pipe_1k_comm_cpu_us_per_msg", "CPU of the middle per kernel comm_msg relayed (µs)", False, "",
        "{:.1f}"),
    Row("ws_1m_mib_s", "ws 1 MiB binary (MiB/s)", True, "≥ 0.85×"),
    Row("ws_many", "KiB per open ws, 2,000 open (working)", False, "≤ 20 KiB, all"),
    Row("kernelspecs_p50_ms", "real server: /api/kernelspecs p50 (ms)", False, "≤ 1.05×", "{:.2f}"),
    Row("execute_p50_ms", "real server: execute 1+1 RTT p50 (ms)", False, "", "{:.2f}"),
    Row("execute_p99_ms", "real server: execute 1+1 RTT p99 (ms)", False, "", "{:.2f}"),
    Row("execute_p10_ms", "real server: execute 1+1 RTT p10, all rounds (ms)", False, "1.00× (≤ 1.02×)",
        "{:.2f}"),
    Row("startup_s", "startup to first answered request (s)", False, "≤ 0.5 s", "{:.3f}"),
)
TABLE_NOTES = (
    "Cells: median over rounds (peak RSS: the highest), with the ratio to `direct` on the same upstream. "
    "TLS columns: the upstream speaks TLS from a throwaway CA (the client→proxy hop is plain HTTP on "
    "loopback); the real-server rows are TLS only. nginx and CHP cannot inject the hub token: the client "
    "sends it and they forward it. ¹ CHP does not rewrite paths, so its client requests /user/alice/... "
    "itself. Peak RSS, KiB per websocket and the 256 MiB / 1 GiB rows measure the middle process (nginx: "
    "master + worker); each of those runs on a fresh process. CPU rows: CPU time of the middle process "
    "(utime+stime from /proc) divided by the requests wrk completed (per ws message: by the messages relayed, "
    "two per echo); per download: its CPU time during that "
    "download. The /lab page and the text/csv download are answers a proxy that keeps the hub token out of text "
    "looks into (the page holds the token; the text does not); the 256 MiB download is octet-stream, passed as it "
    "is. proxy@<hash>: the proxy of that commit (--baseline), same run, same direct figures.")
ABSOLUTE = {"download_peak_rss_mib", "text_download_peak_rss_mib", "flat", "ws_many", "startup_s",
            "get_c1_cpu_us_per_req", "get_c64_cpu_us_per_req", "page_c1_cpu_us_per_req", "page_c64_cpu_us_per_req",
            "download_cpu_s", "text_download_cpu_s", "upload_cpu_s", "ws_pipe_1k_cpu_us_per_msg",
            "ws_pipe_1k_comm_cpu_us_per_msg"}


def _fmt(value: float, fmt: str) -> str:
    if abs(value) >= 10000:
        return f"{value / 1000:.1f}k"
    return fmt.format(value)


def _num(value: float) -> str:
    return _fmt(value, "{:.0f}" if abs(value) >= 100 else "{:.3g}")


def summarize(bench: Bench) -> dict[str, dict[str, Any]]:
    """metric → candidate key → {"value", "ratio"} (ratio to direct on the same upstream)."""
    out: dict[str, dict[str, Any]] = {}
    for metric, per in bench.samples.items():
        out[metric] = {}
        for key, values in per.items():
            agg = max(values) if "peak_rss" in metric else statistics.median(values)
            out[metric][key] = {"value": agg, "rounds": values}
        for key, cell in out[metric].items():
            base = out[metric].get("direct/" + key.split("/")[1])
            if base and key.split("/")[0] != "direct" and base["value"]:
                cell["ratio"] = cell["value"] / base["value"]
    for metric, per in bench.single.items():
        out.setdefault(metric, {}).update({k: {"value": v} for k, v in per.items()})
    return out


def verdicts(summary: dict[str, Any]) -> list[tuple[str, str, bool | None, str]]:
    """(metric the target is judged on, target, met?, figure) for every target of issue 4."""
    def cell(metric: str, key: str) -> dict[str, Any] | None:
        return summary.get(metric, {}).get(key)

    def ratio(metric: str, key: str = "proxy/http") -> float | None:
        c = cell(metric, key)
        return c.get("ratio") if c else None

    res: list[tuple[str, str, bool | None, str]] = []

    def check(name: str, metric: str, ok: Any, key: str = "proxy/http") -> None:
        r, c = ratio(metric, key), cell(metric, key)
        if r is None or c is None:
            res.append((metric, name, None, "not measured"))
            return
        fig = f"{r:.2f}× ({_num(c['value'])} vs {_num(c['value'] / r)} direct)"
        if key == "proxy/http" and ratio(metric, "proxy/tls") is not None:
            fig += f"; TLS {ratio(metric, 'proxy/tls'):.2f}×"
        res.append((metric, name, bool(ok(r)), fig))

    check("small GET p50 ≤ 4× direct", "get_c1_p50_us", lambda r: r <= 4)
    check("throughput at c=64 ≥ 0.40× direct", "get_c64_rps", lambda r: r >= 0.40)
    dl, rss = ratio("download_mib_s"), cell("download_peak_rss_mib", "proxy/http")
    if dl is not None and rss is not None:
        tls_rss, tls_dl = cell("download_peak_rss_mib", "proxy/tls"), ratio("download_mib_s", "proxy/tls")
        fig = f"{dl:.2f}×, peak RSS {rss['value']:.1f} MiB"
        if tls_rss and tls_dl is not None:
            fig += f"; TLS {tls_dl:.2f}×, {tls_rss['value']:.1f} MiB"
        res.append(("download_mib_s", "download ≥ 0.5× direct with peak RSS ≤ 40 MiB",
                    dl >= 0.5 and rss["value"] <= 40, fig))
    check("upload ≥ 0.9× direct", "upload_mib_s", lambda r: r >= 0.9)
    flat = cell("flat", "proxy/http")
    if flat:
        f = flat["value"]
        grow = max(f["peak_1g_download_mib"], f["peak_1g_upload_mib"]) - f["peak_download_mib"]
        fig = (f"peak {f['peak_download_mib']:.1f} MiB (256 MiB down) → {f['peak_1g_download_mib']:.1f} "
               f"(1 GiB down) / {f['peak_1g_upload_mib']:.1f} MiB (1 GiB up)")
        tls = cell("flat", "proxy/tls")
        if tls:
            t = tls["value"]
            fig += (f"; TLS {t['peak_download_mib']:.1f} → {t['peak_1g_download_mib']:.1f} / "
                    f"{t['peak_1g_upload_mib']:.1f} MiB")
        res.append(("flat", "memory flat for a 1 GiB body (peak grows ≤ 4 MiB over a 256 MiB one)", grow <= 4.0,
                    fig))
    check("ws 1 KiB echo RTT ≤ 1.5× direct", "ws_rtt_p50_us", lambda r: r <= 1.5)
    check("ws pipelined 1 KiB ≥ 0.8× direct", "ws_pipe_1k_msgs_s", lambda r: r >= 0.8)
    check("ws 1 MiB binary ≥ 0.85× direct", "ws_1m_mib_s", lambda r: r >= 0.85)
    many = cell("ws_many", "proxy/http")
    if many:
        m = many["value"]
        all_ok = m["opened"] == m["n"] and m["echoed_first"] == m["n"] and m["echoed_second"] == m["n"]
        fig = f"{m['kib_per_ws']:.1f} KiB/ws, {min(m['echoed_first'], m['echoed_second'])}/{m['n']} echoing"
        tls = cell("ws_many", "proxy/tls")
        if tls:
            fig += f"; TLS {tls['value']['kib_per_ws']:.1f} KiB/ws"
        res.append(("ws_many", f"≤ 20 KiB per open websocket with {m['n']:,} open, all working",
                    m["kib_per_ws"] <= 20 and all_ok, fig))
    check("real server: kernelspecs ≤ 1.05× direct", "kernelspecs_p50_ms", lambda r: r <= 1.05, "proxy/jupyter")
    check("real server: execute RTT 1.00× direct (met if p10 ≤ 1.02×)", "execute_p10_ms", lambda r: r <= 1.02,
          "proxy/jupyter")
    p50 = ratio("execute_p50_ms", "proxy/jupyter")
    if p50 is not None and res[-1][0] == "execute_p10_ms":
        metric, name, ok, fig = res[-1]
        res[-1] = (metric, name, ok, f"p10 {fig}; p50 {p50:.2f}×")
    st = cell("startup_s", "proxy/http")
    if st:
        st_tls = cell("startup_s", "proxy/tls")
        res.append(("startup_s", "startup to first answered request ≤ 0.5 s", st["value"] <= 0.5,
                    f"{st['value']:.3f} s" + (f"; TLS {st_tls['value']:.3f} s" if st_tls else "")))
    return res


def table(summary: dict[str, Any], kinds: list[str]) -> str:
    cols = [(k, u) for k in kinds for u in ("http", "tls")]
    names = {"direct": "direct", "proxy": "proxy", "naive": "naive relay", "nginx": "nginx", "chp": "CHP¹"}
    head = (["metric"] + [f"{names.get(k, k)}{' TLS' if u == 'tls' else ''}" for k, u in cols]
            + ["target", "proxy"])
    met = {metric: ok for metric, _, ok, _ in verdicts(summary)}
    met["download_peak_rss_mib"] = met.get("download_mib_s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        per = summary.get(row.metric)
        if not per:
            continue
        cells = [row.label]
        for kind, up in cols:
            c = per.get(f"{kind}/{up}") or (per.get(f"{kind}/jupyter") if up == "tls" else None)
            if c is None:
                cells.append("–")
            elif row.metric == "flat":
                v = c["value"]
                cells.append(f"{v['peak_1g_download_mib']:.1f} / {v['peak_1g_upload_mib']:.1f}")
            elif row.metric == "ws_many":
                v = c["value"]
                ok = min(v["opened"], v["echoed_first"], v["echoed_second"])
                cells.append(f"{v['kib_per_ws']:.1f} ({ok}/{v['n']})")
            else:
                text = _fmt(c["value"], row.fmt)
                if "ratio" in c and row.metric not in ABSOLUTE:
                    text += f" ({c['ratio']:.2f}×)"
                cells.append(text)
        ok = met.get(row.metric) if row.target else None
        cells += [row.target, "" if ok is None else ("met" if ok else "**missed**")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main

def find_chp(explicit: str | None) -> str | None:
    candidates = [explicit, shutil.which("configurable-http-proxy"),
                  str(REPO / ".cache/node/node_modules/.bin/configurable-http-proxy"),  # where `make test` puts it
                  str(BENCH / "node_modules/.bin/configurable-http-proxy"),
                  os.path.join(tempfile.gettempdir(), "jdp-bench-node/node_modules/.bin/configurable-http-proxy")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 short rounds and a smaller memory phase (~2 min)")
    parser.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    parser.add_argument("--skip", default="", help="comma list of: naive (the naive relay), nginx, chp, jupyter, "
                                                   "tls, many, memory, startup, text (the /lab page and the text "
                                                   "download), ws (the rounds' websocket tests)")
    parser.add_argument("--baseline", action="append", default=[], metavar="REV",
                        help="also run the proxy of commit REV (its proxy.py and package, this virtualenv) as "
                             "candidate proxy@<short hash>; repeatable")
    parser.add_argument("--chp", help="path to configurable-http-proxy (default: PATH, .cache/node, "
                                      "bench/node_modules, $TMPDIR/jdp-bench-node)")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="path to nginx")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")

    parser.add_argument("--out", help="JSON output path (default bench/results/<time>.json)")
    args = parser.parse_args()
    cfg = dict(MODES["quick" if args.quick else "full"])
    if args.rounds:
        cfg["rounds"] = args.rounds
    skip = set(filter(None, args.skip.split(",")))

    global _PIN
    _PIN = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if _PIN:
        os.sched_setaffinity(0, {REST_CORE})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 2,000 websockets: ×2 sockets in the proxy
    if hard < 8192:
        print(f"warning: the open-files limit is {hard}; 2,000 websockets need ~4,100", file=sys.stderr)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGINT, exit_on_signal)

    workdir = Path(tempfile.mkdtemp(prefix="jdp-bench-"))
    CLEANUPS.insert(0, lambda: shutil.rmtree(workdir, ignore_errors=True))
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    nginx = args.nginx if "nginx" not in skip and os.access(args.nginx, os.X_OK) else None
    chp = find_chp(args.chp) if "chp" not in skip else None
    baselines: dict[str, tuple[str, Path]] = {}  # kind -> (full hash, tree)
    for rev in args.baseline:
        kind, full, tree = checkout_baseline(rev, workdir)
        baselines[kind] = (full, tree)
    # A baseline's rounds take as long as the proxy's: the bound grows with them.
    cfg["deadline_s"] += len(baselines) * cfg["deadline_s"] // 2
    kinds = (["direct", *baselines, "proxy"] + (["naive"] if "naive" not in skip else []) + (["nginx"] if nginx else [])
             + (["chp"] if chp else []))
    log(f"mode {'quick' if args.quick else 'full'}, {cfg['rounds']} rounds, candidates {kinds}, "
        f"pinning {'proxy→core 1, rest→core 0' if _PIN else 'off'}")

    http_up, tls_up = start_synthetic(workdir)
    upstreams = [http_up] + ([tls_up] if "tls" not in skip else [])
    jup = None
    if "jupyter" not in skip:
        log("starting jupyter_server + ipykernel")
        jup = start_jupyter()
    bench = Bench(args, cfg, workdir, skip)

    def start(kind: str, up: Upstream) -> Candidate:
        probe = "api/status"
        if kind == "direct":
            return direct(up)
        if kind == "proxy":
            return start_proxy(up, workdir, probe)
        if kind in baselines:
            return start_proxy(up, workdir, probe, kind=kind, tree=baselines[kind][1])
        if kind == "naive":
            return start_naive(up, workdir, probe)
        if kind == "nginx":
            return start_nginx(nginx, up, workdir, probe)  # type: ignore[arg-type]
        return start_chp(chp, up, workdir, probe)  # type: ignore[arg-type]

    cands = {up.name: [start(k, up) for k in kinds] for up in upstreams + ([jup] if jup else [])}
    log("candidates up: " + ", ".join(c.key for cs in cands.values() for c in cs))
    lab_page_token = {}
    if "text" not in skip:
        lab_page_token = {c.key: page_token(c) for up in upstreams for c in cands[up.name]}
        log("token in the /lab page as the client gets it: "
            + ", ".join(f"{key} {which}" for key, which in lab_page_token.items()))
    kernel_id = None
    if jup:
        d = cands["jupyter"][0]
        kernel_id = bench.lg(op="kernel_start", url=d.url("api/kernels"), headers=d.headers(), ca=d.ca,
                             timeout=90)["id"]
    # warm-up: connection pools, caches, TLS sessions
    for up in upstreams:
        for c in cands[up.name]:
            bench.lg(op="get_latency", url=c.url("api/status"), headers=c.headers(), ca=c.ca, n=200, max_s=5)
            if "ws" not in skip:
                bench.lg(op="ws_rtt", url=c.url("api/kernels/echo/channels"), headers=c.headers(), ca=c.ca,
                         size=1024, n=100, max_s=5)
            bench.transfer(c, 32 * MiB, upload=False)
            if "text" not in skip:
                bench.transfer(c, 32 * MiB, upload=False, text=True)
            bench.transfer(c, cfg["upload"], upload=True)

    error = None
    try:
        for rnd in range(cfg["rounds"]):
            for up in upstreams:
                group = cands[up.name]
                order = group[rnd % len(group):] + group[:rnd % len(group)]
                steps = [bench.get_small] + ([bench.get_page] if "text" not in skip else []) + [bench.transfers]
                for step in steps + ([bench.websockets] if "ws" not in skip else []):
                    for c in order:
                        bench.check_time()
                        step(c)
            if jup and kernel_id:
                group = cands["jupyter"]
                order = group[rnd % len(group):] + group[:rnd % len(group)]
                for c in order:
                    bench.check_time()
                    bench.kernelspecs(c)
                bench.execute(order, kernel_id)
            log(f"round {rnd + 1}/{cfg['rounds']} done")
        if jup:
            bench.execute_floor(cands["jupyter"])
        for cs in cands.values():
            for c in cs:
                if c.proc:
                    stop(c.proc)

        # Once per middle candidate, each on a fresh process: startup, peak RSS of a download and of 1 GiB
        # bodies, 2,000 websockets. (A process that served the rounds keeps what they left: 64 pooled
        # connections after the c=64 test, malloc arenas; its figures are in the JSON as *_in_round.)
        for up in upstreams:
            for kind in kinds[1:]:
                if "startup" not in skip:
                    for _ in range(cfg["startups"]):
                        bench.check_time()
                        c = start(kind, up)
                        bench.add("startup_s", c, c.startup_s or float("nan"))
                        stop(c.proc)  # type: ignore[arg-type]
                if "many" not in skip and (up.name == "http" or cfg["ws_many_tls"] or is_proxy(kind)):
                    bench.check_time()
                    c = start(kind, up)
                    try:
                        res = bench.many_websockets(c)
                    finally:
                        stop(c.proc)  # type: ignore[arg-type]
                    bench.single.setdefault("ws_many", {})[c.key] = res
                    log(f"{c.key}: {res['kib_per_ws']:.1f} KiB per websocket, "
                        f"{res['echoed_second']}/{res['n']} echoing")
                if "memory" not in skip and (cfg["memory_all"] or is_proxy(kind)):
                    bench.check_time()
                    c = start(kind, up)
                    try:
                        mem = bench.memory(c, big=cfg["flat_all"] or kind == "proxy")
                    finally:
                        stop(c.proc)  # type: ignore[arg-type]
                    bench.single.setdefault("download_peak_rss_mib", {})[c.key] = mem["peak_download_mib"]
                    if "peak_text_download_mib" in mem:
                        bench.single.setdefault("text_download_peak_rss_mib", {})[c.key] = \
                            mem["peak_text_download_mib"]
                    if "peak_1g_download_mib" in mem:
                        bench.single.setdefault("flat", {})[c.key] = mem
            log(f"{up.name}: startup / websockets / memory done")
    except (TimeoutError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"stopped early: {error}")

    summary = summarize(bench)
    md = table(summary, kinds)
    notes = [f"{'met' if ok else 'MISSED' if ok is not None else 'n/a'}: {name}: {fig}"
             for _, name, ok, fig in verdicts(summary)]
    print()
    print(md)
    print()
    print(TABLE_NOTES)
    print()
    print("Targets (proxy vs direct, plain-HTTP upstream; TLS beside it):")
    print("\n".join("  " + n for n in notes))

    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "bench/run.py", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full", "config": cfg, "candidates": kinds, "pinned": _PIN,
        "commit": this_commit(), "baselines": {kind: full for kind, (full, _) in baselines.items()},
        "lab_page_token": lab_page_token,
        "tools": bench.tools, "error": error, "seconds": time.monotonic() - started,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "nginx": bool(nginx), "chp": chp},
        "summary": summary, "verdicts": [{"target": n, "met": ok, "figure": f} for _, n, ok, f in verdicts(summary)],
        "table_markdown": md, "table_notes": TABLE_NOTES,
    }
    out = Path(args.out) if args.out else BENCH / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {out}")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
