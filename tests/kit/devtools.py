"""A headless Chromium driven over the DevTools protocol, for tests where a real browser must do what a person does:
load a page, click, type, press keys, and everything the browser received recorded for the test to look into.

No Playwright: Chromium's own protocol over a websocket (aiohttp), one tab. A reader task takes every message off
the socket: replies go to the call waiting for them, events are kept in order (``next_event`` takes them one by one,
so an event that arrives before the test asks for it is not lost), and with ``record_network`` every response's
URL, status, headers and (for text) body is recorded, as are websocket frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

# Chromium starts in about a second; a DevTools call answers in milliseconds. A busy 2-core CI machine running four
# test workers is many times slower, and a page like JupyterLab's keeps the browser's main thread busy for seconds.
START_SECONDS = 60.0
CALL_SECONDS = 60.0
# How often a condition on the page is looked at again while a test waits for it.
POLL_SECONDS = 0.2
# What the browser keeps of response bodies for getResponseBody: JupyterLab's page loads ~20 MB of scripts, and a
# body the browser has evicted can no longer be looked into.
_BODY_BUFFER_BYTES = 512 * 1024 * 1024
_RESOURCE_BUFFER_BYTES = 64 * 1024 * 1024


class DevToolsError(RuntimeError):
    """Chromium answered a call with an error."""


class Modifier(enum.IntFlag):
    """Modifier keys as Input.dispatchKeyEvent and Input.dispatchMouseEvent number them."""

    NONE = 0
    ALT = 1
    CTRL = 2
    META = 4
    SHIFT = 8


@dataclass(frozen=True)
class Key:
    """A key as the page's keydown handlers see it: ``key``, ``code`` and the legacy ``keyCode``."""

    key: str
    code: str
    key_code: int


ENTER = Key("Enter", "Enter", 13)
KEY_S = Key("s", "KeyS", 83)


def _is_textual(mime_type: str) -> bool:
    """Whether a response of this MIME type is text a page reads (the bodies worth fetching and looking into)."""
    return mime_type.startswith("text/") or mime_type in ("", "application/javascript", "application/x-javascript") \
        or mime_type.endswith(("json", "xml"))


@dataclass
class Response:
    """One response the tab received: ``headers`` as the page saw them plus the raw ones from the network
    (``raw_headers``: with Set-Cookie), and its ``body`` for text (None until fetched, or when it is binary)."""

    request_id: str
    url: str
    status: int
    mime_type: str
    headers: dict[str, str]
    raw_headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    body_error: str | None = None  # why a textual body could not be fetched
    finished: bool = False  # the whole body arrived, or the loading failed
    failure: str | None = None  # why the loading failed (net::ERR_ABORTED: the page went elsewhere first)

    @property
    def textual(self) -> bool:
        return _is_textual(self.mime_type)


class DevTools:
    """One tab of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse, target_id: str) -> None:
        self._socket = socket
        self.target_id = target_id
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._taken: dict[str, int] = {}  # per event method: how many next_event has handed out
        self._arrived = asyncio.Condition()
        self.responses: dict[str, Response] = {}
        self.sent_headers: list[dict[str, str]] = []  # every request's headers, as sent
        self.websocket_frames: list[str] = []  # every websocket frame's payload, sent or received
        self._body_fetches: set[asyncio.Task[None]] = set()
        self._reader = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        self._reader.cancel()
        for fetch in self._body_fetches:
            fetch.cancel()
        await asyncio.gather(self._reader, *self._body_fetches, return_exceptions=True)

    # -- the protocol ---------------------------------------------------------------------------------------------
    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call ``method``; its result, or DevToolsError."""
        self._next_id += 1
        call_id = self._next_id
        reply = self._replies[call_id] = asyncio.get_running_loop().create_future()
        await self._socket.send_json({"id": call_id, "method": method, "params": params})
        try:
            message = await asyncio.wait_for(reply, CALL_SECONDS)
        finally:
            del self._replies[call_id]
        if "error" in message:
            raise DevToolsError(f"{method}: {message['error']}")
        return dict(message["result"])

    async def _read(self) -> None:
        async for raw in self._socket:
            if raw.type is not aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(raw.data)
            if "id" in message:
                reply = self._replies.get(message["id"])
                if reply is not None and not reply.done():
                    reply.set_result(message)
                continue
            self._record(message)
            async with self._arrived:
                self.events.append(message)
                self._arrived.notify_all()
        for reply in self._replies.values():  # the browser went away: no call waits for ever
            if not reply.done():
                reply.set_exception(ConnectionError("the browser closed its DevTools connection"))

    async def next_event(self, method: str, timeout: float = CALL_SECONDS) -> dict[str, Any]:
        """The next event named ``method`` not yet handed out (it may have arrived before this was called)."""
        async def arrived() -> dict[str, Any]:
            async with self._arrived:
                while True:
                    matching = [event for event in self.events if event["method"] == method]
                    taken = self._taken.get(method, 0)
                    if len(matching) > taken:
                        self._taken[method] = taken + 1
                        return dict(matching[taken]["params"])
                    await self._arrived.wait()
        return await asyncio.wait_for(arrived(), timeout)

    def _skip_events(self, method: str) -> None:
        """Count every ``method`` event so far as handed out: the next one asked for happens after now."""
        self._taken[method] = sum(event["method"] == method for event in self.events)

    # -- pages ----------------------------------------------------------------------------------------------------
    async def loaded(self) -> None:
        """Wait for the next page load (one that may already have happened since the last)."""
        await self.next_event("Page.loadEventFired")

    async def navigate(self, url: str) -> None:
        await self.settled()  # the browser forgets the bodies of a page it leaves
        self._skip_events("Page.loadEventFired")
        await self.call("Page.navigate", url=url)
        await self.loaded()

    async def reload(self) -> None:
        await self.settled()
        self._skip_events("Page.loadEventFired")
        await self.call("Page.reload", ignoreCache=True)
        await self.loaded()

    async def evaluate(self, script: str) -> str:
        """The value of ``script`` in the page, as a string."""
        return str(await self.value(script))

    async def value(self, script: str) -> Any:
        """The value of ``script`` in the page (a promise is awaited), as JSON gives it."""
        answer = await self.call("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise DevToolsError(f"{script!r} threw {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, script: str, what: str, timeout: float) -> None:
        """Until ``script`` is true in the page (as JavaScript sees truth), looked at every POLL_SECONDS;
        AssertionError naming ``what`` (and what the page shows) after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self.value(f"!!({script})"):
            if asyncio.get_running_loop().time() > deadline:
                shown = await self.value("document.body ? document.body.innerText.slice(0, 2000) : ''")
                raise AssertionError(f"no {what} within {timeout:.0f} s; the page at "
                                     f"{await self.value('location.href')} shows:\n{shown}")
            await asyncio.sleep(POLL_SECONDS)

    # -- a person's input -----------------------------------------------------------------------------------------
    async def click(self, selector: str, text: str | None = None) -> None:
        """A left click in the middle of the first element matching ``selector`` (whose text is ``text``, if
        given), as a mouse does it: moved there (a menu's item is chosen by hovering), pressed, released."""
        point = await self.value(f"""(() => {{
            const found = [...document.querySelectorAll({json.dumps(selector)})]
                .filter(e => {json.dumps(text)} === null || e.textContent.trim() === {json.dumps(text)});
            if (!found.length) return null;
            found[0].scrollIntoView({{block: 'center'}});
            const box = found[0].getBoundingClientRect();
            return [box.left + box.width / 2, box.top + box.height / 2];
        }})()""")
        assert point, f"nothing matches {selector!r}" + (f" with text {text!r}" if text is not None else "")
        x, y = point
        await self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        # ``buttons``: the pressed button as pointer events carry it; Lumino's menu bar opens on that.
        for kind, buttons in (("mousePressed", 1), ("mouseReleased", 0)):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons,
                            clickCount=1)

    async def insert_text(self, text: str) -> None:
        """Type ``text`` where the focus is (as an input method commits it)."""
        await self.call("Input.insertText", text=text)

    async def press(self, key: Key, modifiers: Modifier = Modifier.NONE) -> None:
        """Press and release ``key`` with ``modifiers`` held: a shortcut, as the page's keydown handlers see it."""
        keys = {"key": key.key, "code": key.code, "windowsVirtualKeyCode": key.key_code,
                "nativeVirtualKeyCode": key.key_code, "modifiers": int(modifiers)}
        await self.call("Input.dispatchKeyEvent", type="rawKeyDown", **keys)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **keys)

    # -- what the browser received --------------------------------------------------------------------------------
    async def record_network(self) -> None:
        """From now on, record every response (bodies of text ones fetched as they finish) and websocket frame."""
        await self.call("Network.enable", maxTotalBufferSize=_BODY_BUFFER_BYTES,
                        maxResourceBufferSize=_RESOURCE_BUFFER_BYTES)

    def _record(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Network.responseReceived":
            response = params["response"]
            self.responses[params["requestId"]] = Response(
                params["requestId"], response["url"], int(response["status"]), response.get("mimeType", ""),
                dict(response.get("headers", {})),
                raw_headers=self.responses.get(params["requestId"], _NO_RESPONSE).raw_headers)
        elif method == "Network.responseReceivedExtraInfo":
            recorded = self.responses.get(params["requestId"])
            if recorded is None:  # the extra info may come first: keep it for the response
                recorded = self.responses[params["requestId"]] = Response(params["requestId"], "", 0, "", {})
            recorded.raw_headers = dict(params.get("headers", {}))
        elif method == "Network.loadingFailed":
            recorded = self.responses.get(params["requestId"])
            if recorded is not None:
                recorded.finished, recorded.failure = True, params.get("errorText", "failed")
        elif method == "Network.loadingFinished":
            recorded = self.responses.get(params["requestId"])
            if recorded is not None:
                recorded.finished = True
            if recorded is not None and recorded.textual:
                fetch = asyncio.ensure_future(self._fetch_body(recorded))
                self._body_fetches.add(fetch)
                fetch.add_done_callback(self._body_fetches.discard)
        elif method in ("Network.requestWillBeSent", "Network.requestWillBeSentExtraInfo"):
            headers = params["request"]["headers"] if "request" in params else params.get("headers", {})
            self.sent_headers.append(dict(headers))
        elif method in ("Network.webSocketFrameReceived", "Network.webSocketFrameSent"):
            self.websocket_frames.append(params["response"]["payloadData"])

    async def _fetch_body(self, response: Response) -> None:
        try:
            answer = await self.call("Network.getResponseBody", requestId=response.request_id)
        except DevToolsError as error:
            response.body_error = str(error)
            return
        body = answer["body"]
        response.body = base64.b64decode(body).decode(errors="replace") if answer["base64Encoded"] else body

    async def settled(self, timeout: float = CALL_SECONDS) -> list[Response]:
        """Every response so far, once each has finished loading (or ``timeout`` has passed: a long poll may never
        finish) and the bodies asked for have been fetched."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not all(response.finished for response in self.responses.values() if response.url) \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        while self._body_fetches:
            await asyncio.gather(*list(self._body_fetches), return_exceptions=True)
        return [response for response in self.responses.values() if response.url]

    async def storage_and_dom(self) -> str:
        """What the page keeps: its DOM as it is now, its localStorage and sessionStorage, its cookies."""
        kept = await self.value("JSON.stringify([document.documentElement.outerHTML,"
                                " Object.entries(localStorage), Object.entries(sessionStorage)])")
        cookies = (await self.call("Network.getCookies"))["cookies"]
        return f"{kept}\n{json.dumps(cookies)}"

    # -- other tabs -----------------------------------------------------------------------------------------------
    async def watch_tabs(self) -> None:
        """From now on, know the tabs the page opens (``opened_tab``)."""
        await self.call("Target.setDiscoverTargets", discover=True)

    async def opened_tab(self, timeout: float = 20) -> str:
        """The URL of a tab this page opened (window.open), once it has one; that tab is closed."""
        async def opened() -> dict[str, Any]:
            async with self._arrived:
                while True:
                    for event in self.events:
                        info = event.get("params", {}).get("targetInfo", {})
                        if event["method"] in ("Target.targetCreated", "Target.targetInfoChanged") \
                                and info.get("type") == "page" and info.get("openerId") == self.target_id \
                                and info.get("url") not in ("", "about:blank"):
                            return dict(info)
                    await self._arrived.wait()
        try:
            info = await asyncio.wait_for(opened(), timeout)
        except asyncio.TimeoutError:
            seen = [event["params"] for event in self.events if event["method"].startswith("Target.")]
            raise AssertionError(f"the page opened no tab within {timeout:.0f} s; tabs seen: {seen}") from None
        await self.call("Target.closeTarget", targetId=info["targetId"])
        return str(info["url"])


_NO_RESPONSE = Response("", "", 0, "", {})


@contextlib.asynccontextmanager
async def browser(profile: Path, width: int = 1280, height: int = 900) -> AsyncIterator[DevTools]:
    """A headless Chromium with its profile in ``profile`` and one blank tab, driven by the DevTools it yields;
    killed when done."""
    chromium = await asyncio.create_subprocess_exec(
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--window-size={width},{height}", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    draining: asyncio.Future[None] | None = None
    try:
        assert chromium.stderr is not None
        while not (line := (await asyncio.wait_for(chromium.stderr.readline(), START_SECONDS)).decode()).startswith(
                "DevTools listening on "):
            assert line, "chromium ended before it listened"
        # Chromium keeps writing to stderr; a pipe nobody reads fills up and stops it.
        draining = asyncio.ensure_future(_drain(chromium.stderr))
        debugger = urlsplit(line.split()[-1]).netloc
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{debugger}/json/list") as response:
                tab = next(target for target in await response.json() if target["type"] == "page")
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                tools = DevTools(socket, tab["id"])
                try:
                    await tools.call("Page.enable")
                    yield tools
                finally:
                    await tools.close()
    finally:
        chromium.kill()
        await chromium.wait()
        if draining is not None:
            await asyncio.gather(draining, return_exceptions=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
