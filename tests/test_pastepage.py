"""The paste page on its own (real sockets, no hub): only its own form, at its own address, may hand it a token;
refusals are Jupyter-shaped JSON and never echo what was sent; it stops when closed."""

from __future__ import annotations

import asyncio
import html
import http.client
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from jupyter_dev_proxy.pastepage import Advice, Outcome, PastePage, next_paste
from tests.kit.devtools import browser
from tests.kit.netservers import missing_programs

TOKEN = "a-token-that-must-never-come-back-7f3a9c"


@pytest.fixture
def page() -> Iterator[PastePage]:
    advice = Advice(token_page="https://hub.example/hub/token", note="jupyter-dev-proxy on laptop",
                    expiry="the longest the page offers", scopes=[("access:servers!server=alice/", "to use it")])
    with PastePage(advice) as started:
        yield started


def _request(page: PastePage, method: str, path: str | None = None, body: dict[str, str] | None = None,
             **headers: str) -> tuple[int, dict[str, str], str]:
    """``method`` on the page (its own path unless told), with ``headers`` (Host: the page's unless told); the
    answer's status, headers and text."""
    connection = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    try:
        data = urlencode(body).encode() if body is not None else None
        sent = {"Host": f"127.0.0.1:{page.port}", **{name.replace("_", "-"): value for name, value in headers.items()}}
        if data is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        connection.request(method, path or urlsplit(page.url).path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def _form_secret(text: str) -> str:
    found = re.search(r'name="form" value="([^"]+)"', text)
    assert found, text
    return html.unescape(found.group(1))


def test_the_page_says_what_to_pick_and_takes_nothing_from_elsewhere(page: PastePage) -> None:
    status, headers, text = _request(page, "GET")
    assert status == 200 and "jupyter-dev-proxy on laptop" in text and "access:servers!server=alice/" in text
    assert "<script" not in text and "https://hub.example/hub/token" in text
    assert headers["Referrer-Policy"] == "same-origin"  # the hub's page must not learn this page's secret path
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("method", "path", "headers", "with_secret", "status", "reason"), [
    ("POST", None, {"Origin": "https://evil.example"}, True, 403, "foreign-origin"),
    ("POST", None, {"Origin": "null"}, True, 403, "foreign-origin"),
    ("POST", None, {"Host": "evil.example:80"}, True, 403, "wrong-host"),
    ("GET", None, {"Host": "localhost"}, False, 403, "wrong-host"),
    ("POST", "/token/guessed", {}, True, 404, "not-found"),
    ("GET", "/", {}, False, 404, "not-found"),
    ("POST", None, {}, False, 403, "not-the-form"),
    ("PUT", None, {}, True, 405, "method-not-allowed"),
], ids=["foreign-origin", "null-origin", "wrong-host", "wrong-host-get", "wrong-path", "root", "no-form-secret",
        "put"])
def test_a_request_that_is_not_the_pages_own_form_is_refused_in_json_and_hands_over_nothing(
        page: PastePage, method: str, path: str | None, headers: dict[str, str], with_secret: bool, status: int,
        reason: str) -> None:
    secret = _form_secret(_request(page, "GET")[2])
    body = {"token": TOKEN, **({"form": secret} if with_secret else {})}
    answered, answer_headers, text = _request(page, method, path, body, **headers)
    assert (answered, answer_headers["Content-Type"]) == (status, "application/json"), text
    refusal = json.loads(text)
    assert set(refusal) == {"message", "reason"} and refusal["reason"] == reason
    assert TOKEN not in text
    assert not page.arrived.is_set() and page.take() is None


def test_a_wrong_form_secret_is_refused(page: PastePage) -> None:
    status, _, text = _request(page, "POST", body={"token": TOKEN, "form": "guessed"})
    assert status == 403 and json.loads(text)["reason"] == "not-the-form" and page.take() is None


def test_the_pages_own_form_hands_the_paste_over_and_shows_the_verdict_not_the_token(page: PastePage) -> None:
    """The paste reaches the waiting caller; the answer the browser gets is the caller's verdict."""
    secret = _form_secret(_request(page, "GET")[2])
    answered: list[tuple[int, str]] = []
    browser = threading.Thread(target=lambda: answered.append(_request(
        page, "POST", body={"token": f"  {TOKEN}\n", "form": secret}, Origin=f"http://127.0.0.1:{page.port}")[::2]))
    browser.start()
    assert next_paste(page, None, "", io.StringIO(), time.monotonic() + 30) == TOKEN
    page.answer(["✓ The token is alice's.", "Kept in the system keyring."], Outcome.KEPT)
    browser.join(timeout=30)
    status, text = answered[0]
    assert status == 200 and "The token is alice&#x27;s." in text and "Kept in the system keyring." in text
    assert TOKEN not in text and 'name="token"' not in text  # done: no form any more


def test_no_paste_in_time_ends_the_wait_and_a_closed_page_is_gone(page: PastePage) -> None:
    assert next_paste(page, None, "", io.StringIO(), time.monotonic() + 0.2) is None
    page.close()
    with pytest.raises(ConnectionRefusedError):
        _request(page, "GET")


# -- a real browser ---------------------------------------------------------------------------------------------------

@pytest.mark.skipif(missing_programs("chromium") is not None, reason="no chromium here")
async def test_a_real_browser_pastes_on_the_page_and_sees_the_verdict(page: PastePage, tmp_path: Path) -> None:
    """Chromium loads the page, fills the box and sends the form as a person would: its request passes the page's
    own checks (a browser sends Origin: null on a form POST under some referrer policies), and it shows the verdict."""
    async with browser(tmp_path) as chromium:
        await chromium.navigate(page.url)
        await chromium.evaluate(f"document.querySelector('[name=token]').value = {json.dumps(TOKEN)};"
                                "document.forms[0].submit()")
        pasted = await asyncio.to_thread(next_paste, page, None, "", io.StringIO(), time.monotonic() + 30)
        assert pasted == TOKEN
        page.answer(["✓ The token is alice's."], Outcome.KEPT)
        await chromium.loaded()
        shown = await chromium.evaluate("document.body.innerText")
    assert "The token is alice's." in shown and "You can close this page" in shown and TOKEN not in shown
