"""Soak: an IDE's kernel websocket and HTTP work through the proxy while the link to the hub keeps failing.

    python bench/soak.py --seconds 120 [--delay-ms 20] [--seed N] [--event-loop uvloop|asyncio] [--json out.json]

What it starts (all on 127.0.0.1, ephemeral ports; everything stopped on exit, error or Ctrl-C):

    IDE (this process) ─http/ws─▶ proxy (in-process ProxyRunner) ─TLS─▶ link emulator ─▶ jupyter_server + ipykernel
                                                                        (a thread; 20 ms     (TLS, /user/alice/)
                                                                         each way, faults)

Through the proxy the IDE opens a notebook session and its kernel websocket (v1.kernel.websocket.jupyter.org),
runs a cell that prints a numbered line every 0.25 s for the whole soak, sends a ``kernel_info_request`` on the
control channel every 0.25 s (replies matched by parent msg_id), and every 0.5 s does what an IDE's polling and
saving do: ``GET /api/kernels`` and the ``/api/contents`` listing at once, then a contents ``PUT`` of a new small
file or notebook and a ``GET`` that checks it reads back identical. When the proxy closes the IDE's websocket,
the IDE opens it again with the same session id after 1 s, as @jupyterlab/services does (the close is counted).

Faults, on a seeded random schedule, one every 4–10 s: mostly every connection reset at once (a hub proxy
restart, an ingress reload, a VPN reconnect); 1 in 5 a 3 s blackhole instead (the link delivers nothing, then
everything); 1 in 5 every connection reset and new ones refused for 2 s (the hub's front restarting).

Exit status 0 when what the issue asks holds (see ``verdicts``), 1 otherwise. ``run_soak`` runs it inside an
event loop that is already running, against a server already started (tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import enum
import json
import logging
import math
import random
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.linkemu import LinkEmulator  # noqa: E402
from jupyter_dev_proxy.address import HubAddress  # noqa: E402
from jupyter_dev_proxy.app import ProxyRunner  # noqa: E402
from jupyter_dev_proxy.config import Settings  # noqa: E402
from jupyter_dev_proxy.demo import DemoServer  # noqa: E402
# The IDE's steps and the kernel wire format, shared with the tests rather than copied once more.
from tests.kit.ide import ide_session, new_notebook, start_session  # noqa: E402
from tests.kit.kernel import KERNEL_PROTOCOL, decode_v1, encode_v1, request  # noqa: E402

USER = "alice"
LINE_INTERVAL_S = 0.25       # the counting cell's pace, and the control requests' (the issue's soak)
CONTROL_INTERVAL_S = 0.25
HTTP_INTERVAL_S = 0.5        # one round of an IDE's HTTP work: 2 polls, a save and its read-back
FAULT_GAP_S = (4.0, 10.0)    # seconds between faults, uniformly drawn
HOLD_S = 3.0                 # a blackhole's length
REFUSE_S = 2.0               # how long new connections are refused after a reset
IDE_REOPEN_S = 1.0           # @jupyterlab/services waits about this long before it opens a closed websocket again
HTTP_TIMEOUT_S = 30.0        # one HTTP request; far above a blackhole, far below a hang
READY_TIMEOUT_S = 60.0       # the kernel's first control reply (a kernel start on a busy 2-core machine is slow)
CONTROL_GRACE_S = 5.0        # after the soak, for control requests still in flight (100 round trips)
REPLY_GRACE_S = 10.0         # after the soak, for the cell's last lines and its execute_reply
FINAL_CHECK_S = 20.0         # reading back the writes whose read-back failed during the soak
LOST_LINES_PER_2_MIN = 2     # the allowance: a line in flight at a reset may be lost
LOGGER = "jupyter_dev_proxy"
# What the proxy logs about a kernel websocket's hub side (jupyter_dev_proxy/ws_relay.py).
RECONNECT_LOG = {"broke": "the connection to the hub broke", "reconnected": "reconnected to the hub after",
                 "gave_up": "could not be reached again", "refused": "refused to reconnect it"}


class FaultKind(enum.Enum):
    RESET = "reset"        # every open connection reset, now
    HOLD = "hold"          # nothing delivered either way for HOLD_S, then everything held, in order
    REFUSE = "refuse"      # every open connection reset, and new ones refused for REFUSE_S


FAULT_WEIGHTS = {FaultKind.RESET: 3, FaultKind.HOLD: 1, FaultKind.REFUSE: 1}  # 1 in 5 each for the rarer two


@dataclasses.dataclass(frozen=True)
class SoakOptions:
    seconds: float = 120.0
    delay: float = 0.020   # one way: the round trip pays it twice
    seed: int = 1


def counting_cell(lines: int) -> str:
    """A cell that prints ``line 0`` … ``line <lines-1>``, one every LINE_INTERVAL_S, each flushed at once."""
    return (f"import time\nfor i in range({lines}):\n    print(f'line {{i}}', flush=True)\n"
            f"    time.sleep({LINE_INTERVAL_S})")


_LINE = re.compile(r"line (\d+)")


# ------------------------------------------------------------------------------------------------ counting

@dataclasses.dataclass
class Lines:
    """The counting cell's lines in the order they arrived."""

    expected: int
    arrived: list[int] = dataclasses.field(default_factory=list)

    def add(self, text: str) -> None:
        self.arrived += [int(n) for n in _LINE.findall(text)]

    def summary(self) -> dict[str, int]:
        seen: set[int] = set()
        duplicated = out_of_order = 0
        highest = -1
        for number in self.arrived:
            if number in seen:
                duplicated += 1
                continue
            if number < highest:
                out_of_order += 1
            seen.add(number)
            highest = max(highest, number)
        received = len(seen & set(range(self.expected)))
        return {"expected": self.expected, "received": received, "missing": self.expected - received,
                "duplicated": duplicated, "out_of_order": out_of_order}

    def missing(self) -> list[int]:
        """The numbers of the lines that never arrived (line n is printed about n/4 s after the cell starts)."""
        return sorted(set(range(self.expected)) - set(self.arrived))


@dataclasses.dataclass
class ControlRequests:
    """kernel_info_requests on the control channel, matched to their replies by parent msg_id."""

    sent: dict[str, float] = dataclasses.field(default_factory=dict)   # msg_id → when sent
    answered: set[str] = dataclasses.field(default_factory=set)
    not_sent: int = 0          # the IDE's websocket was closed (being opened again) when one was due
    extra_replies: int = 0     # a second reply to the same request, or a reply to none of ours

    def reply(self, parent_id: str) -> None:
        if parent_id in self.sent and parent_id not in self.answered:
            self.answered.add(parent_id)
        else:
            self.extra_replies += 1

    def unanswered(self) -> int:
        return len(self.sent) - len(self.answered)

    def summary(self) -> dict[str, int]:
        return {"sent": len(self.sent), "answered": len(self.answered), "unanswered": self.unanswered(),
                "not_sent": self.not_sent, "extra_replies": self.extra_replies}


class ReconnectLog(logging.Handler):
    """Counts what the proxy logs about its kernel websockets' hub side, and keeps those lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: collections.Counter[str] = collections.Counter()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for key, text in RECONNECT_LOG.items():
            if text in message:
                self.counts[key] += 1
                self.lines.append(f"{record.created:.3f} {message}")


# ------------------------------------------------------------------------------------- the kernel websocket

class KernelSocket:
    """The IDE's kernel websocket, read all the time; opened again with the same session id when closed."""

    def __init__(self, client: aiohttp.ClientSession, ids: dict[str, str],
                 on_message: Callable[[dict[str, Any]], None], clock: Callable[[], float]) -> None:
        self.client, self.ids, self.on_message, self.clock = client, ids, on_message, clock
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closes: list[dict[str, Any]] = []     # closes the IDE did not ask for: when, code
        self.open_failures: collections.Counter[str] = collections.Counter()
        self.stopping = False
        self.opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.opened.wait(), READY_TIMEOUT_S)

    async def send(self, channel: str, message: dict[str, Any]) -> bool:
        """False when the websocket is not open (the IDE is opening it again)."""
        ws = self.ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_bytes(encode_v1(channel, message))
        except (ConnectionError, RuntimeError):  # closed under us: the reader records the close
            return False
        return True

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        path = f"/api/kernels/{self.ids['kernel']}/channels?session_id={self.ids['session']}"
        while not self.stopping:
            try:
                self.ws = await self.client.ws_connect(path, protocols=(KERNEL_PROTOCOL,), max_msg_size=0,
                                                       timeout=aiohttp.ClientWSTimeout(ws_close=5))
            except aiohttp.WSServerHandshakeError as exc:
                self.open_failures[str(exc.status)] += 1
                await asyncio.sleep(IDE_REOPEN_S)
                continue
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                self.open_failures[type(exc).__name__] += 1
                await asyncio.sleep(IDE_REOPEN_S)
                continue
            self.opened.set()
            async for frame in self.ws:
                if frame.type is aiohttp.WSMsgType.BINARY:
                    self.on_message(decode_v1(frame.data))
            if self.stopping:
                return
            self.closes.append({"at_s": round(self.clock(), 2), "code": self.ws.close_code})
            await asyncio.sleep(IDE_REOPEN_S)


# ---------------------------------------------------------------------------------------------- HTTP work

@dataclasses.dataclass
class Write:
    path: str
    body: dict[str, Any]           # what was PUT
    verified: bool = False


class HttpWork:
    """What an IDE does over HTTP meanwhile: polls, and saves it reads back."""

    def __init__(self, client: aiohttp.ClientSession, directory: str) -> None:
        self.client, self.directory = client, directory
        self.requests = 0
        self.failures: collections.Counter[str] = collections.Counter()   # status or exception → count
        self.acknowledged: list[Write] = []
        self.bad_writes: list[str] = []

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any] | None:
        """(status, JSON body) of one request; None when it failed (counted)."""
        self.requests += 1
        try:
            async with self.client.request(method, path, json=body) as response:
                data = await response.read()
                if response.status >= 400:
                    self.failures[str(response.status)] += 1
                    return None
                return response.status, json.loads(data) if data else None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            self.failures[type(exc).__name__] += 1
            return None

    async def round(self, number: int) -> None:
        await asyncio.gather(self.call("GET", "/api/kernels"), self.call("GET", "/api/contents"))
        write = self._write(number)
        if await self.call("PUT", f"/api/contents/{write.path}", write.body) is not None:
            self.acknowledged.append(write)
            await self.read_back(write, final=False)

    async def read_back(self, write: Write, final: bool) -> None:
        """Whether the write reads back identical; a failed read is left for the final check (or, in it, bad)."""
        answer = await self.call("GET", f"/api/contents/{write.path}?content=1")
        if answer is None:
            if final:
                self.bad_writes.append(f"{write.path}: could not be read back")
            return
        write.verified = True
        if _content_of(answer[1]) != _content_of(write.body):
            self.bad_writes.append(f"{write.path}: read back different")

    async def final_check(self) -> None:
        for write in self.acknowledged:
            if not write.verified:
                await self.read_back(write, final=True)

    def _write(self, number: int) -> Write:
        """A new small file (even rounds) or notebook (odd ones), each written once, with its own content."""
        mark = f"soak write {number} {secrets.token_hex(8)}"
        if number % 2 == 0:
            return Write(f"{self.directory}/w{number}.txt", {"type": "file", "format": "text",
                                                               "content": f"{mark}\n" * 20})
        notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                    "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                               "outputs": [], "source": f"# {mark}, cell {i}"} for i in range(3)]}
        return Write(f"{self.directory}/w{number}.ipynb", {"type": "notebook", "content": notebook})

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "failed": sum(self.failures.values()), "failed_by": dict(self.failures),
                "acknowledged_writes": len(self.acknowledged), "bad_writes": self.bad_writes}


def _content_of(model: dict[str, Any]) -> Any:
    """What a contents model holds that a save must keep: a file's text, a notebook's cells."""
    content = model["content"]
    if model["type"] == "file":
        return content
    return [(cell["cell_type"], cell["source"]) for cell in content["cells"]]


# ------------------------------------------------------------------------------------------------- the soak

@dataclasses.dataclass
class Verdict:
    criterion: str
    ok: bool
    figure: str


@dataclasses.dataclass
class SoakReport:
    options: dict[str, Any]
    seconds: float
    event_loop: str
    faults: dict[str, int]
    fault_times: list[tuple[float, str]]
    lines: dict[str, int]
    missing_lines: list[int]
    control: dict[str, int]
    execute_reply: str | None          # its status ("ok"), or None: it never came
    ws_closes: list[dict[str, Any]]
    ws_open_failures: dict[str, int]
    http: dict[str, Any]
    reconnect_log: dict[str, int]
    reconnect_log_lines: list[str]
    link: dict[str, Any]

    def verdicts(self) -> list[Verdict]:
        """The issue's "done means", one line each."""
        faults = sum(self.faults.values())
        allowed_lost = math.ceil(LOST_LINES_PER_2_MIN * self.options["seconds"] / 120)
        lines, control, http = self.lines, self.control, self.http
        closes = ", ".join(str(c["code"]) for c in self.ws_closes)
        return [
            Verdict("no client-visible websocket drop", not self.ws_closes,
                    f"{len(self.ws_closes)} close(s)" + (f" (codes {closes})" if closes else "")),
            Verdict("the cell's execute_reply arrives", self.execute_reply == "ok", f"{self.execute_reply}"),
            Verdict("every control request answered", control["unanswered"] == 0 and control["not_sent"] == 0,
                    f"{control['answered']}/{control['sent']} answered, {control['not_sent']} not sendable"),
            Verdict("no line duplicated or out of order", lines["duplicated"] == 0 and lines["out_of_order"] == 0,
                    f"{lines['duplicated']} duplicated, {lines['out_of_order']} out of order"),
            Verdict(f"≤ {allowed_lost} line(s) lost", lines["missing"] <= allowed_lost,
                    f"{lines['received']}/{lines['expected']} received, {lines['missing']} missing"
                    + (f" (lines {', '.join(map(str, self.missing_lines))})" if self.missing_lines else "")),
            Verdict("every acknowledged write intact", not http["bad_writes"],
                    f"{len(http['bad_writes'])} of {http['acknowledged_writes']} bad"),
            Verdict("≤ 1 failed HTTP request per fault", http["failed"] <= faults,
                    f"{http['failed']} of {http['requests']} failed, {faults} faults"),
        ]

    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts())

    def text(self) -> str:
        faults = ", ".join(f"{n} {k}" for k, n in self.faults.items())
        return "\n".join([
            f"soak: {self.options['seconds']:g} s, {2 * self.options['delay'] * 1000:g} ms round trip, seed "
            f"{self.options['seed']}, {self.event_loop}; {self.seconds:.0f} s in all",
            f"faults: {sum(self.faults.values())} ({faults})",
            f"lines: {self.lines}",
            f"control requests: {self.control}",
            f"execute_reply: {self.execute_reply}",
            f"websocket closes seen by the IDE: {self.ws_closes or 'none'}"
            + (f"; failed reopenings: {self.ws_open_failures}" if self.ws_open_failures else ""),
            f"HTTP: {self.http['requests']} requests, {self.http['failed']} failed {self.http['failed_by']}; "
            f"{self.http['acknowledged_writes']} acknowledged writes, {len(self.http['bad_writes'])} bad"
            + (f": {self.http['bad_writes'][:5]}" if self.http["bad_writes"] else ""),
            f"proxy log: {self.reconnect_log}",
            f"link: {self.link}",
            *(f"  {'met   ' if v.ok else 'FAILED'} {v.criterion}: {v.figure}" for v in self.verdicts()),
        ])


def _settings(server: DemoServer, link_port: int) -> Settings:
    """The proxy as a user configures it, reaching the server through the link (as tests/conftest.py does)."""
    hub = replace(HubAddress.parse(URL(f"https://127.0.0.1:{link_port}")), user=server.username, server="")
    return Settings(listen_host="127.0.0.1", listen_port=0, hub=hub, tls_name=server.tls_name,
                    ca_file=server.ca_file, hub_token=server.token, local_token=secrets.token_hex(16),
                    log_level="info")


async def _inject_faults(link: LinkEmulator, rng: random.Random, until: float, done: list[tuple[float, str]],
                         clock: Callable[[], float]) -> None:
    loop = asyncio.get_running_loop()
    kinds, weights = list(FAULT_WEIGHTS), list(FAULT_WEIGHTS.values())
    while True:
        gap = rng.uniform(*FAULT_GAP_S)
        if loop.time() + gap >= until:
            return
        await asyncio.sleep(gap)
        kind = rng.choices(kinds, weights)[0]
        done.append((round(clock(), 2), kind.value))
        if kind is FaultKind.HOLD:
            link.hold(HOLD_S)
        else:
            if kind is FaultKind.REFUSE:
                link.refuse_new(True)
            link.reset_all()
            if kind is FaultKind.REFUSE:
                try:
                    await asyncio.sleep(REFUSE_S)
                finally:
                    link.refuse_new(False)


async def _until_answered(kernel_ws: KernelSocket, answered: asyncio.Event, session: str) -> None:
    """A control kernel_info_request every second until one is answered: the kernel is ready."""
    while not answered.is_set():
        await kernel_ws.send("control", request("kernel_info_request", {}, session))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(answered.wait(), 1)


async def _every(interval: float, until: float, step: Callable[[int], Any]) -> None:
    """``await step(n)`` every ``interval`` seconds (at once if the last one took longer) until ``until``."""
    loop = asyncio.get_running_loop()
    number, due = 0, loop.time()
    while due < until:
        await asyncio.sleep(max(0.0, due - loop.time()))
        await step(number)
        number += 1
        due = max(due + interval, loop.time())


class _Soak:
    """What the IDE side of one soak sees: the cell's lines and reply, the control replies, the faults so far."""

    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()  # from the counting cell's execute_request on
        self.lines = Lines(int(options.seconds / LINE_INTERVAL_S))
        self.control = ControlRequests()
        self.execute_id = ""
        self.execute_reply: asyncio.Future[str] = self.loop.create_future()
        self.kernel_ready = asyncio.Event()  # a control reply came before the soak: the kernel answers
        self.fault_times: list[tuple[float, str]] = []

    def clock(self) -> float:
        """When something happened, in the soak's seconds."""
        return self.loop.time() - self.start

    def on_message(self, message: dict[str, Any]) -> None:
        parent = message["parent_header"].get("msg_id", "")
        kind = message["header"]["msg_type"]
        if kind == "kernel_info_reply" and message["channel"] == "control":
            if self.execute_id:
                self.control.reply(parent)
            self.kernel_ready.set()
        elif parent == self.execute_id and self.execute_id:
            if kind == "stream":
                self.lines.add(message["content"]["text"])
            elif kind == "execute_reply" and not self.execute_reply.done():
                self.execute_reply.set_result(str(message["content"]["status"]))

    async def run(self, link: LinkEmulator, kernel_ws: KernelSocket, http: HttpWork, session: str,
                  say: Callable[[str], None]) -> None:
        """The counting cell, then control requests, HTTP work and faults until the soak's end; then the grace
        periods for what is still in flight."""
        await asyncio.wait_for(_until_answered(kernel_ws, self.kernel_ready, session), READY_TIMEOUT_S)
        cell = request("execute_request", {"code": counting_cell(self.lines.expected), "silent": False,
                                           "store_history": False, "user_expressions": {}, "allow_stdin": False,
                                           "stop_on_error": True}, session)
        self.execute_id = cell["header"]["msg_id"]
        self.start = self.loop.time()
        if not await kernel_ws.send("shell", cell):
            raise RuntimeError("the kernel websocket closed before the soak began")
        until = self.start + self.options.seconds
        say(f"soak: {self.options.seconds:g} s, seed {self.options.seed}, {self.lines.expected} lines expected")

        async def control_step(_: int) -> None:
            message = request("kernel_info_request", {}, session)
            if await kernel_ws.send("control", message):
                self.control.sent[message["header"]["msg_id"]] = self.loop.time()
            else:
                self.control.not_sent += 1

        async def progress() -> None:
            while True:
                await asyncio.sleep(10)
                say(f"  {self.clock():5.0f} s: {len(self.fault_times)} faults, {len(set(self.lines.arrived))} "
                    f"lines, control {len(self.control.answered)}/{len(self.control.sent)}, HTTP "
                    f"{http.requests - sum(http.failures.values())}/{http.requests} ok, {len(kernel_ws.closes)} "
                    f"websocket closes")

        reporter = asyncio.create_task(progress())
        try:
            await asyncio.gather(
                _inject_faults(link, random.Random(self.options.seed), until, self.fault_times, self.clock),
                _every(CONTROL_INTERVAL_S, until, control_step),
                _every(HTTP_INTERVAL_S, until, http.round))
            say("soak over: waiting for the cell's reply and the last control replies")
            await asyncio.gather(self._control_settled(), self._reply_settled())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(http.final_check(), FINAL_CHECK_S)
        finally:
            reporter.cancel()

    async def _control_settled(self) -> None:
        deadline = self.loop.time() + CONTROL_GRACE_S
        while self.control.unanswered() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def _reply_settled(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.execute_reply), REPLY_GRACE_S)


async def run_soak(server: DemoServer, options: SoakOptions,
                   progress: Callable[[str], None] | None = None) -> SoakReport:
    """The soak against ``server`` (running), in the running event loop; the link and the proxy started here."""
    say = progress or (lambda _msg: None)
    soak = _Soak(options)
    started = soak.loop.time()
    proxy_log, reconnect_log = logging.getLogger(LOGGER), ReconnectLog()
    old_level = proxy_log.level
    proxy_log.addHandler(reconnect_log)
    if proxy_log.getEffectiveLevel() > logging.INFO:
        proxy_log.setLevel(logging.INFO)
    runner: ProxyRunner | None = None
    try:
        with LinkEmulator.in_thread("127.0.0.1", int(server.url.rsplit(":", 1)[1]), delay=options.delay) as link:
            settings = _settings(server, link.port)
            runner = ProxyRunner(settings)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            say(f"proxy on {url} → link :{link.port} ({options.delay * 1000:g} ms each way) → {server.url}")
            async with ide_session(url, settings.local_token,
                                   timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as client:
                ids = await start_session(client, await new_notebook(client))
                directory = f"soak-{options.seed}-{secrets.token_hex(3)}"
                async with client.put(f"/api/contents/{directory}", json={"type": "directory"}) as response:
                    assert response.status == 201, await response.text()
                http = HttpWork(client, directory)
                kernel_ws = KernelSocket(client, ids, soak.on_message, soak.clock)
                await kernel_ws.start()
                try:
                    await soak.run(link, kernel_ws, http, ids["session"], say)
                finally:
                    await kernel_ws.stop()
            link_stats = dataclasses.asdict(link.stats())
    finally:
        if runner is not None:
            await runner.cleanup()
        proxy_log.removeHandler(reconnect_log)
        proxy_log.setLevel(old_level)
    return SoakReport(
        options=dataclasses.asdict(options), seconds=soak.loop.time() - started, event_loop=_loop_name(soak.loop),
        faults={k.value: sum(1 for _, kind in soak.fault_times if kind == k.value) for k in FaultKind},
        fault_times=soak.fault_times, lines=soak.lines.summary(), missing_lines=soak.lines.missing(), control=soak.control.summary(),
        execute_reply=soak.execute_reply.result() if soak.execute_reply.done() else None,
        ws_closes=kernel_ws.closes, ws_open_failures=dict(kernel_ws.open_failures), http=http.summary(),
        reconnect_log=dict(reconnect_log.counts), reconnect_log_lines=reconnect_log.lines, link=link_stats)


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


# ------------------------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the soak runs (default 120)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay of the link (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the proxy's (and the IDE's) event loop; default uvloop, as users run it")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    options = SoakOptions(seconds=args.seconds, delay=args.delay_ms / 1000, seed=args.seed)
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    from bench.processes import exit_on_signal
    from jupyter_dev_proxy.demo import start_demo_server
    signal.signal(signal.SIGTERM, exit_on_signal)
    say("starting jupyter_server + ipykernel (TLS, /user/alice/)")
    server = start_demo_server(USER)
    try:
        if args.event_loop == "uvloop":
            import uvloop
            report = uvloop.run(run_soak(server, options, say))
        else:
            report = asyncio.run(run_soak(server, options, say))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        server.stop()
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps({**dataclasses.asdict(report), "verdicts": [
            dataclasses.asdict(v) for v in report.verdicts()], "ok": report.ok()}, indent=1))
        say(f"wrote {args.json}")
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
