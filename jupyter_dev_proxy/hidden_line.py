"""A line typed on the terminal without showing it, like ``getpass``, but one that another thread can stop: the first
run waits for a token on the terminal and on its paste page at once, and whichever comes first ends the other wait.
``getpass`` cannot be stopped, hence this reader. The terminal's mode is restored whatever ends the read: a line, a
stop, the time running out, Ctrl-C or an error.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time
from typing import TextIO

if sys.platform == "win32":
    import msvcrt
else:
    import termios

# Windows has no select() on a console: keys are polled this often (a person notices no lag under 0.1 s).
_WINDOWS_POLL_SECONDS = 0.05

# A paste is one line; Linux's terminal keeps 4096 bytes of a line in canonical mode.
_READ_BYTES = 4096


class Wakeup:
    """Set from another thread to end a wait: an event for pollers (Windows), and a socket that select() wakes on
    (POSIX). Once set it stays set until cleared."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._readable, self._writer = socket.socketpair()
        self._readable.setblocking(False)

    def set(self) -> None:
        if not self._event.is_set():
            self._event.set()
            self._writer.send(b"!")

    def clear(self) -> None:
        self._event.clear()
        try:
            while self._readable.recv(64):
                pass
        except BlockingIOError:
            pass

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def fileno(self) -> int:
        return self._readable.fileno()

    def close(self) -> None:
        self._readable.close()
        self._writer.close()


def terminal_input() -> int | None:
    """The terminal the user types on (standard input), or None when there is none (a pipe, a service)."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    except (OSError, ValueError):  # a closed or detached stdin
        return None


def read_hidden_line(terminal: int, prompt: str, out: TextIO, stop: Wakeup, deadline: float) -> str | None:
    """The line typed on ``terminal`` after ``prompt``, not shown; None when ``stop`` was set or ``deadline``
    (time.monotonic()) passed first. EOFError on Ctrl-D (Ctrl-Z on Windows), KeyboardInterrupt on Ctrl-C."""
    if sys.platform == "win32":
        return _read_on_windows(prompt, out, stop, deadline)
    return _read_on_posix(terminal, prompt, out, stop, deadline)


def _read_on_posix(terminal: int, prompt: str, out: TextIO, stop: Wakeup, deadline: float) -> str | None:
    """Echo off (the line discipline still edits the line and turns Ctrl-C into SIGINT), then select() on the
    terminal and ``stop``. TCSAFLUSH, as getpass: a half-typed token left when the page wins is dropped, not
    handed to the shell after the proxy ends."""
    saved = termios.tcgetattr(terminal)
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(terminal, termios.TCSAFLUSH, quiet)
        out.write(prompt)
        out.flush()
        typed = b""
        while b"\n" not in typed:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([terminal, stop.fileno()], [], [], left)
            if stop.fileno() in ready:
                return None
            if terminal in ready:
                chunk = os.read(terminal, _READ_BYTES)
                if not chunk:  # Ctrl-D: on an empty line the end of input, after text the text as it is
                    if typed:
                        break
                    raise EOFError
                typed += chunk
        return typed.split(b"\n", 1)[0].decode(errors="replace")
    finally:
        termios.tcsetattr(terminal, termios.TCSAFLUSH, saved)
        out.write("\n")  # the Enter was not echoed either
        out.flush()


if sys.platform == "win32":  # the branch mypy and the tests on POSIX do not see
    def _read_on_windows(prompt: str, out: TextIO, stop: Wakeup, deadline: float) -> str | None:
        """getwch() does not echo, so there is no console mode to restore. Not run by the test suite (no Windows
        here): kept to the few keys getpass's own Windows reader knows."""
        out.write(prompt)
        out.flush()
        typed: list[str] = []
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                while msvcrt.kbhit():
                    key = msvcrt.getwch()
                    if key in "\r\n":
                        return "".join(typed)
                    if key == "\x03":
                        raise KeyboardInterrupt
                    if key == "\x1a":
                        raise EOFError
                    if key == "\b":
                        del typed[-1:]
                    else:
                        typed.append(key)
                stop.wait(_WINDOWS_POLL_SECONDS)
            return None
        finally:
            out.write("\n")
            out.flush()
