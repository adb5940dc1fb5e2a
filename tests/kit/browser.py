"""A scripted browser for "sign in with the hub's login": it opens a hub authorize URL, signs in on the hub's login
form as a person would (the form's hidden _xsrf field included: the hub checks it), confirms the OAuth page if
the hub shows one, and follows the redirects to wherever the hub sends it back (the proxy's local callback).

Two ways to use it:

- in a test, ``sign_in(url, user, password, ca_file)`` returns the ``Landing``: final URL, status, body;
- as the ``BROWSER`` Python's ``webbrowser`` module runs (``browser_env(...)`` gives the environment), so the
  proxy under test opens the sign-in page in it. Settings come from the environment: ``JDP_BROWSER_LOG`` (a
  file; each call appends one JSON line ``{"opened", "url", "status", "final_url"}``: what it was given, and for
  a local redirect page the URL it leads to), ``JDP_BROWSER_USER``,
  ``JDP_BROWSER_PASSWORD``, ``JDP_BROWSER_CA``. Without ``JDP_BROWSER_USER`` it only records the URL it was
  given (status and final_url null), so a test can tell what the proxy would have opened, or that it opened
  nothing. ``webbrowser`` waits for a BROWSER command, so every call is bounded (``SIGN_IN_SECONDS``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

LOG_ENV = "JDP_BROWSER_LOG"
USER_ENV = "JDP_BROWSER_USER"
PASSWORD_ENV = "JDP_BROWSER_PASSWORD"
CA_ENV = "JDP_BROWSER_CA"
# What a person's browser shows an access gateway in front of the hub: a client certificate (one PEM file with its
# key) and headers (a JSON object), as the proxy's JUPYTER_CLIENT_CERT and JUPYTER_HUB_HEADERS do.
CERT_ENV = "JDP_BROWSER_CERT"
HEADERS_ENV = "JDP_BROWSER_HEADERS"

# A whole sign-in (about six requests to a local hub) takes well under a second; webbrowser waits for us.
SIGN_IN_SECONDS = 30.0
# One request may take at most this long, within what is left of SIGN_IN_SECONDS.
REQUEST_SECONDS = 10.0
# The hub's sign-in is authorize -> login -> authorize -> callback; more hops than this is a redirect loop.
MAX_STEPS = 20
# Status of a Landing where nothing answered at all (connection refused, timeout): no HTTP status exists.
NO_ANSWER = 0

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Landing:
    """Where the browser ended: the last URL it asked for, the answer's status (NO_ANSWER when nothing answered)
    and the answer's body (the reason, when nothing answered); HTTP error answers are landings too."""

    url: str
    status: int
    body: str
    visited: tuple[str, ...] = ()  # every URL asked for, in order (the last one is ``url``)

    @property
    def text(self) -> str:
        """The page's words without markup, whitespace collapsed: what a person reads."""
        without_code = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", self.body)
        return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", without_code)).split())

    @property
    def query(self) -> dict[str, str]:
        """The final URL's query parameters (a callback's ``code`` and ``state``, or ``error``)."""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query))


@dataclass
class _Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    has_password: bool = False


class _FormParser(HTMLParser):
    """The page's forms with the values a browser would submit (no disabled or unchecked inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(_Form(attributes.get("action", ""), attributes.get("method", "get").lower()))
        elif tag == "input" and self.forms and "name" in attributes and "disabled" not in attributes:
            kind = attributes.get("type", "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in attributes or kind == "submit":
                return
            self.forms[-1].fields.append((attributes["name"], attributes.get("value", "")))
            self.forms[-1].has_password |= kind == "password"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by sign_in itself, so each hop is seen (and the last URL known when it fails)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def sign_in(url: str, user: str, password: str, ca_file: str | os.PathLike[str] | None,
            seconds: float = SIGN_IN_SECONDS, client_cert: str | None = None,
            headers: dict[str, str] | None = None) -> Landing:
    """Open ``url`` (a hub authorize URL) and sign in as ``user`` where the hub asks; return where it lands.
    ``client_cert`` and ``headers``: what the browser shows a gateway in front of the hub."""
    tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if client_cert:
        tls.load_cert_chain(client_cert)
    # No forward proxy from the environment: the hub and the callback are local, as for a person's browser.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPCookieProcessor(CookieJar()),
                                         urllib.request.HTTPSHandler(context=tls), _NoRedirects())
    opener.addheaders = [*opener.addheaders, *(headers or {}).items()]
    deadline = time.monotonic() + seconds
    visited: list[str] = []
    method, data = "GET", None
    signed_in = confirmed = False
    for _ in range(MAX_STEPS):
        visited.append(url)
        status, location, body = _ask(opener, method, url, data, deadline)
        if status == NO_ANSWER or not (location or status == 200):
            return Landing(url, status, body, tuple(visited))
        if location:
            url, method, data = urllib.parse.urljoin(url, location), "GET", None
            continue
        form = _form_to_submit(body, signed_in, confirmed)
        if form is None:
            return Landing(url, status, body, tuple(visited))
        values = form.fields
        if form.has_password:
            values = [(name, {"username": user, "password": password}.get(name, value)) for name, value in values]
            signed_in = True
        else:
            confirmed = True
        target = urllib.parse.urljoin(url, form.action)
        encoded = urllib.parse.urlencode(values)
        if form.method == "post":
            url, method, data = target, "POST", encoded.encode()
        else:
            url, method, data = f"{target.split('?')[0]}?{encoded}", "GET", None
    raise RuntimeError(f"more than {MAX_STEPS} steps signing in; the last URLs: {visited[-4:]}")


def _form_to_submit(body: str, signed_in: bool, confirmed: bool) -> _Form | None:
    """The login form (once), else the OAuth confirm form (once); None when the page asks nothing of us."""
    parser = _FormParser()
    parser.feed(body)
    for form in parser.forms:
        if form.has_password and not signed_in:
            return form
        if form.method == "post" and not form.has_password and signed_in and not confirmed \
                and any(name == "_xsrf" for name, _ in form.fields):
            return form
    return None


def _ask(opener: urllib.request.OpenerDirector, method: str, url: str, data: bytes | None,
         deadline: float) -> tuple[int, str | None, str]:
    """One request: (status, Location or None, body); (NO_ANSWER, None, reason) when nothing answered."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return NO_ANSWER, None, f"gave up: the sign-in took longer than {SIGN_IN_SECONDS:.0f} s"
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with opener.open(request, timeout=min(REQUEST_SECONDS, remaining)) as response:
            return int(response.status), None, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        location = error.headers.get("Location") if 300 <= error.code < 400 else None
        return error.code, location, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return NO_ANSWER, None, str(getattr(error, "reason", error))


def browser_env(log_file: Path, user: str | None = None, password: str | None = None,
                ca_file: Path | None = None, client_cert: Path | None = None,
                headers: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a process whose webbrowser.open should come here: BROWSER, our settings, and the
    repository on PYTHONPATH (so ``-m tests.kit.browser`` is found from any working directory). No ``user``:
    the browser only records what it was asked to open."""
    env = {
        "BROWSER": f"{shlex.quote(sys.executable)} -m tests.kit.browser %s",
        LOG_ENV: str(log_file),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    if user is not None:
        env[USER_ENV] = user
        env[PASSWORD_ENV] = password or ""
    if ca_file is not None:
        env[CA_ENV] = str(ca_file)
    if client_cert is not None:
        env[CERT_ENV] = str(client_cert)
    if headers:
        env[HEADERS_ENV] = json.dumps(headers)
    return env


def opened(log_file: Path, at_least: int = 0) -> list[dict[str, Any]]:
    """What the BROWSER command was asked to open, one record per call, in order ([] when never called); waiting
    (up to SIGN_IN_SECONDS) until there are ``at_least`` records: a program opens its browser in the background, and
    a record is written when the browser is done."""
    deadline = time.monotonic() + SIGN_IN_SECONDS
    while True:
        records = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []
        if len(records) >= at_least or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


_REFRESH = re.compile(r'<meta http-equiv="refresh" content="0;url=([^"]+)"', re.I)


def followed(url: str) -> str:
    """Where ``url`` leads a browser: for a local file (a program's redirect page), the URL its refresh names, as a
    browser reads the file; any other URL as it is."""
    if not url.startswith("file://"):
        return url
    page = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)).read_text()
    found = _REFRESH.search(page)
    return html.unescape(found.group(1)) if found else url


def main(argv: list[str]) -> int:
    """BROWSER entry: sign in at argv[1] (or only record it), append one JSON line to $JDP_BROWSER_LOG."""
    if len(argv) != 2:
        print(f"usage: {argv[0]} URL (settings in ${USER_ENV}, ${PASSWORD_ENV}, ${CA_ENV}, ${LOG_ENV})",
              file=sys.stderr)
        return 2
    record: dict[str, Any] = {"opened": argv[1], "url": argv[1], "status": None, "final_url": None}
    user = os.environ.get(USER_ENV)
    try:
        url = record["url"] = followed(argv[1])
        if user:
            landing = sign_in(url, user, os.environ.get(PASSWORD_ENV, ""), os.environ.get(CA_ENV) or None,
                              client_cert=os.environ.get(CERT_ENV) or None,
                              headers=json.loads(os.environ.get(HEADERS_ENV) or "{}"))
            record.update(status=landing.status, final_url=landing.url)
    except Exception as error:  # recorded for the test to see: a BROWSER command has nowhere else to say it
        record["error"] = f"{type(error).__name__}: {error}"
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as out:
            out.write(json.dumps(record) + "\n")
    return 1 if "error" in record else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
