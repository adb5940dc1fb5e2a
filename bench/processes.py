"""The processes a benchmark starts, and reading their output: each in its own process group, all stopped by
their ids when the benchmark ends, fails or is interrupted. Shared by bench/run.py and bench/wan.py; the loop the
started servers and clients run on, shared by them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from typing import Any

def run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (as the proxy does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


_STARTED: list[subprocess.Popen[Any]] = []
CLEANUPS: list[Callable[[], object]] = []  # other clean-ups (a demo server, temp dirs), run newest first


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start a process in its own process group (so nothing it starts outlives it: nginx's workers, kernels)
    and remember it."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group we started, SIGKILL it if it is still there after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of this group only
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            with contextlib.suppress(OSError):
                stream.close()
    if proc in _STARTED:
        _STARTED.remove(proc)


def cleanup() -> None:
    """Stop everything we started, newest first, then run the other clean-ups."""
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    for proc in reversed(list(_STARTED)):
        stop(proc, grace=3.0)
    while CLEANUPS:
        fn = CLEANUPS.pop()
        with contextlib.suppress(Exception):
            fn()


def exit_on_signal(signum: int, _frame: Any) -> None:
    """SIGTERM (and SIGINT) end the benchmark through its normal exit, so ``cleanup`` runs."""
    raise SystemExit(128 + signum)


class LineReader:
    """Lines from a child's stdout with a timeout (select + os.read: no hidden buffer select cannot see)."""

    def __init__(self, stream: Any) -> None:
        self.fd = stream.fileno()
        self.buf = b""

    def readline(self, timeout: float) -> str | None:
        """The next line, '' at end of file, None on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            data = os.read(self.fd, 1 << 16)
            if not data:
                line, self.buf = self.buf, b""
                return line.decode()
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode() + "\n"
