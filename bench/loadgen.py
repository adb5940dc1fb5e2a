"""The benchmark's client: one long-lived aiohttp (+uvloop) process that runs one measurement at a time.

``bench/run.py`` starts it pinned to the core the proxy is not on and talks to it in JSON lines:
one command on stdin → one result on stdout. Every operation is bounded both in count and in time
(``max_s``); a result that hit its time bound says so (``"timed_out": true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's packages

from bench.processes import run_on_fastest_loop  # noqa: E402
from tests.kit.kernel import KERNEL_PROTOCOL, decode_v1, encode_v1, execute_request  # noqa: E402
MiB = 1024 * 1024
_PAYLOAD = bytes(range(256)) * (4 * MiB // 256)  # source of every body and message sent
_SSL: dict[str, ssl.SSLContext] = {}
_OPEN_WS: list[tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]] = []


def _ssl_for(cmd: dict[str, Any]) -> ssl.SSLContext | bool:
    ca = cmd.get("ca")
    if not ca:
        return not cmd["url"].startswith(("http:", "ws:"))
    if ca not in _SSL:
        _SSL[ca] = ssl.create_default_context(cafile=ca)
    return _SSL[ca]


def _session(cmd: dict[str, Any], limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=_ssl_for(cmd), limit=limit),
        headers=cmd.get("headers", {}), auto_decompress=False, read_bufsize=1 * MiB,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def _lat_result(samples_ns: list[int], timed_out: bool) -> dict[str, Any]:
    us = [x / 1000 for x in samples_ns]
    return {"n": len(us), "p50_us": _pct(us, 50), "p99_us": _pct(us, 99), "timed_out": timed_out}


async def get_latency(cmd: dict[str, Any]) -> dict[str, Any]:
    """Sequential GETs on one keep-alive connection (concurrency 1)."""
    url, n, deadline = cmd["url"], cmd["n"], time.monotonic() + cmd["max_s"]
    samples: list[int] = []
    async with _session(cmd, limit=1) as session:
        for _ in range(cmd.get("warmup", 20)):
            async with session.get(url) as r:
                await r.read()
                r.raise_for_status()
        while len(samples) < n and time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            async with session.get(url) as r:
                await r.read()
            samples.append(time.perf_counter_ns() - t0)
            if r.status != 200:
                raise RuntimeError(f"GET {url} → {r.status}")
    return _lat_result(samples, len(samples) < n)


async def get_throughput(cmd: dict[str, Any]) -> dict[str, Any]:
    """``conc`` keep-alive connections issuing GETs back to back for ``duration`` seconds."""
    url, conc, duration = cmd["url"], cmd["conc"], cmd["duration"]
    done = errors = 0
    async with _session(cmd, limit=conc) as session:
        stop_at = 0.0

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < stop_at:
                async with session.get(url) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        errors += 1

        stop_at = time.monotonic() + 0.3  # warm-up: open the connections
        await asyncio.gather(*(worker() for _ in range(conc)))
        done = errors = 0
        t0 = time.monotonic()
        stop_at = t0 + duration
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.monotonic() - t0
    return {"rps": done / elapsed, "errors": errors, "requests": done}


async def download(cmd: dict[str, Any]) -> dict[str, Any]:
    received = 0
    async with _session(cmd) as session:
        async with asyncio.timeout(cmd["max_s"]):
            t0 = time.perf_counter()
            async with session.get(cmd["url"]) as r:
                r.raise_for_status()
                while chunk := await r.content.readany():
                    received += len(chunk)
            elapsed = time.perf_counter() - t0
    if received != cmd["bytes"]:
        raise RuntimeError(f"download got {received} bytes, expected {cmd['bytes']}")
    return {"bytes": received, "seconds": elapsed, "mib_s": received / MiB / elapsed}


async def upload(cmd: dict[str, Any]) -> dict[str, Any]:
    size = cmd["bytes"]
    chunk = memoryview(_PAYLOAD)[:1 * MiB]

    async def body():  # type: ignore[no-untyped-def]
        left = size
        while left > 0:
            n = min(left, len(chunk))
            yield chunk[:n]
            left -= n

    async with _session(cmd) as session:
        async with asyncio.timeout(cmd["max_s"]):
            t0 = time.perf_counter()
            async with session.put(cmd["url"], data=body(), headers={"Content-Length": str(size),
                                                                     "Content-Type": "application/octet-stream"}) as r:
                answer = await r.json()
            elapsed = time.perf_counter() - t0
    if answer.get("received") != size:
        raise RuntimeError(f"upload: upstream received {answer}, sent {size}")
    return {"bytes": size, "seconds": elapsed, "mib_s": size / MiB / elapsed}


async def _ws(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, protocols=(KERNEL_PROTOCOL,), max_msg_size=0, autoping=True)
    if ws.protocol != KERNEL_PROTOCOL:
        await ws.close()
        raise RuntimeError(f"websocket subprotocol lost: got {ws.protocol!r}")
    return ws


async def ws_rtt(cmd: dict[str, Any]) -> dict[str, Any]:
    """Send one message, wait for its echo, repeat (concurrency 1)."""
    msg = _PAYLOAD[:cmd["size"]]
    n, deadline = cmd["n"], time.monotonic() + cmd["max_s"]
    samples: list[int] = []
    async with _session(cmd) as session:
        ws = await _ws(session, cmd["url"])
        for _ in range(cmd.get("warmup", 50)):
            await ws.send_bytes(msg)
            await ws.receive()
        while len(samples) < n and time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            await ws.send_bytes(msg)
            reply = await ws.receive()
            samples.append(time.perf_counter_ns() - t0)
            if reply.type is not aiohttp.WSMsgType.BINARY or len(reply.data) != len(msg):
                raise RuntimeError(f"bad echo: {reply.type}")
        await ws.close()
    return _lat_result(samples, len(samples) < n)


def _comm_msg(size: int) -> bytes:
    """A v1 kernel message of about ``size`` bytes: a widget's comm_msg, which the proxy's kernel ledger reads
    (random bytes it rejects from their first 8)."""
    message = {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "comm_msg", "username": "ide",
                          "session": uuid.uuid4().hex, "date": "2026-12-02T00:00:00.000000Z", "version": "5.3"},
               "parent_header": {}, "metadata": {}, "content": {"comm_id": uuid.uuid4().hex, "data": {}}}
    padding = size - len(encode_v1("shell", message))
    message["content"]["data"] = {"value": "x" * max(0, padding - 13)}
    return encode_v1("shell", message)


async def ws_pipelined(cmd: dict[str, Any]) -> dict[str, Any]:
    """Send ``count`` messages back to back while a second task reads the echoes; rate = echoes / time. With
    ``kernel``: each message a kernel's comm_msg, else random bytes."""
    msg = _comm_msg(cmd["size"]) if cmd.get("kernel") else _PAYLOAD[:cmd["size"]]
    count = cmd["count"]
    async with _session(cmd) as session:
        ws = await _ws(session, cmd["url"])
        for _ in range(10):
            await ws.send_bytes(msg)
            await ws.receive()
        sent = received = 0
        stop = False
        t0 = time.perf_counter()
        deadline = time.monotonic() + cmd["max_s"]

        async def sender() -> None:
            nonlocal sent
            while sent < count and not stop and time.monotonic() < deadline:
                await ws.send_bytes(msg)
                sent += 1

        async def receiver() -> None:
            nonlocal received
            while received < count:
                reply = await ws.receive()
                if reply.type is not aiohttp.WSMsgType.BINARY:
                    raise RuntimeError(f"bad echo: {reply.type}")
                received += 1

        send_task = asyncio.ensure_future(sender())
        timed_out = False
        try:
            await asyncio.wait_for(receiver(), timeout=cmd["max_s"] + 5)
        except TimeoutError:
            timed_out = True
        stop = True
        await send_task
        elapsed = time.perf_counter() - t0
        await ws.close()
    return {"messages": received, "seconds": elapsed, "msgs_s": received / elapsed,
            "mib_s": received * len(msg) / MiB / elapsed, "timed_out": timed_out or received < count}


async def ws_open_many(cmd: dict[str, Any]) -> dict[str, Any]:
    """Open ``n`` websockets (``conc`` handshakes at a time), each echoes one 1 KiB message; keep them open."""
    msg = _PAYLOAD[:1024]
    session = _session(cmd, limit=0)
    errors: list[str] = []
    sem = asyncio.Semaphore(cmd.get("conc", 50))
    echoed = 0

    async def one() -> None:
        nonlocal echoed
        async with sem:
            try:
                ws = await _ws(session, cmd["url"])
                _OPEN_WS.append((session, ws))
                await ws.send_bytes(msg)
                reply = await ws.receive(timeout=30)
                if reply.type is aiohttp.WSMsgType.BINARY and reply.data == msg:
                    echoed += 1
                else:
                    errors.append(f"bad echo {reply.type}")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc)[:200])

    t0 = time.perf_counter()
    async with asyncio.timeout(cmd["max_s"]):
        await asyncio.gather(*(one() for _ in range(cmd["n"])))
    return {"opened": len(_OPEN_WS), "echoed": echoed, "errors": len(errors), "first_errors": errors[:3],
            "seconds": time.perf_counter() - t0}


async def ws_check_close_all(cmd: dict[str, Any]) -> dict[str, Any]:
    """Each websocket opened by ws_open_many echoes one more message, then all are closed."""
    msg = _PAYLOAD[:1024]
    echoed = 0
    sem = asyncio.Semaphore(100)

    async def one(ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal echoed
        async with sem:
            with contextlib.suppress(Exception):  # a failure is counted: not echoed
                await ws.send_bytes(msg)
                reply = await ws.receive(timeout=30)
                echoed += reply.type is aiohttp.WSMsgType.BINARY and reply.data == msg
            await ws.close()

    sockets = list(_OPEN_WS)
    _OPEN_WS.clear()
    try:
        async with asyncio.timeout(cmd.get("max_s", 120)):
            await asyncio.gather(*(one(ws) for _, ws in sockets))
    finally:
        for session in {id(s): s for s, _ in sockets}.values():
            await session.close()
    return {"echoed": echoed, "closed": len(sockets)}


async def kernel_start(cmd: dict[str, Any]) -> dict[str, Any]:
    async with _session(cmd) as session:
        async with asyncio.timeout(cmd.get("max_s", 60)):
            async with session.post(cmd["url"], json={"name": "python3"}) as r:
                r.raise_for_status()
                kernel = await r.json()
    return {"id": kernel["id"]}


async def _execute_once(ws: aiohttp.ClientWebSocketResponse, session_id: str, code: str,
                        results: set[str]) -> int:
    """Send one execute_request; ns until both its execute_reply and its idle status have arrived."""
    msg = execute_request(code, session_id, username="bench")
    msg_id = msg["header"]["msg_id"]
    frame = encode_v1("shell", msg)
    t0 = time.perf_counter_ns()
    await ws.send_bytes(frame)
    got_reply = got_idle = False
    async with asyncio.timeout(30):
        while not (got_reply and got_idle):
            reply = await ws.receive()
            if reply.type is not aiohttp.WSMsgType.BINARY:
                raise RuntimeError(f"kernel websocket: unexpected {reply.type}")
            message = decode_v1(reply.data)
            header, parent, content = message["header"], message["parent_header"], message["content"]
            if parent.get("msg_id") != msg_id:
                continue  # another connection's execution (iopub is broadcast), or an older one
            kind = header["msg_type"]
            got_reply = got_reply or kind == "execute_reply"
            got_idle = got_idle or (kind == "status" and content.get("execution_state") == "idle")
            if kind == "execute_result":
                results.add(content["data"]["text/plain"])
    return time.perf_counter_ns() - t0


async def kernel_execute(cmd: dict[str, Any]) -> dict[str, Any]:
    """Execute ``code`` ``n`` times over each target's kernel websocket, the targets taking turns.

    Paired turns matter: ipykernel's own RTT drifts between levels (here ~44 and ~48 ms) for seconds at a
    time, so candidates measured one after the other would compare the kernel's moods, not the paths.
    """
    targets, n, deadline = cmd["targets"], cmd["n"], time.monotonic() + cmd["max_s"]
    sessions: list[aiohttp.ClientSession] = []
    sockets: list[tuple[aiohttp.ClientWebSocketResponse, str]] = []
    samples: list[list[int]] = [[] for _ in targets]
    results: list[set[str]] = [set() for _ in targets]
    try:
        for t in targets:
            sessions.append(_session(t))
            session_id = uuid.uuid4().hex
            sockets.append((await _ws(sessions[-1], f"{t['url']}?session_id={session_id}"), session_id))
        for _ in range(cmd.get("warmup", 3)):
            for (ws, sid), res in zip(sockets, results):
                await _execute_once(ws, sid, cmd["code"], res)
        i = 0
        while min(len(s) for s in samples) < n and time.monotonic() < deadline:
            k = len(targets)
            for j in [(i + x) % k for x in range(k)]:  # rotate who goes first
                ws, sid = sockets[j]
                samples[j].append(await _execute_once(ws, sid, cmd["code"], results[j]))
            i += 1
    finally:
        for ws, _ in sockets:
            await ws.close()
        for session in sessions:
            await session.close()
    out = []
    for s, res in zip(samples, results):
        one = _lat_result(s, len(s) < n)
        one["results"] = sorted(res)
        one["samples_us"] = [x / 1000 for x in s]
        out.append(one)
    return {"targets": out}


OPS = {f.__name__: f for f in (get_latency, get_throughput, download, upload, ws_rtt, ws_pipelined,
                               ws_open_many, ws_check_close_all, kernel_start, kernel_execute)}


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 * MiB)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            result = {"ok": True, **await OPS[cmd["op"]](cmd)}
        except Exception as exc:  # noqa: BLE001 - reported to run.py, which decides
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run_on_fastest_loop(serve())  # the proxy's loop when installed: the same for every process


if __name__ == "__main__":
    main()
