"""The first run's paste page: a page on this computer that says what to pick on the hub's token page (note,
expiry, scopes, why each) and takes the token in a paste box, as an alternative to the terminal's hidden prompt.
It hands each paste to the caller, which checks it, and shows the caller's verdict (whose token, what it lacks,
what the proxy did with it), never the token itself.

Only whoever was shown its address can use it: it listens on 127.0.0.1 on a port of its own (``login`` may run
while a proxy serves on the proxy's port), under a path with a random secret; it answers only requests whose Host
is itself (DNS rebinding), takes a paste only from its own form (Origin, a form secret) and stops once a token is
kept, when the user stops, or after ``OPEN_SECONDS``.
"""

from __future__ import annotations

import enum
import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TextIO
from urllib.parse import parse_qs

from .hidden_line import Wakeup, read_hidden_line

# How long the page (and the terminal's prompt) wait for a token: signing in to the hub (single sign-on, a second
# factor) and making a token take a few minutes; after a quarter of an hour the user has gone elsewhere, and an
# address that can hand the proxy a token should not outlive its use.
OPEN_SECONDS = 15 * 60

# A browser may open a connection ahead and send nothing on it (Chrome's preconnect): a request thread waits no
# longer than this for a request.
_REQUEST_SECONDS = 10.0

# A token is under a hundred bytes; the form adds its secret. Anything much larger is not this page's form.
_MAX_FORM_BYTES = 16 * 1024

# How long closing waits for the answer to a paste in flight to be written before it stops the server.
_ANSWER_SECONDS = 5.0

_FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Advice:
    """What to pick on the hub's token page, as the page shows it."""

    token_page: str  # the hub's token page, a full URL
    note: str
    expiry: str  # a sentence: which expiry to choose, and why
    scopes: list[tuple[str, str]]  # (scope, what it is for)


class Outcome(enum.Enum):
    """What became of a paste, as the page shows it."""

    KEPT = "kept"  # the proxy has a token: the page is done
    TRY_AGAIN = "try-again"  # this one was refused: the form again
    ENDED = "ended"  # the proxy stopped asking (the last try, the hub unreachable, the user stopped)


class _Refusal(enum.Enum):
    """Why a request was refused without reaching the page: (status, reason, message)."""

    WRONG_HOST = (403, "wrong-host", "This page answers only at the address the proxy printed (127.0.0.1).")
    UNKNOWN_PAGE = (404, "not-found", "There is no page here: use the address the proxy printed in your terminal.")
    WRONG_METHOD = (405, "method-not-allowed", "This page takes only its own form.")
    FOREIGN_ORIGIN = (403, "foreign-origin", "A token is taken only from the proxy's own page, not from another site.")
    NOT_THE_FORM = (403, "not-the-form", "This did not come from the proxy's page: reload the page and paste again.")
    TOO_LARGE = (413, "too-large", "That is far larger than a token: paste only the token.")


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes


_ENDED_HERE = "The proxy stopped asking for a token here; its terminal says why."

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
          "table{border-collapse:collapse}td{padding:.2rem .8rem .2rem 0;vertical-align:top}"
          "code{background:#f2f2f2;padding:0 .2rem}input[type=text]{width:100%;font:inherit;padding:.4rem}"
          "button{font:inherit;padding:.4rem 1rem;margin-top:.5rem}.said{background:#f6f8fa;padding:.5rem 1rem}"
          ".small{color:#555;font-size:.9rem}")

# No script, no frame, nothing from elsewhere; the form posts only here; no Referer to another site (the hub's page
# would learn this page's secret path), nothing kept in the browser's cache. "same-origin", not "no-referrer": under
# "no-referrer" browsers send the form's POST with "Origin: null", which the Origin check must refuse.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class PastePage:
    """The page, served from a thread of its own while the caller waits for pastes: ``arrived`` is set when a paste
    waits, ``take()`` hands it over, ``answer()`` gives the verdict the page then shows. A context manager: leaving
    it stops the server."""

    def __init__(self, advice: Advice) -> None:
        self.advice = advice
        self.arrived = Wakeup()
        self._form_secret = secrets.token_urlsafe(24)
        self._path = f"/token/{secrets.token_urlsafe(24)}"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=True)
        self._server.daemon_threads = True  # an idle browser connection must not hold the proxy's exit
        self._server.page = self  # type: ignore[attr-defined]
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}{self._path}"
        self._state = threading.Lock()
        self._one_paste = threading.Lock()  # one paste checked at a time; closing waits for its answer
        self._pasted: str | None = None
        self._taken = False  # a paste was taken and its page waits for the verdict
        self._verdict: tuple[list[str], Outcome] | None = None
        self._verdict_ready = threading.Event()
        self._closed: tuple[list[str], Outcome] | None = None  # what a paste after closing is told
        self._thread = threading.Thread(target=self._server.serve_forever, name="paste page", daemon=True)

    def __enter__(self) -> PastePage:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def take(self) -> str | None:
        """The paste that waits for a verdict, once; None when there is none."""
        with self._state:
            pasted, self._pasted = self._pasted, None
            self._taken = pasted is not None
            self.arrived.clear()
        return pasted

    def answer(self, lines: list[str], outcome: Outcome) -> None:
        """The verdict on the paste last taken, for its page to show; nothing when the token came from the
        terminal (a paste arriving meanwhile waits for its own)."""
        with self._state:
            if self._taken:
                self._taken = False
                self._verdict = (lines, outcome)
                self._verdict_ready.set()

    def close(self, lines: list[str] | None = None) -> None:
        """Stop: a paste still waiting is told ``lines`` (by default, to look at the terminal) once its answer is
        written, the server stops."""
        with self._state:
            if self._closed is not None:
                return
            self._closed = (lines or [_ENDED_HERE], Outcome.ENDED)
            if not self._verdict_ready.is_set():
                self._verdict = self._closed
                self._verdict_ready.set()
        if self._one_paste.acquire(timeout=_ANSWER_SECONDS):
            self._one_paste.release()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self.arrived.close()

    # -- requests, in the server's threads -----------------------------------------------------------------------

    def _route(self, method: str, path: str, headers: dict[str, str], read_body: Callable[[int], bytes],
               send: Callable[[_Answer], None]) -> None:
        """Refuse what is not this page's own request; show the page (GET) or take a paste (POST)."""
        origin = f"http://127.0.0.1:{self.port}"
        if headers.get("host", "").lower() != origin.removeprefix("http://"):
            return send(_refused(_Refusal.WRONG_HOST))
        if not secrets.compare_digest(path.encode(), self._path.encode()):
            return send(_refused(_Refusal.UNKNOWN_PAGE))
        if method == "GET":
            return send(self._page(200, [], Outcome.TRY_AGAIN))
        if method != "POST":
            return send(_refused(_Refusal.WRONG_METHOD))
        if headers.get("origin", origin) != origin:
            return send(_refused(_Refusal.FOREIGN_ORIGIN))
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return send(_refused(_Refusal.NOT_THE_FORM))
        if length > _MAX_FORM_BYTES:
            return send(_refused(_Refusal.TOO_LARGE))
        if headers.get("content-type", "").split(";")[0].strip().lower() != _FORM_TYPE:
            return send(_refused(_Refusal.NOT_THE_FORM))
        form = parse_qs(read_body(length).decode(errors="replace"))
        if not secrets.compare_digest(form.get("form", [""])[0].encode(), self._form_secret.encode()):
            return send(_refused(_Refusal.NOT_THE_FORM))
        token = form.get("token", [""])[0].strip()
        if not token:
            return send(self._page(400, ["The box was empty: paste the token the hub's page showed you."],
                                   Outcome.TRY_AGAIN))
        with self._one_paste:
            lines, outcome = self._checked(token)
            send(self._page(200, lines, outcome))
        return None

    def _checked(self, token: str) -> tuple[list[str], Outcome]:
        """Hand ``token`` to the waiting caller and wait for its verdict (closing gives one too)."""
        with self._state:
            if self._closed is not None:
                return self._closed
            self._verdict_ready.clear()
            self._pasted = token
            self.arrived.set()
        self._verdict_ready.wait()
        with self._state:
            assert self._verdict is not None
            return self._verdict

    def _page(self, status: int, said: list[str], outcome: Outcome) -> _Answer:
        return _Answer(status, "text/html; charset=utf-8",
                       _page_html(self.advice, self._path, self._form_secret, said, outcome).encode())


def next_paste(page: PastePage, terminal: int | None, prompt: str, out: TextIO, deadline: float) -> str | None:
    """The next token pasted on ``page`` or typed (hidden) on ``terminal``, whichever comes first; '' when the user
    ended the terminal's prompt (Enter alone, Ctrl-D); None when ``deadline`` (time.monotonic()) passed."""
    if terminal is None:
        if not page.arrived.wait(max(0.0, deadline - time.monotonic())):
            return None
        return page.take()
    try:
        typed = read_hidden_line(terminal, prompt, out, page.arrived, deadline)
    except EOFError:
        return ""
    if typed is not None:
        return typed
    pasted = page.take()
    if pasted is not None:
        out.write("(pasted on the page)\n")
    return pasted


def _refused(why: _Refusal) -> _Answer:
    """The house's error shape, {"message", "reason"}: nothing of the request is echoed."""
    status, reason, message = why.value
    return _Answer(status, "application/json", json.dumps({"message": message, "reason": reason}).encode())


def _page_html(advice: Advice, action: str, form_secret: str, said: list[str], outcome: Outcome) -> str:
    """The page: what to pick on the hub's token page and the paste box; above them, what the last paste came to.
    Every value is escaped; no value of a token is ever in it."""
    e = html.escape
    result = (f'<div class="said">{"".join(f"<p>{e(line)}</p>" for line in said)}</div>' if said else "")
    if outcome is Outcome.KEPT:
        body = f"<h1>Done</h1>{result}<p>The proxy has its token. You can close this page.</p>"
    elif outcome is Outcome.ENDED:
        body = (f"<h1>The proxy stopped asking</h1>{result}<p>Run <code>jupyter-dev-proxy login</code> in a "
                "terminal when you have a token.</p>")
    else:
        scopes = "".join(f"<li><code>{e(scope)}</code>: {e(why)}</li>" for scope, why in advice.scopes)
        body = f"""<h1>A token for jupyter-dev-proxy</h1>
{result}
<p>The proxy needs an API token of your hub to reach your server.</p>
<ol>
<li>Open <a href="{e(advice.token_page)}" target="_blank" rel="noopener noreferrer">your hub's token page</a>
(sign in if it asks).</li>
<li>Under <b>Request new API token</b>, fill in:
<table>
<tr><td>Note</td><td><code>{e(advice.note)}</code></td></tr>
<tr><td>Expires in</td><td>{e(advice.expiry)}</td></tr>
<tr><td>Scopes</td><td>tick these, if the page lists scopes:<ul>{scopes}</ul>
or tick none: the token may then do all you can, so the proxy makes its own that can do only these, and revokes
the one you pasted.</td></tr>
</table></li>
<li>Press <b>Request new API token</b>, copy the token it shows, and paste it here:</li>
</ol>
<form method="post" action="{e(action)}">
<input type="hidden" name="form" value="{e(form_secret)}">
<input type="text" name="token" aria-label="API token" autocomplete="off" spellcheck="false" autocapitalize="off"
 autofocus required>
<button type="submit">Check and keep it</button>
</form>
<p class="small">You can paste it in the terminal instead. This page works only on this computer, and only until
the proxy has a token or {OPEN_SECONDS // 60} minutes have passed.</p>"""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>jupyter-dev-proxy: a token</title>'
            f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head>'
            f"<body>{body}</body></html>")


class _Handler(BaseHTTPRequestHandler):
    """Reads a request and writes the page's answer: the decisions are PastePage._route's."""

    timeout = _REQUEST_SECONDS
    server_version = "jupyter-dev-proxy"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer_request()

    def do_POST(self) -> None:  # noqa: N802
        self._answer_request()

    def do_PUT(self) -> None:  # noqa: N802
        self._answer_request()

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer_request()

    def _answer_request(self) -> None:
        page: PastePage = self.server.page  # type: ignore[attr-defined]
        headers: dict[str, str] = {}
        for name, value in self.headers.items():  # a name sent twice is both values: no longer what is checked
            headers[name.lower()] = f"{headers[name.lower()]}, {value}" if name.lower() in headers else value
        self._body_read = False
        page._route(self.command, self.path, headers, self._read_body, self._send)

    def _read_body(self, length: int) -> bytes:
        self._body_read = True
        return self.rfile.read(length)

    def _send(self, answer: _Answer) -> None:
        if not self._body_read:
            self._discard_body()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def _discard_body(self) -> None:
        """Read a refused request's body all the same: closing with unread bytes resets the connection, and the
        browser would show that instead of the refusal."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if 0 < length <= _MAX_FORM_BYTES:
            self._read_body(length)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's naming)
        """Nothing: the request line carries the page's secret path."""
