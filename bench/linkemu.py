"""A userspace WAN link for tests and benchmarks: delay, a bandwidth cap and faults, with no root and no netem.

    python bench/linkemu.py --target 127.0.0.1:8443 --delay-ms 20 --bandwidth-mbit 50

A TCP relay on 127.0.0.1 (an ephemeral port unless --listen-port) that forwards every connection it accepts
to the target and puts an emulated link between the two sockets:

- a one-way delay, per chunk and in order: each direction is a queue of (due time, chunk), a chunk read at
  t is written at t + delay by a timer (loop.call_at), so the delay costs latency, not throughput (up to
  ``max_queued`` bytes per direction and connection are in flight);
- a bandwidth cap per direction (bytes/s), shared by every connection as on one access link: connections
  take turns sending slices of ~2 ms, so one connection's backlog does not delay another's (as behind a
  fair-queuing router);
- back-pressure: the relay stops reading a socket while its direction holds ``max_queued`` bytes, so memory
  stays bounded: at most about 2 x (max_queued + 0.6 MiB) per connection, 9 MiB with the default;
- faults that hit the whole link at once: ``reset_all()`` (every connection gets an RST on both sides),
  ``hold(s)`` (nothing is delivered for s seconds, then everything is, in order: a link that goes silent
  without a reset), ``refuse_new(True)`` (new connections are accepted and reset at once);
- counters: ``stats()``.

Three ways to run it:

    async with LinkEmulator("127.0.0.1", port, delay=0.02) as link: ...   # in this event loop; link.port
    with LinkEmulator.in_thread("127.0.0.1", port, delay=0.02) as link: ...  # own loop in a thread; the fault
                                                                           # methods are thread-safe
    python bench/linkemu.py --target HOST:PORT ...  # prints {"port": N}; on stdin, one command a line:
                                                    # reset | hold SECONDS | refuse on|off | stats
                                                    # (one JSON answer a line); stops when stdin closes

What a relay cannot emulate, and how it makes up for it: the client's connect() completes at once (the kernel
accepts before the relay sees the connection), where over a real link it takes a round trip (SYN, SYN-ACK). So
the client's first bytes are delivered as if sent one round trip after connecting: a new connection costs its
round trip, and a request on a fresh TLS connection costs three (TCP, TLS, the request), as on a real link. A
refused connection is seen as a reset after connecting, not as ECONNREFUSED.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import enum
import json
import socket
import struct
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

T = TypeVar("T")
MiB = 1024 * 1024

# What one direction of one connection may hold before the relay stops reading its source. It is also the
# window of the emulated link: throughput <= max_queued / delay (4 MiB over 20 ms is 200 MiB/s, 1.6 Gbit/s),
# so it does not limit a realistic WAN link. Past it, one read (256 KiB) can still arrive, and the transport
# buffers up to its 64 KiB high-water mark plus one chunk: hence the ~0.6 MiB above.
MAX_QUEUED = 4 * MiB
# A capped link sends what it can in this much time at once, and at least one Ethernet packet: small enough
# that bytes arrive smoothly, not in one burst per chunk read (up to 256 KiB); large enough to need few timers.
SLICE_S = 0.002
PACKET = 1500
# A capped link makes up for a late timer, but saves up no more idle capacity than this (a token bucket's depth).
BURST_S = 0.005
# A thread-safe call, start or stop waits this long for the emulator's loop before giving up.
CALL_TIMEOUT_S = 10.0
# Bursts of connects must not overflow the accept queue (the benchmark opens 2,000 websockets 50 at a time).
BACKLOG = 4096
# SO_LINGER on with 0 s: close() sends an RST instead of a FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


class _Mark(enum.Enum):
    """What travels in a direction's queue besides bytes, in order with them."""

    EOF = "eof"      # the source shut down its sending side: shut down the destination's (half-close)
    RESET = "reset"  # the source went away without a FIN: reset the whole connection


@dataclasses.dataclass(frozen=True)
class LinkStats:
    accepted: int    # connections relayed so far (refused ones not included)
    refused: int     # connections reset as soon as accepted, because of refuse_new(True)
    open: int        # relayed connections with a socket still open
    bytes_up: int    # delivered from clients to the target
    bytes_down: int  # delivered from the target to clients
    queued: int      # bytes inside the link now: read, not delivered yet


def _rst(transport: asyncio.Transport) -> None:
    """Close with an RST, as a crashed peer or a middlebox does, rather than with a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class _Lane:
    """One direction of the link, shared by all its connections: when its capped wire is free again."""

    def __init__(self) -> None:
        self.free_at = 0.0
        self.delivered = 0


class _Side(asyncio.Protocol):
    """One socket of a relayed connection: the accepted client's, or the one to the target."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.gone = False
        self.out: _Pipe   # what this socket sends
        self.into: _Pipe  # what is sent to this socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without subclassing it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a small write must not wait
        self.conn.made(self)

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.push(_Mark.EOF)
        return True  # keep the socket open for the other direction: the FIN crosses the link instead

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.conn.lost(self)

    def pause_writing(self) -> None:
        self.into.blocked = True

    def resume_writing(self) -> None:
        self.into.blocked = False
        self.into.pump()


class _Pipe:
    """One direction of one connection: chunks queued with their due time, written to the destination in order."""

    def __init__(self, conn: _Conn, lane: _Lane, src: _Side, dst: _Side) -> None:
        self.conn, self.link, self.lane, self.src, self.dst = conn, conn.link, lane, src, dst
        src.out = dst.into = self
        self.queue: collections.deque[tuple[float, bytes | _Mark]] = collections.deque()
        self.sent = 0                         # bytes of the head chunk written already (a capped link slices it)
        self.slice_done: float | None = None  # when the slice reserved on the capped wire has crossed it
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.reading = True                   # False: the source is paused because the queue is full
        self.blocked = False                  # the destination's transport buffer is full (pause_writing)
        self.stopped = False
        self.sendable_at = 0.0                # nothing leaves before this: the TCP handshake's round trip

    def push(self, item: bytes | _Mark) -> None:
        if self.stopped:
            return
        link = self.link
        self.queue.append((max(link.loop.time(), self.sendable_at) + link.delay, item))
        if isinstance(item, bytes):
            self.queued += len(item)
            if self.reading and self.queued >= link.max_queued and self.src.transport is not None:
                self.reading = False
                self.src.transport.pause_reading()
        if self.timer is None:
            self.pump()

    def pump(self) -> None:
        """Write everything that is due, in order, and arm the timer for what comes next."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        link = self.link
        while self.queue and not (self.blocked or link.held or self.dst.transport is None):
            ready_at, item = self.queue[0]
            now = link.loop.time()
            if ready_at > now:
                self.timer = link.loop.call_at(ready_at, self.pump)
                return
            if isinstance(item, _Mark):
                self.queue.popleft()
                self.conn.arrived(self, item)
                continue
            n = len(item) - self.sent
            if link.bandwidth is not None:
                n = min(n, link.slice_bytes)
                if self.slice_done is None:  # reserve the wire for the next slice, after whatever is on it
                    start = max(ready_at, self.lane.free_at, now - BURST_S)
                    self.slice_done = self.lane.free_at = start + n / link.bandwidth
                if self.slice_done > now:
                    self.timer = link.loop.call_at(self.slice_done, self.pump)
                    return
                self.slice_done = None
            self.dst.transport.write(item if n == len(item) else memoryview(item)[self.sent:self.sent + n])
            self.sent += n
            self.queued -= n
            self.lane.delivered += n
            if self.sent == len(item):
                self.queue.popleft()
                self.sent = 0
            if not self.reading and self.queued <= link.max_queued // 2:
                self.resume_source()

    def resume_source(self) -> None:
        self.reading = True
        if self.src.transport is not None and not self.src.transport.is_closing():
            self.src.transport.resume_reading()

    def stop(self) -> None:
        """Deliver nothing more; what the source still sends is read and dropped."""
        self.stopped = True
        self.queue.clear()
        self.queued = 0
        self.slice_done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.reading:
            self.resume_source()


class _Conn:
    """One relayed connection: the client's socket, the target's, and a pipe each way."""

    def __init__(self, link: LinkEmulator) -> None:
        self.link = link
        self.client, self.upstream = _Side(self), _Side(self)
        self.up = _Pipe(self, link.lanes[0], self.client, self.upstream)
        self.down = _Pipe(self, link.lanes[1], self.upstream, self.client)
        # Over a real link the client could send only once SYN and SYN-ACK had crossed it: one round trip.
        self.up.sendable_at = link.loop.time() + 2 * link.delay
        self.eofs = 0
        self.connecting = False
        self.closed = False  # we are closing it (or refused it): losing its sockets is expected

    def made(self, side: _Side) -> None:
        if side is self.client:
            self.link.accept(self)
        elif self.closed:
            assert side.transport is not None
            _rst(side.transport)
        else:
            self.up.pump()  # what the client sent while the target was being connected

    def lost(self, side: _Side) -> None:
        if not self.closed:
            # Gone without our closing it (an RST, an error): nothing more can reach it, and the other side
            # is reset one delay later, as its next packet would be answered.
            side.into.stop()
            side.out.push(_Mark.RESET)
        self.link.forget_if_done(self)

    def arrived(self, pipe: _Pipe, mark: _Mark) -> None:
        if mark is _Mark.RESET:
            self.finish(graceful=False)
            return
        assert pipe.dst.transport is not None
        if not pipe.dst.transport.is_closing():
            with contextlib.suppress(OSError):  # the peer reset it meanwhile: its own loss is on the way
                pipe.dst.transport.write_eof()
        self.eofs += 1
        if self.eofs == 2:  # both sides said goodbye and both heard it
            self.finish(graceful=True)

    def finish(self, graceful: bool) -> None:
        self.closed = True
        self.up.stop()
        self.down.stop()
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.gone:
                if graceful:
                    side.transport.close()  # after flushing what is buffered
                else:
                    _rst(side.transport)

    def done(self) -> bool:
        return not self.connecting and all(s.transport is None or s.gone for s in (self.client, self.upstream))


class LinkEmulator:
    """A TCP relay from 127.0.0.1:``port`` to ``target_host:target_port`` through an emulated WAN link.

    ``delay`` is one way, in seconds (the round trip pays it twice); ``bandwidth`` caps each direction, in
    bytes/s, for all connections together (None: no cap); ``max_queued`` bounds the bytes held per direction
    and connection (reading stops beyond it). ``reset_all``, ``hold``, ``refuse_new`` and ``stats`` may be
    called from any thread: from another one than the emulator's loop they wait until it has done them.
    """

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0, bandwidth: float | None = None,
                 listen_host: str = "127.0.0.1", listen_port: int = 0, max_queued: int = MAX_QUEUED) -> None:
        if delay < 0:
            raise ValueError(f"the delay must be 0 or more seconds, not {delay}")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"the bandwidth must be more than 0 bytes/s (or None), not {bandwidth}")
        if max_queued <= 0:
            raise ValueError(f"max_queued must be more than 0 bytes, not {max_queued}")
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.delay, self.bandwidth, self.max_queued = delay, bandwidth, max_queued
        self.slice_bytes = max(PACKET, int(bandwidth * SLICE_S)) if bandwidth else 0
        self.port = 0
        self.lanes = (_Lane(), _Lane())  # client → target, target → client
        self.held = False
        self.refusing = False
        self.accepted = self.refused = 0
        self.conns: set[_Conn] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self._thread_id = 0
        self._server: asyncio.Server | None = None
        self._connects: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # not held: new connections may reach the target
        self._release: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------------------------- running

    async def start(self) -> LinkEmulator:
        self.loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._flowing.set()
        self._server = await self.loop.create_server(lambda: _Conn(self).client, *self.listen, backlog=BACKLOG)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and reset every connection still open."""
        if self._server is None:
            return
        self._server.close()
        self._reset_all()
        for task in self._connects:
            task.cancel()
        await asyncio.gather(*self._connects, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if self._release is not None:
            self._release.cancel()

    async def __aenter__(self) -> LinkEmulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, target_host: str, target_port: int, **options: Any) -> Iterator[LinkEmulator]:
        """The emulator on its own event loop in a daemon thread, for clients that are not in an event loop of
        this thread (synchronous code, subprocesses); ``options`` are the constructor's."""
        link = cls(target_host, target_port, **options)
        # The standard loop even when uvloop is installed: uvloop's clock counts whole milliseconds, which
        # would make each delay up to 1 ms short.
        loop = asyncio.SelectorEventLoop()
        thread = threading.Thread(target=loop.run_forever, name=f"linkemu→{target_host}:{target_port}", daemon=True)
        thread.start()

        def run(step: Callable[[], Awaitable[object]]) -> None:
            async def call() -> None:
                await step()
            asyncio.run_coroutine_threadsafe(call(), loop).result(CALL_TIMEOUT_S)

        try:
            run(link.start)
            try:
                yield link
            finally:
                run(link.stop)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()

    # ------------------------------------------------------------------------------------- faults, stats

    def reset_all(self) -> None:
        """Reset every open connection: both its client and the target get an RST, now."""
        self._call(self._reset_all)

    def hold(self, seconds: float) -> None:
        """Deliver nothing, either way, for ``seconds`` from now, then everything held, in order (connections
        stay open; new ones reach the target only then). Replaces a hold in progress: ``hold(0)`` ends it."""
        self._call(lambda: self._hold(seconds))

    def refuse_new(self, on: bool = True) -> None:
        """While on, every new connection is accepted and reset at once; open ones are not affected."""
        def refuse() -> None:
            self.refusing = on
        self._call(refuse)

    def stats(self) -> LinkStats:
        return self._call(self._stats) if self._server is not None else self._stats()

    def _call(self, fn: Callable[[], T]) -> T:
        """fn() on the emulator's loop: directly from its thread, else through the loop, waiting for it."""
        if self._server is None:
            raise RuntimeError("the link emulator is not running")
        if threading.get_ident() == self._thread_id:
            return fn()

        async def call() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(CALL_TIMEOUT_S)

    def _reset_all(self) -> None:
        for conn in list(self.conns):
            conn.finish(graceful=False)

    def _hold(self, seconds: float) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if seconds > 0:
            self.held = True
            self._flowing.clear()
            self._release = self.loop.call_later(seconds, self._hold, 0)
            return
        self.held = False
        self._flowing.set()
        for conn in list(self.conns):
            conn.up.pump()
            conn.down.pump()

    def _stats(self) -> LinkStats:
        queued = sum(conn.up.queued + conn.down.queued for conn in self.conns)
        return LinkStats(self.accepted, self.refused, len(self.conns), self.lanes[0].delivered,
                         self.lanes[1].delivered, queued)

    # ----------------------------------------------------------------------------------------- connections

    def accept(self, conn: _Conn) -> None:
        if self.refusing:
            self.refused += 1
            conn.finish(graceful=False)
            return
        self.accepted += 1
        self.conns.add(conn)
        conn.connecting = True
        task = self.loop.create_task(self._connect(conn))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    async def _connect(self, conn: _Conn) -> None:
        try:
            await asyncio.sleep(self.delay)  # the connection request crosses the link too
            await self._flowing.wait()
            if not conn.closed:
                await self.loop.create_connection(lambda: conn.upstream, *self.target)
        except OSError:
            conn.down.push(_Mark.RESET)  # the target refused: the client is reset, one delay later
        finally:
            conn.connecting = False
            self.forget_if_done(conn)

    def forget_if_done(self, conn: _Conn) -> None:
        if conn.done():
            self.conns.discard(conn)


# ------------------------------------------------------------------------------------------- command line

def command(link: LinkEmulator, line: str) -> dict[str, Any]:
    """One stdin command → its JSON answer."""
    words = line.split()
    try:
        match words:
            case ["reset"]:
                link.reset_all()
            case ["hold", seconds]:
                link.hold(float(seconds))
            case ["refuse", "on" | "off" as state]:
                link.refuse_new(state == "on")
            case ["stats"]:
                return dataclasses.asdict(link.stats())
            case []:
                return {}
            case _:
                return {"error": "commands: reset | hold SECONDS | refuse on|off | stats"}
    except ValueError as exc:
        return {"error": str(exc)}
    return {"ok": " ".join(words)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, default=0, help="0 (the default): an ephemeral port")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay; the round trip pays it twice")
    parser.add_argument("--bandwidth-mbit", type=float, help="cap per direction, for all connections together")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--target must be HOST:PORT, not {args.target!r}")
    bandwidth = args.bandwidth_mbit * 1e6 / 8 if args.bandwidth_mbit is not None else None
    try:
        emulator = LinkEmulator.in_thread(host.strip("[]"), int(port), delay=args.delay_ms / 1000,
                                          bandwidth=bandwidth, listen_host=args.listen_host,
                                          listen_port=args.listen_port)
        with emulator as link:
            print(json.dumps({"port": link.port}), flush=True)
            print(f"{args.listen_host}:{link.port} → {args.target}, {args.delay_ms:g} ms each way, "
                  f"{f'{args.bandwidth_mbit:g} Mbit/s' if bandwidth else 'no bandwidth cap'}; "
                  "commands: reset | hold SECONDS | refuse on|off | stats (Ctrl-D ends)", file=sys.stderr)
            for line in sys.stdin:
                print(json.dumps(command(link, line)), flush=True)
    except ValueError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
