"""What an IDE user feels over a WAN link: through the proxy against talking to the hub directly.

    .venv/bin/python bench/wan.py                    # 7 rounds, 40 ms round trip, 8 s pauses: ~8.5 minutes
    .venv/bin/python bench/wan.py --quick            # 3 rounds, fewer repetitions, no idle check: ~3.5 minutes
    .venv/bin/python bench/wan.py --output /tmp/wan.md   # also write a block for doc/performance.md
    .venv/bin/python bench/wan.py --idle-check-only  # only: how configurable-http-proxy treats idle connections

Everything listens on 127.0.0.1 on ephemeral ports; every process is started here, in its own process group,
and stopped by its id on exit, error or Ctrl-C:

    direct client ───────TLS──────┐
                                  ├─▶ link emulator ─▶ configurable-http-proxy ─▶ jupyter_server + ipykernel
    proxy client ─http─▶ proxy.py ┘   (20 ms each       (TLS; the hub's front:     (TLS, /user/alice/)
                           (TLS)       way)              idle keep-alive
                                                         connections closed
                                                         after 5 s)

The link emulator (bench/linkemu.py) runs in a child process, so that its timers never wait for this
process's GIL. It charges TCP's handshake too: a new connection costs 3 round trips before the answer (TCP,
TLS 1.3, the request), as over a real link.

The two clients are what an IDE is: one aiohttp session with a keep-alive pool per path, kept for the whole
run, and websockets each on a connection of their own (as browsers and Node's ``ws`` open them). Each path
has its own kernel, so that one path's kernel traffic never reaches the other's websockets. Scenarios run
strictly one at a time: a pause is a pause for both paths. See bench/README.md ("WAN benchmark").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from bench.processes import CLEANUPS, LineReader, cleanup, exit_on_signal, spawn, stop  # noqa: E402
from tests.kit.kernel import KERNEL_PROTOCOL, decode_v1, encode_v1  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
USER = "alice"
PREFIX = f"/user/{USER}/"
TLS_NAME = "jupyterhub"
OPEN_NOTEBOOK = "wan-open.ipynb"          # ~50 KB, written at setup, opened by open_notebook_after_pause
BURST_DIR = "wan-dir"                     # a folder of 20 small files, listed by burst_after_pause
SAVE_NOTEBOOK = "wan-save-{path}.ipynb"   # ~2 MB, saved and loaded by save_load_2mb (one file per path)
OP_TIMEOUT_S = 120.0                      # any one measured operation; far above a hang-free one
CHP_KEEPALIVE_S = 5.0                     # configurable-http-proxy's default keepAliveTimeout (5000 ms)


# ------------------------------------------------------------------------------------------------ processes

def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


_T0 = time.monotonic()


# --------------------------------------------------------------------------------------- the link emulator

def _link_child(spec: str) -> None:
    """``wan.py --link-child JSON``: bench/linkemu.py's emulator in this (child) process. Prints {"port": N};
    then, one line a command on stdin, ``stats`` → one JSON line; stops when stdin closes."""
    from bench.linkemu import LinkEmulator

    cfg = json.loads(spec)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    with LinkEmulator.in_thread("127.0.0.1", cfg["target_port"], delay=cfg["delay"],
                                bandwidth=cfg["bandwidth"]) as link:
        print(json.dumps({"port": link.port}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(dataclasses.asdict(link.stats())), flush=True)


class Link:
    """The link emulator child process: its port and its counters."""

    def __init__(self, target_port: int, delay: float, bandwidth: float | None, log_file: Path) -> None:
        spec = json.dumps({"target_port": target_port, "delay": delay, "bandwidth": bandwidth})
        self.log_file = log_file
        with open(log_file, "ab") as err:
            self.proc = spawn([sys.executable, str(Path(__file__).resolve()), "--link-child", spec],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=REPO)
        self.out = LineReader(self.proc.stdout)
        line = self.out.readline(30)
        answer = json.loads(line) if line else {}
        if "port" not in answer:
            raise RuntimeError(f"the link emulator did not start: {answer.get('error', line)!r}; "
                               f"{log_file.read_text()[-1500:]}")
        self.port = int(answer["port"])

    def accepted(self) -> int:
        """Connections the link has accepted so far: every new connection of either path crosses it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        line = self.out.readline(10)
        if not line:
            raise RuntimeError("the link emulator did not answer")
        return int(json.loads(line)["accepted"])


# ----------------------------------------------------------------------------- configurable-http-proxy, proxy

def find_chp(explicit: str | None) -> str | None:
    """As tests/hubserver.py's find_chp, plus --chp: $JUPYTER_DEV_PROXY_CHP, PATH, .cache/node (make test)."""
    candidates = [explicit, os.environ.get("JUPYTER_DEV_PROXY_CHP"), shutil.which("configurable-http-proxy"),
                  str(REPO / ".cache/node/node_modules/.bin/configurable-http-proxy"),
                  str(BENCH / "node_modules/.bin/configurable-http-proxy"),
                  os.path.join(tempfile.gettempdir(), "jdp-bench-node/node_modules/.bin/configurable-http-proxy")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def chp_version(chp: str) -> str:
    package = Path(os.path.realpath(chp)).parent.parent / "package.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(package.read_text())["version"])
    return "?"


def start_chp(chp: str, target: str, ca: Path, cert: Path, key: Path, workdir: Path, token: str) -> int:
    """configurable-http-proxy with TLS in front of ``target`` (its default target); its port once it answers."""
    from jupyter_dev_proxy.demo import free_port
    port, api_port = free_port(), free_port()
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16), "NODE_EXTRA_CA_CERTS": str(ca)}
    with open(workdir / "chp.log", "ab") as out:
        proc = spawn([chp, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1", "--api-port",
                      str(api_port), "--default-target", target, "--ssl-cert", str(cert), "--ssl-key", str(key),
                      "--log-level", "warn"], env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(f"https://127.0.0.1:{port}{PREFIX}api/status",
                                     headers={"Authorization": f"token {token}"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"configurable-http-proxy exited: {(workdir / 'chp.log').read_text()[-1500:]}")
        with contextlib.suppress(urllib.error.URLError, OSError), \
                urllib.request.urlopen(request, context=context, timeout=2) as answer:
            if answer.status == 200:
                return port
        time.sleep(0.05)
    raise RuntimeError(f"configurable-http-proxy did not answer: {(workdir / 'chp.log').read_text()[-1500:]}")


def start_proxy(hub_url: str, ca: Path, hub_token: str, proxy_token: str, workdir: Path,
                extra_env: dict[str, str]) -> tuple[int, int]:
    """``python proxy.py`` configured only by its environment, as a user runs it; (its port, its pid)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JUPYTERHUB"))}
    env.update(JUPYTERHUB_URL=hub_url, JUPYTER_CLUSTER_CA_CERT=str(ca), JUPYTER_SERVER_NAME=TLS_NAME,
               JUPYTERHUB_API_TOKEN=hub_token, JUPYTER_USERNAME=USER, JUPYTER_PROXY_PORT="0",
               JUPYTER_PROXY_IP_OR_NAME="127.0.0.1", JUPYTER_PROXY_TOKEN=proxy_token,
               JUPYTER_PROXY_LOG_LEVEL="warning", JUPYTER_HUB_PROXY="none")
    env.update(extra_env)
    proxy_dir = workdir / "proxy"  # its working directory: no .env of the repository is read
    proxy_dir.mkdir()
    log_file = workdir / "proxy.log"
    with open(log_file, "ab") as err:
        proc = spawn([sys.executable, str(REPO / "proxy.py")], cwd=proxy_dir, env=env, stdout=subprocess.PIPE,
                     stderr=err, stdin=subprocess.DEVNULL)
    out = LineReader(proc.stdout)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = out.readline(max(0.0, deadline - time.monotonic()))
        if not line:
            break
        match = re.search(r"Authorization URL with token for IDE: http://127\.0\.0\.1:(\d+)/", line)
        if match:
            # Keep reading what it prints, so that a full pipe can never block it.
            threading.Thread(target=_drain, args=(out, log_file), daemon=True).start()
            return int(match.group(1)), proc.pid
    stop(proc)
    raise RuntimeError(f"the proxy did not print its URL; its log:\n{log_file.read_text()[-2000:]}")


def _drain(out: LineReader, log_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        while line := out.readline(3600 * 24):
            with open(log_file, "a") as f:
                f.write(line)


# --------------------------------------------------------------------------------------------- notebooks

def notebook(cells: list[tuple[str, str]]) -> dict[str, Any]:
    """An nbformat 4.5 notebook of code cells (source, stdout output)."""
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell-{i}", "execution_count": i + 1, "metadata": {},
                   "source": source, "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}
                  for i, (source, text) in enumerate(cells)],
    }


def text_of(size: int, seed: str) -> str:
    line = (seed * 100)[:99] + "\n"
    return (line * (size // len(line) + 1))[:size]


def open_notebook_json() -> str:
    """~50 KB: 25 cells of ~1 KB source and ~1 KB output."""
    return json.dumps(notebook([(text_of(1000, f"x = {i} "), text_of(1000, f"{i} ")) for i in range(25)]),
                      indent=1)


def save_body(path_name: str) -> bytes:
    """The contents API body that saves a ~2 MB notebook: one cell with a 2 MiB stream output."""
    nb = notebook([("print('x' * 2_000_000)", text_of(2 * MiB, f"{path_name} output "))])
    return json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()


# ------------------------------------------------------------------------------------------ kernel protocol
# The v1.kernel.websocket.jupyter.org wire format: the tests' own codec (tests/kit/kernel.py).


def kernel_request(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session, "username": "ide",
                       "version": "5.3", "date": dt.datetime.now(dt.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content}


class BenchError(Exception):
    """A measured operation did not do what it should (a status, a missing reply): recorded as a failure."""


# ------------------------------------------------------------------------------------------------- a path

class Route:
    """One way for the IDE to reach its server: ``direct`` (to the hub, over the link) or ``proxy``."""

    def __init__(self, name: str, http_base: str, ws_base: str, token: str, context: ssl.SSLContext | None,
                 link: Link) -> None:
        import aiohttp
        self.name, self.http_base, self.ws_base, self.link = name, http_base, ws_base, link
        self.headers = {"Authorization": f"token {token}"}
        timeout = aiohttp.ClientTimeout(total=OP_TIMEOUT_S)
        ssl_arg: Any = context if context is not None else True
        self.connections_made = 0  # by this client (the proxy's own connections to the hub are not in it)
        trace = aiohttp.TraceConfig()

        async def made(*_: Any) -> None:
            self.connections_made += 1
        trace.on_connection_create_end.append(made)
        # The IDE's keep-alive pool for requests, kept for the whole run (aiohttp's default: 15 s idle).
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_arg), timeout=timeout,
                                          trace_configs=[trace])
        # Websockets each on a connection of their own, as browsers and Node's ws (VS Code) open them.
        self.ws = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_arg, force_close=True),
                                        timeout=timeout, trace_configs=[trace])
        self.kernel_id = ""
        self.channel: Channel | None = None
        self.save_body = save_body(name)

    async def close(self) -> None:
        if self.channel:
            await self.channel.close()
        await self.http.close()
        await self.ws.close()

    async def request(self, method: str, path: str, body: bytes | None = None,
                      expect: int | tuple[int, ...] = 200) -> bytes:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.http_base + path, data=body, headers=headers) as response:
            data = await response.read()
            if response.status not in (expect if isinstance(expect, tuple) else (expect,)):
                raise BenchError(f"{method} {path}: {response.status} {data[:300]!r}")
            return data

    async def ws_connect(self) -> Any:
        session_id = uuid.uuid4().hex
        ws = await self.ws.ws_connect(f"{self.ws_base}api/kernels/{self.kernel_id}/channels?session_id={session_id}",
                                      protocols=(KERNEL_PROTOCOL,), headers=self.headers, max_msg_size=0)
        if ws.protocol != KERNEL_PROTOCOL:
            await ws.close()
            raise BenchError(f"the kernel websocket chose {ws.protocol!r}, not {KERNEL_PROTOCOL}")
        return ws, session_id


class Channel:
    """A kernel websocket kept open, read all the time (so its pings are answered), as an IDE's."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws, self.session_id = ws, session_id
        self.waiting: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        import aiohttp
        try:
            async for frame in self.ws:
                if frame.type is aiohttp.WSMsgType.BINARY:
                    message = decode_v1(frame.data)
                    queue = self.waiting.get(message["parent_header"].get("msg_id", ""))
                    if queue is not None:
                        queue.put_nowait(message)
        finally:
            for queue in self.waiting.values():
                queue.put_nowait(None)

    async def execute(self, code: str) -> tuple[float, str | None]:
        """Seconds from sending execute_request until its execute_reply and idle status have both arrived."""
        message = kernel_request("execute_request", {"code": code, "silent": False, "store_history": False,
                                                     "user_expressions": {}, "allow_stdin": False,
                                                     "stop_on_error": True}, self.session_id)
        msg_id = message["header"]["msg_id"]
        if self.reader.done():
            raise BenchError("the kernel websocket is closed")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.waiting[msg_id] = queue
        result = None
        got_reply = got_idle = False
        try:
            t0 = time.perf_counter()
            await self.ws.send_bytes(encode_v1("shell", message))
            async with asyncio.timeout(OP_TIMEOUT_S):
                while not (got_reply and got_idle):
                    reply = await queue.get()
                    if reply is None:
                        raise BenchError("the kernel websocket closed")
                    kind = reply["header"]["msg_type"]
                    got_reply = got_reply or kind == "execute_reply"
                    got_idle = got_idle or (kind == "status" and reply["content"]["execution_state"] == "idle")
                    if kind == "execute_result":
                        result = reply["content"]["data"].get("text/plain")
            return time.perf_counter() - t0, result
        finally:
            del self.waiting[msg_id]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 10)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


# -------------------------------------------------------------------------------------------- the scenarios

async def get_contents(route: Route) -> None:
    await route.request("GET", "api/contents")


async def open_notebook(route: Route) -> None:
    """What an IDE asks when it opens a notebook, at once: the file, the kernel specs, the sessions."""
    await asyncio.gather(route.request("GET", f"api/contents/{OPEN_NOTEBOOK}"),
                         route.request("GET", "api/kernelspecs"), route.request("GET", "api/sessions"))


async def burst(route: Route) -> None:
    """What an IDE asks at once when it opens a notebook after a pause: the notebook, the
    sessions, the kernel specs, the kernels, the notebook's folder and who the user is. Six requests in flight
    together, after the hub's front has closed every idle connection: each needs a connection of its own."""
    await asyncio.gather(*(route.request("GET", path) for path in (
        f"api/contents/{OPEN_NOTEBOOK}", "api/sessions", "api/kernelspecs", "api/kernels",
        f"api/contents/{BURST_DIR}", "api/me")))


async def save_load(route: Route) -> None:
    name = SAVE_NOTEBOOK.format(path=route.name)
    await route.request("PUT", f"api/contents/{name}", route.save_body, expect=(200, 201))  # 201: created
    data = await route.request("GET", f"api/contents/{name}?content=1")
    if len(data) < 2 * MiB:
        raise BenchError(f"the saved notebook came back with {len(data)} bytes")


async def new_kernel_ws(route: Route) -> dict[str, float]:
    """Open a new kernel websocket (a new session) and send kernel_info_request: the seconds until its
    kernel_info_reply ("total"), and until the websocket was open ("handshake"). The websocket's close (one
    more round trip) comes after and is not counted."""
    import aiohttp
    t0 = time.perf_counter()
    ws, session_id = await route.ws_connect()
    handshake = time.perf_counter() - t0
    try:
        message = kernel_request("kernel_info_request", {}, session_id)
        await ws.send_bytes(encode_v1("shell", message))
        async with asyncio.timeout(OP_TIMEOUT_S):
            while True:
                frame = await ws.receive()
                if frame.type is not aiohttp.WSMsgType.BINARY:
                    raise BenchError(f"kernel websocket: {frame.type.name} instead of a kernel message")
                reply = decode_v1(frame.data)
                if (reply["parent_header"].get("msg_id") == message["header"]["msg_id"]
                        and reply["header"]["msg_type"] == "kernel_info_reply"):
                    return {"total": time.perf_counter() - t0, "handshake": handshake}
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 10)


async def execute(route: Route) -> float:
    """execute_request for 1+1 on the path's open kernel websocket: the seconds until execute_reply and idle."""
    assert route.channel is not None
    seconds, result = await route.channel.execute("1+1")
    if result != "2":
        raise BenchError(f"1+1 gave {result!r}")
    return seconds


@dataclasses.dataclass
class Scenario:
    key: str
    title: str
    pause: bool                                    # after a pause, else warm (right after another request)
    target: float                                  # the bound on proxy/direct
    # Its own figure in seconds, or None (timed around it), or {"total": s, <part>: s} for extra rows.
    measure: Callable[[Route], Awaitable[float | dict[str, float] | None]]
    prelude: bool = True                           # warm: an untimed GET first
    repeat_key: str = "warm_repeat"                # how many per round and path when warm
    parts: tuple[tuple[str, str], ...] = ()        # (part, title) of the extra rows


@dataclasses.dataclass(frozen=True)
class Row:
    key: str      # the scenario's, or "<scenario>.<part>"
    title: str
    target: float


SCENARIOS = [
    Scenario("get_after_pause", "GET /api/contents after a pause", True, 0.45, get_contents),
    Scenario("get_warm", "GET /api/contents, warm", False, 1.05, get_contents),
    Scenario("open_notebook_after_pause", "open a notebook after a pause (50 KB file + kernelspecs + sessions, "
             "at once)", True, 0.45, open_notebook),
    Scenario("burst_after_pause", "a burst after a pause (6 GETs at once: the notebook, sessions, kernelspecs, "
             "kernels, a folder, /api/me)", True, 0.45, burst),
    Scenario("execute_warm", "execute 1+1 on an open kernel websocket", False, 1.05, execute,
             prelude=False, repeat_key="execute_repeat"),
    Scenario("save_load_2mb", "save + load a 2 MB notebook", False, 1.05, save_load, repeat_key="save_repeat"),
    Scenario("new_kernel_ws_after_pause", "new kernel websocket → kernel_info_reply, after a pause", True, 0.45,
             new_kernel_ws, parts=(("handshake", "new kernel websocket: handshake only, after a pause"),)),
    Scenario("new_kernel_ws_warm", "new kernel websocket → kernel_info_reply, warm", False, 0.45, new_kernel_ws,
             parts=(("handshake", "new kernel websocket: handshake only, warm"),)),
]
ROWS = [row for s in SCENARIOS
        for row in (Row(s.key, s.title, s.target), *(Row(f"{s.key}.{p}", t, s.target) for p, t in s.parts))]


@dataclasses.dataclass
class Sample:
    ms: float
    new_connections: int


class Results:
    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[Sample]]] = {r.key: {"direct": [], "proxy": []} for r in ROWS}
        self.failures: dict[str, dict[str, list[str]]] = {r.key: {"direct": [], "proxy": []} for r in ROWS}


class Bench:
    def __init__(self, args: argparse.Namespace, direct: Route, proxy: Route, link: Link) -> None:
        self.args, self.direct, self.proxy, self.link = args, direct, proxy, link
        self.results = Results()
        self.scenarios = selected(args)

    async def timed(self, scenario: Scenario, route: Route) -> None:
        """One measurement of ``scenario`` on ``route``, with the link's count of new connections around it."""
        import aiohttp
        before, made_before = self.link.accepted(), route.connections_made
        try:
            t0 = time.perf_counter()
            async with asyncio.timeout(OP_TIMEOUT_S):
                own = await scenario.measure(route)
            elapsed = time.perf_counter() - t0
            figures = own if isinstance(own, dict) else {"total": elapsed if own is None else own}
        except (BenchError, OSError, TimeoutError, aiohttp.ClientError) as exc:
            message = f"{type(exc).__name__}: {exc}"[:300]
            self.results.failures[scenario.key][route.name].append(message)
            log(f"  {scenario.key} {route.name}: FAILED {message}")
            return
        # New connections across the link: the direct client's own (counted by the client: the proxy opens
        # spare connections on its own schedule, at any time); for the proxy, all the link saw meanwhile.
        new = route.connections_made - made_before if route is self.direct else self.link.accepted() - before
        for part, seconds in figures.items():
            key = scenario.key if part == "total" else f"{scenario.key}.{part}"
            self.results.samples[key][route.name].append(Sample(seconds * 1000, new))

    async def round(self, number: int) -> None:
        order = [self.direct, self.proxy] if number % 2 == 0 else [self.proxy, self.direct]
        for scenario in self.scenarios:
            if scenario.pause:
                for route in order:
                    # Strictly sequential: neither client sends anything during the pause (the other path's
                    # measurement is over, its websocket closed), so no pooled connection of this path is used.
                    # (The proxy may open spare connections meanwhile: that is part of what is measured.)
                    await asyncio.sleep(self.args.pause)
                    await self.timed(scenario, route)
            else:
                for i in range(getattr(self.args, scenario.repeat_key)):
                    for route in (order if i % 2 == 0 else order[::-1]):
                        if scenario.prelude:
                            with contextlib.suppress(Exception):
                                await get_contents(route)  # "right after another request"
                        await self.timed(scenario, route)
            d, p = (self.results.samples[scenario.key][n] for n in ("direct", "proxy"))
            log(f"  round {number + 1}: {scenario.key:26s} direct {_last(d)}  proxy {_last(p)}")


def _last(samples: list[Sample]) -> str:
    return f"{samples[-1].ms:7.1f} ms ({samples[-1].new_connections} new conn)" if samples else "   –"


# --------------------------------------------------------------------------------- configurable-http-proxy idle

async def _read_head(reader: asyncio.StreamReader, timeout: float) -> tuple[str, bytes]:
    """(the status line of an answer or how the connection ended instead, the whole head or b"")."""
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode(errors="replace"), head
    except asyncio.IncompleteReadError as exc:
        return (f"closed ({len(exc.partial)} bytes first: {exc.partial[:60]!r})" if exc.partial
                else "closed (EOF)"), b""
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}", b""
    except TimeoutError:
        return f"no answer within {timeout:.0f} s", b""


async def _ended(reader: asyncio.StreamReader) -> str:
    """Wait until the server ends the connection (or sends something unasked); say how."""
    try:
        data = await reader.read(4096)
    except (OSError, ssl.SSLError) as exc:
        return f"ended it with {type(exc).__name__}: {exc}"
    if not data:
        return "closed it (EOF)"
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            while more := await reader.read(4096):
                data += more
    return f"sent, unasked, {data[:80]!r} and closed it"


async def idle_probe(port: int, ca: Path, token: str, *, request_after: float | None, used_first: bool,
                     watch_s: float, open_after: float = 0.0) -> dict[str, Any]:
    """One TLS connection straight to configurable-http-proxy (not through the link).

    ``used_first``: send one request, read its answer, then wait for CHP to close the connection.
    ``request_after``: open it, send nothing for that many seconds, then send a request on it.
    Neither: open it, send nothing, and note when (whether) CHP closes it, up to ``watch_s``.
    ``open_after``: seconds to wait before opening it (Node checks for stale connections every 30 s, so when it
    closes one depends on when the connection was opened)."""
    await asyncio.sleep(open_after)
    context = ssl.create_default_context(cafile=str(ca))
    request = (f"GET {PREFIX}api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {token}\r\n"
               "\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    opened = time.monotonic()
    result: dict[str, Any] = {"used_first": used_first, "request_after_s": request_after}
    try:
        if used_first:
            writer.write(request)
            await writer.drain()
            status, head = await _read_head(reader, 10)
            result["first_answer"] = status
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if length is None:
                raise OSError(f"the answer to the first request had no Content-Length: {head[:300]!r}")
            await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
            answered = time.monotonic()
            try:
                how = await asyncio.wait_for(_ended(reader), watch_s)
                result["closed_after_s"] = round(time.monotonic() - answered, 2)
                result["outcome"] = (f"used once ({status}), then idle: CHP {how} {result['closed_after_s']:.1f} s "
                                     "after the answer")
            except TimeoutError:
                result["outcome"] = f"used once ({status}), then idle: still open {watch_s:.0f} s after the answer"
        elif request_after is not None:
            ended = asyncio.create_task(_ended(reader))
            done, _ = await asyncio.wait({ended}, timeout=request_after)
            if done:
                result["outcome"] = (f"never used, request due {request_after:g} s after the handshake: CHP "
                                     f"{ended.result()} {time.monotonic() - opened:.1f} s after the handshake")
                result["closed_after_s"] = round(time.monotonic() - opened, 2)
            else:
                ended.cancel()
                with contextlib.suppress(BaseException):
                    await ended
                writer.write(request)
                await writer.drain()
                status, _ = await _read_head(reader, 10)
                result["outcome"] = (f"never used for {request_after:g} s after the handshake, then a request → "
                                     f"{status}")
                result["answered"] = status.startswith("HTTP/1.1 200")
        else:
            try:
                how = await asyncio.wait_for(_ended(reader), watch_s)
                result["outcome"] = (f"never used (opened {open_after:g} s into the check): CHP {how} "
                                     f"{time.monotonic() - opened:.1f} s after the handshake")
                result["closed_after_s"] = round(time.monotonic() - opened, 2)
            except TimeoutError:
                result["outcome"] = (f"never used (opened {open_after:g} s into the check): still open after "
                                     f"{watch_s:.0f} s")
    except (OSError, ssl.SSLError) as exc:
        result["outcome"] = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)
    return result


def idle_checks(port: int, ca: Path, token: str, request_after: list[float],
                watch_s: float) -> list[Coroutine[Any, Any, dict[str, Any]]]:
    """The probes: one used then left idle; three never used, watched, opened 0, 10 and 20 s into the check;
    one never used until a request after each of ``request_after`` seconds."""
    probes = [idle_probe(port, ca, token, request_after=None, used_first=True, watch_s=60)]
    probes += [idle_probe(port, ca, token, request_after=None, used_first=False, watch_s=watch_s, open_after=t)
               for t in (0, 10, 20)]
    probes += [idle_probe(port, ca, token, request_after=s, used_first=False, watch_s=watch_s) for s in request_after]
    return probes


def idle_report(results: list[dict[str, Any]]) -> list[str]:
    return [f"- {r['outcome']}" for r in results]


# ----------------------------------------------------------------------------------------------- reporting

def pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[q // 10 - 1]


def selected(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios --only names (all by default)."""
    return [s for s in SCENARIOS if not args.only or s.key in args.only]


def summarize(results: Results, scenarios: list[Scenario]) -> list[dict[str, Any]]:
    keys = {s.key for s in scenarios}
    rows = []
    for s in ROWS:
        if s.key.split(".")[0] not in keys:
            continue
        row: dict[str, Any] = {"key": s.key, "title": s.title, "target": s.target}
        for name in ("direct", "proxy"):
            samples = results.samples[s.key][name]
            ms = [x.ms for x in samples]
            row[name] = {"n": len(ms), "failures": len(results.failures[s.key][name]),
                         "median": statistics.median(ms) if ms else None,
                         "p10": pct(ms, 10) if ms else None, "p90": pct(ms, 90) if ms else None,
                         "new_connections": statistics.median([x.new_connections for x in samples]) if ms else None,
                         "ms": [round(v, 2) for v in ms]}
        d, p = row["direct"]["median"], row["proxy"]["median"]
        row["ratio"] = p / d if d and p else None
        row["ratio_p10"] = (row["proxy"]["p10"] / row["direct"]["p10"]) if d and p else None
        row["met"] = None if row["ratio"] is None else row["ratio"] <= s.target
        rows.append(row)
    return rows


def _ms(v: float | None) -> str:
    return "–" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def _conns(v: float | None) -> str:
    return "–" if v is None else f"{v:g}"


def _count(figures: dict[str, Any]) -> str:
    return f"{figures['n']}" + (f" ({figures['failures']})" if figures["failures"] else "")


def table(rows: list[dict[str, Any]], pause: float) -> str:
    lines = [("| scenario | direct (ms) | proxy (ms) | proxy/direct | target | | direct p10–p90 | proxy p10–p90 "
              "| p10 ratio | new connections per op, direct / proxy | n (failed) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, p = r["direct"], r["proxy"]
        verdict = "" if r["met"] is None else ("met" if r["met"] else "**missed**")
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        ratio10 = "–" if r["ratio_p10"] is None else f"{r['ratio_p10']:.2f}×"
        title = r["title"].replace("after a pause", f"after a pause of {pause:g} s")
        lines.append(f"| {title} | {_ms(d['median'])} | {_ms(p['median'])} | {ratio} | ≤ {r['target']:g}× | "
                     f"{verdict} | {_ms(d['p10'])}–{_ms(d['p90'])} | {_ms(p['p10'])}–{_ms(p['p90'])} | {ratio10} | "
                     f"{_conns(d['new_connections'])} / {_conns(p['new_connections'])} | "
                     f"{_count(d)} / {_count(p)} |")
    return "\n".join(lines)


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r["ratio"] is None:
            out.append(f"  n/a    {r['key']}: no figure (target ≤ {r['target']:g}×)")
        else:
            out.append(f"  {'met   ' if r['met'] else 'MISSED'} {r['key']}: {r['ratio']:.2f}× "
                       f"(target ≤ {r['target']:g}×; {_ms(r['direct']['median'])} ms direct, "
                       f"{_ms(r['proxy']['median'])} ms proxy)")
    return out


def git_commit() -> str:
    """The commit, and whether the proxy's code differs from it (read-only git commands)."""
    def git(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *argv], capture_output=True,
                              text=True, timeout=10, check=False)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = git("rev-parse", "--short", "HEAD").stdout.strip()
        if not commit:
            return "unknown"
        dirty = git("diff", "--quiet", "HEAD", "--", "jupyter_dev_proxy", "proxy.py").returncode == 1
        return f"`{commit}`" + (" with uncommitted changes in jupyter_dev_proxy/ or proxy.py" if dirty else "")
    return "unknown"


def versions(chp: str) -> str:
    def v(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"
    node = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    return (f"Python {platform.python_version()}, aiohttp {v('aiohttp')}, jupyter_server {v('jupyter_server')}, "
            f"ipykernel {v('ipykernel')}, configurable-http-proxy {chp_version(chp)} on Node {node}")


def errors_in(log_file: Path) -> list[str]:
    """The last line of every traceback in a log: what went wrong, one line each."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return []
    errors, in_traceback = [], False
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and not line.startswith(" ") and (i + 1 == len(lines) or not lines[i + 1].startswith(" ")):
            errors.append(line)
            in_traceback = False
    return errors


def link_text(args: argparse.Namespace) -> str:
    bw = f"{args.bandwidth_mbit:g} Mbit/s each way" if args.bandwidth_mbit else "no bandwidth cap"
    return (f"bench/linkemu.py, {args.delay_ms:g} ms each way ({2 * args.delay_ms:g} ms round trip), {bw}; a new "
            "connection pays TCP's handshake (3 round trips before the answer)")


# ---------------------------------------------------------------------------------------------------- main

async def run_async(args: argparse.Namespace, server: Any, chp_port: int, link: Link | None,
                    proxy_port: int | None, proxy_token: str) -> dict[str, Any]:
    idle_tasks: list[asyncio.Task[Any]] = []
    if args.idle_check:
        request_after = [float(x) for x in args.idle_request_after.split(",") if x.strip()]
        log(f"idle check: probes straight to configurable-http-proxy (one used then idle; three never used, "
            f"watched up to {args.idle_watch:g} s; requests after {', '.join(f'{s:g}' for s in request_after)} s)")
        idle_tasks = [asyncio.create_task(p) for p in idle_checks(chp_port, server.ca_file, server.token,
                                                                   request_after, args.idle_watch)]
    out: dict[str, Any] = {}
    if link is not None and proxy_port is not None:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        direct = Route("direct", f"https://127.0.0.1:{link.port}{PREFIX}", f"wss://127.0.0.1:{link.port}{PREFIX}",
                       server.token, context, link)
        proxy = Route("proxy", f"http://127.0.0.1:{proxy_port}/", f"ws://127.0.0.1:{proxy_port}/", proxy_token,
                      None, link)
        try:
            for route in (direct, proxy):
                log(f"{route.name}: starting its kernel, warming up")
                body = json.loads(await route.request("POST", "api/kernels", b'{"name": "python3"}', expect=201))
                route.kernel_id = body["id"]
                ws, session_id = await route.ws_connect()
                route.channel = Channel(ws, session_id)
                for _ in range(3):
                    await route.channel.execute("1+1")
                await get_contents(route)
                await open_notebook(route)
                await burst(route)
                await save_load(route)
                await new_kernel_ws(route)
            bench = Bench(args, direct, proxy, link)
            for number in range(args.rounds):
                log(f"round {number + 1}/{args.rounds}")
                await bench.round(number)
            out["rows"] = summarize(bench.results, bench.scenarios)
            out["failures"] = bench.results.failures
        finally:
            await direct.close()
            await proxy.close()
    if idle_tasks:
        pending = [t for t in idle_tasks if not t.done()]
        if pending:
            log(f"waiting for {len(pending)} idle probe(s) to finish")
        out["idle"] = await asyncio.gather(*idle_tasks)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, fewer warm repetitions, no idle check")
    parser.add_argument("--pause", type=float, default=8.0,
                        help="seconds of silence before each 'after a pause' scenario (default 8: more than "
                             "configurable-http-proxy's 5 s keep-alive timeout)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay of the link (default 20)")
    parser.add_argument("--bandwidth-mbit", type=float, help="bandwidth cap per direction (default: none)")
    parser.add_argument("--only", type=lambda text: [k.strip() for k in text.split(",") if k.strip()],
                        default=[], metavar="KEY[,KEY...]",
                        help=f"run only these scenarios: {', '.join(s.key for s in SCENARIOS)}")
    parser.add_argument("--warm-repeat", type=int, help="warm GETs and warm websockets per round and path "
                                                        "(default 5; 2 with --quick)")
    parser.add_argument("--execute-repeat", type=int, help="executes per round and path (default 10; 4 quick)")
    parser.add_argument("--save-repeat", type=int, help="2 MB save+load per round and path (default 2; 1 quick)")
    parser.add_argument("--no-idle-check", dest="idle_check", action="store_false", default=None,
                        help="skip the probes of configurable-http-proxy's idle connections")
    parser.add_argument("--idle-check-only", action="store_true",
                        help="only start the server and configurable-http-proxy, and run the idle probes")
    parser.add_argument("--idle-request-after", default="10,30,70,95",
                        help="seconds a never-used TLS connection waits before its request (default 10,30,70,95)")
    parser.add_argument("--idle-watch", type=float, default=200.0,
                        help="how long the never-used connection is watched (default 200 s)")
    parser.add_argument("--chp", help="path to configurable-http-proxy (default: $JUPYTER_DEV_PROXY_CHP, PATH, "
                                      ".cache/node)")
    parser.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                        help="one more setting in the proxy's environment (repeatable), e.g. to compare "
                             "JUPYTER_PROXY_KEEP_WARM_MINUTES=0")
    parser.add_argument("--output", help="also write a Markdown block for doc/performance.md to this file")
    parser.add_argument("--json", help="also write every figure, each sample included, as JSON to this file")
    parser.add_argument("--link-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.link_child:
        _link_child(args.link_child)
        return 0
    args.rounds = args.rounds or (3 if args.quick else 7)
    unknown = [k for k in args.only if k not in {s.key for s in SCENARIOS}]
    if unknown:
        parser.error(f"--only: no scenario {', '.join(unknown)}; there are {', '.join(s.key for s in SCENARIOS)}")
    args.warm_repeat = args.warm_repeat or (2 if args.quick else 5)
    args.execute_repeat = args.execute_repeat or (4 if args.quick else 10)
    args.save_repeat = args.save_repeat or (1 if args.quick else 2)
    if args.idle_check is None:
        args.idle_check = not args.quick
    args.idle_check = args.idle_check or args.idle_check_only
    if args.pause <= CHP_KEEPALIVE_S:
        print(f"warning: a {args.pause:g} s pause does not outlast configurable-http-proxy's "
              f"{CHP_KEEPALIVE_S:g} s keep-alive timeout", file=sys.stderr)

    proxy_env = dict(item.split("=", 1) for item in args.proxy_env if "=" in item)
    if len(proxy_env) != len(args.proxy_env):
        parser.error("--proxy-env takes NAME=VALUE")
    chp = find_chp(args.chp)
    if chp is None:
        parser.error("configurable-http-proxy not found: `make test` installs it into .cache/node, or pass --chp")
    command = " ".join([".venv/bin/python" if ".venv" in sys.executable else os.path.basename(sys.executable),
                        "bench/wan.py", *sys.argv[1:]])
    date = dt.datetime.now(dt.timezone.utc)

    signal.signal(signal.SIGTERM, exit_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="jdp-wan-"))
    started = time.monotonic()
    link_errors: list[str] = []
    link_errors_in_run = 0
    try:
        from jupyter_dev_proxy.demo import start_demo_server
        log("starting jupyter_server + ipykernel (TLS, /user/alice/)")
        server = start_demo_server(USER, tls_name=TLS_NAME)
        CLEANUPS.append(server.stop)
        (server.root_dir / OPEN_NOTEBOOK).write_text(open_notebook_json())
        (server.root_dir / BURST_DIR).mkdir()
        for i in range(20):
            (server.root_dir / BURST_DIR / f"file-{i}.py").write_text(f"x = {i}\n")
        chp_port = start_chp(chp, server.url, server.ca_file, server.workdir / "server.pem",
                             server.workdir / "server.key", workdir, server.token)
        log(f"configurable-http-proxy on :{chp_port} (TLS) → {server.url}")
        link = proxy_port = None
        proxy_token = secrets.token_hex(16)
        if not args.idle_check_only:
            bandwidth = args.bandwidth_mbit * 1e6 / 8 if args.bandwidth_mbit else None
            link = Link(chp_port, args.delay_ms / 1000, bandwidth, workdir / "link.log")
            log(f"link on :{link.port}: {link_text(args)}")
            proxy_port, proxy_pid = start_proxy(f"https://127.0.0.1:{link.port}", server.ca_file, server.token,
                                                proxy_token, workdir, proxy_env)
            log(f"proxy on :{proxy_port} (pid {proxy_pid}) → https://127.0.0.1:{link.port}")
        out = asyncio.run(run_async(args, server, chp_port, link, proxy_port, proxy_token))
        link_errors_in_run = len(errors_in(workdir / "link.log"))  # the rest come while everything stops
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    except (BenchError, RuntimeError, OSError) as exc:
        log(f"stopped: {type(exc).__name__}: {exc}")
        for name in ("proxy.log", "chp.log", "link.log"):
            with contextlib.suppress(OSError):
                if text := (workdir / name).read_text(errors="replace").strip():
                    print(f"--- the end of {name}:\n{text[-3000:]}", file=sys.stderr)
        return 1
    finally:
        cleanup()
        link_errors = errors_in(workdir / "link.log")
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - started

    md_lines: list[str] = []
    if "rows" in out:
        md_lines += [table(out["rows"], args.pause), ""]
    print()
    if "rows" in out:
        print(md_lines[0])
        print()
        print("Targets (proxy/direct, medians):")
        print("\n".join(verdict_lines(out["rows"])))
    if out.get("idle"):
        print()
        print("configurable-http-proxy and idle TLS connections (probes straight to it, not through the link):")
        print("\n".join(idle_report(out["idle"])))
    if link_errors:
        print(f"\nThe link emulator logged {len(link_errors)} exception(s): {link_errors_in_run} during the run, "
              f"{len(link_errors) - link_errors_in_run} while everything was being stopped; the last: "
              f"{link_errors[-1]}")
    print(f"\n{seconds:.0f} s in all")

    if args.output:
        nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        block = [
            "## Over a WAN link (bench/wan.py)", "",
            (f"- **Date**: {date:%Y-%m-%d, %H:%M} UTC, commit {git_commit()}. **Command**: `{command}` "
             f"({args.rounds} rounds, {args.pause:g} s pauses; {seconds:.0f} s)."),
            f"- **Link**: {link_text(args)}.",
            *([f"- **Proxy settings** added: {', '.join(f'`{k}={v}`' for k, v in proxy_env.items())}."]
              if proxy_env else []),
            f"- **Machine**: {nproc} cores (nproc), Linux {platform.release()}; {versions(chp)}.",
            ("- **Paths**: direct = an aiohttp client to the hub's front (configurable-http-proxy, TLS) over the "
             "link, keep-alive pool kept for the whole run; proxy = the same client to `python proxy.py` on "
             "localhost, which reaches the hub over the same link. Websockets on a connection of their own (as "
             "browsers and Node's ws). Medians over rounds; \"new connections\" counts what crossed the link per "
             "operation."),
            "",
        ]
        if "rows" in out:
            block += [md_lines[0], "", "Targets: " + "; ".join(
                f"{r['key']} {'met' if r['met'] else 'missed' if r['met'] is not None else 'n/a'}"
                + (f" ({r['ratio']:.2f}×)" if r["ratio"] else "") for r in out["rows"]), ""]
        if out.get("idle"):
            block += ["configurable-http-proxy and idle TLS connections (straight to it):", "",
                      *idle_report(out["idle"]), ""]
        Path(args.output).write_text("\n".join(block))
        log(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": date.isoformat(timespec="seconds"), "command": command, "seconds": seconds,
            "link": link_text(args), "args": {k: v for k, v in vars(args).items() if k != "link_child"},
            **out}, indent=1, default=str))
        log(f"wrote {args.json}")
    return 0 if "rows" not in out or not any(out["failures"][k][n] for k in out["failures"]
                                                for n in ("direct", "proxy")) else 1


if __name__ == "__main__":
    sys.exit(main())
