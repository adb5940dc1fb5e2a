"""bench/linkemu.py, the userspace WAN link: real sockets on 127.0.0.1 through it to a tiny echo server.

Timings are checked by lower bounds (what the emulator guarantees by construction) and only very generous upper
bounds, so that a loaded 2-core CI machine cannot make them fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import socket
import socketserver
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bench.linkemu import LinkEmulator

MiB = 1024 * 1024
# Far above any real delay here, far below a hang: the bound for "promptly" and for what must arrive.
PROMPT_S = 1.0
# What the relay may read past its queue bound in one go (asyncio reads up to 256 KiB per recv).
READ_MAX = 256 * 1024
LINKEMU = Path(__file__).resolve().parent.parent / "bench" / "linkemu.py"


class Echo:
    """An asyncio echo server that also records how each connection ended on its side ("eof" or "reset")."""

    def __init__(self) -> None:
        self.ends: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            self.ends.append("eof")
        except ConnectionResetError:
            self.ends.append("reset")
        finally:
            writer.close()

    async def __aenter__(self) -> Echo:
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    async with Echo() as server:
        yield server


async def connect(link: LinkEmulator) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", link.port)


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes = b"ping") -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), PROMPT_S * 5) == data
    return loop.time() - started


async def sees_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """The connection is reset or closed under the client (an RST, or EOF if the RST raced our read)."""
    try:
        if not writer.transport.is_closing():
            writer.write(b"x")
        return await asyncio.wait_for(reader.read(1), PROMPT_S) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PROMPT_S * 5
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_round_trip_pays_the_delay_both_ways(echo: Echo) -> None:
    async with LinkEmulator("127.0.0.1", echo.port, delay=0.025) as link:
        reader, writer = await connect(link)
        rtts = [await round_trip(reader, writer, b"%d" % i) for i in range(5)]
        writer.close()
    assert min(rtts) >= 0.050, rtts
    assert max(rtts) < PROMPT_S, rtts


async def test_a_new_connection_pays_the_tcp_handshakes_round_trip_once(echo: Echo) -> None:
    async with LinkEmulator("127.0.0.1", echo.port, delay=0.025) as link:
        started = time.monotonic()  # the handshake's round trip counts from the connection, which connect() makes
        reader, writer = await connect(link)
        first = await round_trip(reader, writer)  # as if sent one round trip after the connection was made
        since_connecting = time.monotonic() - started
        later = await round_trip(reader, writer)
        writer.close()
    assert since_connecting >= 0.100, since_connecting
    assert 0.050 <= later < first, (first, later)


async def test_5_mb_cross_both_ways_in_order_and_intact(echo: Echo) -> None:
    payload = random.Random(5).randbytes(5 * MiB)
    sizes = [1, 1000, 4096, 65536, 300_000, 7]  # odd sizes, so that chunks split and merge on the way
    async with LinkEmulator("127.0.0.1", echo.port, delay=0.025) as link:
        reader, writer = await connect(link)

        async def send() -> None:
            offset = 0
            for size in sizes * (len(payload) // sum(sizes) + 1):
                writer.write(payload[offset:offset + size])
                await writer.drain()
                offset += size
            writer.write_eof()  # the echo server sees EOF, closes, and its FIN comes back

        async def receive() -> tuple[int, str]:
            digest, total = hashlib.sha256(), 0
            while data := await reader.read(1 << 20):
                digest.update(data)
                total += len(data)
            return total, digest.hexdigest()

        _, (total, digest) = await asyncio.wait_for(asyncio.gather(send(), receive()), 30)
        assert (total, digest) == (len(payload), hashlib.sha256(payload).hexdigest())
        writer.close()
        await eventually(lambda: link.stats().open == 0, "the connection closes after EOF both ways")
        stats = link.stats()
    assert (stats.bytes_up, stats.bytes_down, stats.queued, stats.accepted) == (len(payload), len(payload), 0, 1)
    assert echo.ends == ["eof"]


async def test_a_4_mbit_cap_makes_1_mb_take_2_s(echo: Echo) -> None:
    payload = random.Random(4).randbytes(1_000_000)
    async with LinkEmulator("127.0.0.1", echo.port, bandwidth=4e6 / 8) as link:
        reader, writer = await connect(link)
        started = time.monotonic()
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 20) == payload
        elapsed = time.monotonic() - started
        writer.close()
    assert elapsed >= 1.5, elapsed  # 2 s at 500 kB/s, minus the first slices' catch-up


async def test_reset_all_resets_both_sides_promptly_and_the_link_still_works(echo: Echo) -> None:
    async with LinkEmulator("127.0.0.1", echo.port, delay=0.01) as link:
        reader, writer = await connect(link)
        await round_trip(reader, writer)
        link.reset_all()
        started = time.monotonic()
        assert await sees_reset(reader, writer)
        assert time.monotonic() - started < PROMPT_S
        await eventually(lambda: echo.ends == ["reset"], "the echo server sees an RST too")
        await eventually(lambda: link.stats().open == 0, "no connection is left open")
        writer.close()

        reader, writer = await connect(link)
        await round_trip(reader, writer)
        writer.close()


async def test_hold_delays_everything_then_delivers_it_in_order_without_closing(echo: Echo) -> None:
    async with LinkEmulator("127.0.0.1", echo.port, delay=0.005) as link:
        reader, writer = await connect(link)
        await round_trip(reader, writer)
        started = time.monotonic()
        link.hold(1.0)
        messages = [b"message %02d;" % i for i in range(10)]
        for message in messages:
            writer.write(message)
            await asyncio.sleep(0.02)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)  # silent, not closed
        assert await asyncio.wait_for(reader.readexactly(len(b"".join(messages))), 5) == b"".join(messages)
        assert time.monotonic() - started >= 1.0
        await round_trip(reader, writer)
        assert link.stats().open == 1 and echo.ends == []
        writer.close()


async def test_hold_0_ends_a_hold_early(echo: Echo) -> None:
    async with LinkEmulator("127.0.0.1", echo.port) as link:
        reader, writer = await connect(link)
        link.hold(60)
        writer.write(b"held")
        await asyncio.sleep(0.1)
        link.hold(0)
        assert await asyncio.wait_for(reader.readexactly(4), PROMPT_S) == b"held"
        writer.close()


async def test_refuse_new_resets_new_connections_but_not_open_ones(echo: Echo) -> None:
    async with LinkEmulator("127.0.0.1", echo.port, delay=0.005) as link:
        reader, writer = await connect(link)
        await round_trip(reader, writer)
        link.refuse_new(True)
        refused = await connect(link)
        assert await sees_reset(*refused)
        await round_trip(reader, writer)
        link.refuse_new(False)
        again = await connect(link)
        await round_trip(*again)
        stats = link.stats()
        assert (stats.accepted, stats.refused) == (2, 1)
        for _, w in (refused, again, (reader, writer)):
            w.close()


async def test_a_target_that_refuses_resets_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections to it are refused
        async with LinkEmulator("127.0.0.1", port, delay=0.005) as link:
            assert await sees_reset(*await connect(link))
            await eventually(lambda: link.stats().open == 0, "the failed connection is forgotten")


async def test_a_target_that_does_not_read_bounds_the_queue() -> None:
    max_queued = 1 * MiB
    with socket.socket() as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # the kernel's buffers stay small
        sink.bind(("127.0.0.1", 0))
        sink.listen()
        async with LinkEmulator("127.0.0.1", sink.getsockname()[1], max_queued=max_queued) as link:
            reader, writer = await connect(link)
            writer.write(bytes(32 * MiB))  # far more than every buffer on the way
            await eventually(lambda: link.stats().queued >= max_queued, "the queue fills up")
            await asyncio.sleep(0.2)
            assert max_queued <= link.stats().queued <= max_queued + READ_MAX
            writer.transport.abort()


# ------------------------------------------------------------------------------------- from synchronous code

class _SyncEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(1 << 16):
                self.request.sendall(data)


@pytest.fixture
def sync_echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SyncEcho)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick to shut down
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def sync_round_trip(sock: socket.socket, data: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        assert chunk, "closed"
        got += chunk
    assert got == data
    return time.monotonic() - started


def test_in_a_thread_from_synchronous_code(sync_echo: int) -> None:
    with LinkEmulator.in_thread("127.0.0.1", sync_echo, delay=0.02) as link:
        sock = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            rtts = [sync_round_trip(sock) for _ in range(5)]
            assert min(rtts) >= 0.040 and statistics.median(rtts) < PROMPT_S, rtts

            started = time.monotonic()
            link.hold(0.3)
            sync_round_trip(sock)
            assert time.monotonic() - started >= 0.3
            assert link.stats().accepted == 1

            link.reset_all()
            sock.settimeout(PROMPT_S)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    assert not any(t.name.startswith("linkemu") for t in threading.enumerate())


async def test_the_command_line(echo: Echo) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(LINKEMU), "--target", f"127.0.0.1:{echo.port}", "--delay-ms", "10",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async def ask(line: str) -> dict[str, object]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(line.encode() + b"\n")
            answer: dict[str, object] = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            return answer

        port = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["port"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await round_trip(reader, writer) >= 0.020
        assert (await ask("stats"))["accepted"] == 1
        assert await ask("hold 0.05") == {"ok": "hold 0.05"}
        assert "error" in await ask("hold on")
        assert "error" in await ask("bogus")
        assert await ask("reset") == {"ok": "reset"}
        assert await sees_reset(reader, writer)
        writer.close()
        proc.stdin.close()  # end of input: the emulator stops
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
