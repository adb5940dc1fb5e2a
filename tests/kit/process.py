"""``python proxy.py`` as a user runs it: a subprocess with its own environment (``tests.kit.env``), its output and
its exit status.

Requests go over a raw socket (``tests.kit.rawhttp``) so that a path reaches the proxy exactly as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_dev_proxy.demo import terminate
from tests.kit.rawhttp import request

PROXY = Path(__file__).resolve().parents[2] / "proxy.py"

BANNER = re.compile(r"Authorization URL with token for IDE: (http://\S+)/\?token=(\S+)")
START_SECONDS = 120.0  # includes the hub starting the user's server
STOP_SECONDS = 15.0  # SIGTERM closes connections within a few seconds; after this the proxy hangs

# Where a proxy that refuses to start says why (cli.py); exit status 2 is its EXIT_USAGE.
MESSAGE_PREFIX = "jupyter-dev-proxy: "


def failed_start(env: dict[str, str], *args: str, after_log: bool = False) -> str:
    """Run the proxy expecting it to refuse to start: exit status 2, no traceback, one sentence on stderr.

    That sentence is the only line on stderr unless ``after_log``: a proxy that got as far as talking to the hub or
    server logs what it found (the hub's start events, "not a JupyterHub") before it.
    """
    result = subprocess.run([sys.executable, str(PROXY), *args], env=env, cwd="/", capture_output=True, text=True,
                            timeout=START_SECONDS, check=False)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    messages = [line for line in lines if line.startswith(MESSAGE_PREFIX)]
    assert len(messages) == 1, result.stderr
    assert after_log or lines == messages, result.stderr
    return messages[0]


class ProxyProcess:
    """``proxy.py`` in a subprocess (stdout and stderr together), its output collected by a thread so the pipe
    never fills."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = (), cwd: Path | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, str(PROXY), *args], env=env,
                                        cwd=cwd or tempfile.gettempdir(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        # From the banner; a test may swap the token for the one an IDE would carry.
        self.url = ""
        self.token = ""

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_SECONDS) -> re.Match[str]:
        """The first match of ``pattern`` in the output, waiting for it; AssertionError if it never comes."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                match = re.search(pattern, self.output)
                if match:
                    return match
                raise AssertionError(f"proxy exited ({self.process.returncode}) without {pattern!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{self.output}")
            time.sleep(0.05)

    def wait_for_banner(self) -> tuple[str, str]:
        """The URL and token the banner tells the IDE to use; ``get`` and ``post_json`` use them from now on."""
        match = self.wait_for(BANNER.pattern)
        self.url, self.token = match.group(1), match.group(2)
        return self.url, self.token

    def exit_status(self, timeout: float = START_SECONDS) -> int:
        """Wait for the proxy to exit on its own."""
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return status

    def stop(self) -> int:
        """Stop the proxy as a service manager would; its exit status."""
        status = terminate(self.process, STOP_SECONDS)
        self._reader.join(timeout=5)
        return status

    def peak_rss_kib(self) -> int:
        """The most memory the proxy has held so far (VmHWM), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` through the proxy as an IDE does (Authorization: token); (status, JSON or text)."""
        return self._request("GET", path)

    def reached(self, targets: list[str]) -> dict[str, tuple[int, Any]]:
        """Which of ``targets`` the proxy answered without refusing (status below 400), with their answers."""
        answers = {target: self.get(target) for target in targets}
        return {target: answer for target, answer in answers.items() if answer[0] < 400}

    def post_json(self, path: str, body: str = "{}") -> tuple[int, Any]:
        return self._request("POST", path, body.encode())

    def _request(self, method: str, target: str, body: bytes | None = None) -> tuple[int, Any]:
        answer = request(self.url, method, target, self.token, body)
        assert answer.status is not None, f"the proxy closed the connection without answering {method} {target}"
        return answer.status, answer.parsed()


def run_proxy(proxies: list[ProxyProcess], env: dict[str, str], *args: str, cwd: Path | None = None) -> ProxyProcess:
    """Start the proxy and add it to ``proxies`` (the fixture), which stops it when the test ends."""
    proxy = ProxyProcess(env, args, cwd)
    proxies.append(proxy)
    return proxy

