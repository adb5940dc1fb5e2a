"""One HTTP request: forward it to the hub and stream the answer back, both bodies in constant memory, with the
hub token swapped out of every answer a browser reads as text (token_swap)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from .config import Settings
from .errors import HubRefusedRequest, HubUnreachable, ProxyError, hub_bad_answer
from .hub_http import HubAnswer, HubConnections
from .routing import Route, app_not_listening, client_response_headers, gateway_refusal, hub_url, loggable
from .token_swap import BodySwap, BrokenBody, TokenSwap, content_coding, is_textual
from .transport import HubTransport

log = logging.getLogger("jupyter_dev_proxy")

# A request that may have reached the server is sent a second time only if that cannot change what the IDE sees
# (RFC 9110 §9.2.2): a save (PUT) writes the same bytes again. DELETE is idempotent for the server but not for
# the IDE: a second one answers 404 to a delete that worked (review S4). That one retry goes on a new connection.
# (A streamed upload goes through aiohttp's session, whose own single retry of a reused connection that closed
# before answering, RFC 9112 §9.3.1, stays: nothing was answered on it.)
_REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT"})

# How much of a request body is kept so the request can be replayed on a fresh connection. Bodies larger
# than this are streamed without a copy and are not retried.
_REPLAY_LIMIT_BYTES = 1024 * 1024

# A hub that was reached this recently and now refuses connections is most likely restarting its front (a hub
# proxy restart, an ingress reload, a VPN reconnect take a few seconds): a request that could not be sent is
# tried again after these pauses, instead of failing the IDE's save or poll at once.
_RECENTLY_REACHED_SECONDS = 60.0
_UNREACHABLE_RETRY_PAUSES = (0.25, 0.5, 1.0, 2.0)


# An answer with a Content-Length up to this is read whole and sent in one write; larger ones stream. A request
# body up to this is read whole too and sent with its head on the relay's own connections (hub_http).
_SMALL_BODY_BYTES = 64 * 1024


class _ReplayableBody:
    """The client's request body, streamed to the hub, with its first MiB kept for one replay."""

    def __init__(self, stream: aiohttp.StreamReader) -> None:
        self._stream = stream
        self._sent: list[bytes] = []
        self._sent_bytes = 0
        self.replayable = True

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in list(self._sent):
            yield chunk
        async for chunk in self._stream.iter_any():
            if self.replayable:
                self._sent_bytes += len(chunk)
                if self._sent_bytes > _REPLAY_LIMIT_BYTES:
                    self.replayable = False
                    self._sent.clear()
                else:
                    self._sent.append(chunk)
            yield chunk


async def _body_in_hand(request: web.BaseRequest) -> bytes | None:
    """The request's body (there is one), read whole when it is small enough to send in one write with the head;
    None when it is streamed to the hub as it comes (a large or chunked upload)."""
    length = request.content_length
    return await request.read() if length is not None and length <= _SMALL_BODY_BYTES else None


async def _send(connections: HubConnections, session: aiohttp.ClientSession, hub_transport: HubTransport,
                request: web.BaseRequest, settings: Settings, target: str,
                headers: CIMultiDict[str]) -> HubAnswer | aiohttp.ClientResponse:
    """Send the request (a body in hand on the relay's own connections, a streamed one through aiohttp's session);
    once more on a fresh connection if a pooled one was dead and a replay is safe, and again after a pause while a
    hub reached moments ago cannot be connected to (nothing was sent then)."""
    whole = await _body_in_hand(request) if request.body_exists else b""
    streamed = _ReplayableBody(request.content) if whole is None else None
    retry_allowed = request.method in _REPLAYABLE_METHODS
    fresh = False  # a retry goes on a new connection: another pooled one may be as dead
    pauses = iter(_UNREACHABLE_RETRY_PAUSES)
    while True:
        try:
            if whole is not None:
                return await connections.send(request.method, target, headers, whole, fresh)
            return await session.request(request.method, hub_url(settings, target), headers=headers,
                                         data=streamed.chunks() if streamed else None, allow_redirects=False)
        except HubUnreachable:
            loop = asyncio.get_running_loop()
            pause = next(pauses, None)
            if pause is None or loop.time() - hub_transport.last_reached > _RECENTLY_REACHED_SECONDS:
                raise
            await asyncio.sleep(pause)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # (A new connection that cannot be made fails as ProxyError, in the transport, and is not retried.)
            if not retry_allowed or (streamed is not None and not streamed.replayable):
                raise
            retry_allowed, fresh = False, True
            log.info("%s: the hub closed a pooled connection (%s); sending it again on a new one",
                     loggable(request.method, request.raw_path), type(exc).__name__)


def _continue_if_expected(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` (curl sends it for uploads over 1 MiB) once the request has passed the
    proxy's checks, so a refused request's body is never sent; the hub does not see the header."""
    expect = request.headers.get("Expect")
    if expect is None or request.version < HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise ProxyError(417, "expectation-failed", f"The request expects '{expect}', which the proxy does not "
                                                    "support; send it without an Expect header.")
    # Straight to the transport: the writer counts what it writes, and the funnel takes any count as "the
    # answer has begun".
    if request.transport is None:
        raise ConnectionResetError("the IDE closed the connection")
    request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


# Answers whose body is not looked into: 204 and 304 have none (RFC 9110 §6.4.1); a 206 is a byte range of a file
# on the server (only Jupyter's static and /files/ handlers answer ranges), which a swap of another length would
# shift out of its Content-Range, and which holds the hub token only if a file on the server does.
_UNSWAPPED_STATUSES = frozenset({204, 206, 304})

# Headers that describe the hub's bytes, not the bytes the IDE gets once the token is swapped out of them.
_VALIDATORS = ("ETag", "Last-Modified")


def _body_swap(request: web.BaseRequest, settings: Settings, upstream: HubAnswer | aiohttp.ClientResponse,
               swap: TokenSwap | None, headers: CIMultiDict[str]) -> BodySwap | None:
    """The swap the answer's body goes through, and the IDE's ``headers`` fitted to what it changes: None for
    answers that cannot carry text (binary types, no body) and byte ranges. A text the proxy cannot open is
    refused."""
    if swap is None or upstream.status in _UNSWAPPED_STATUSES \
            or not is_textual(upstream.headers.get("Content-Type", "")):
        return None
    coding = content_coding(upstream.headers.getall("Content-Encoding", []))
    if coding is None:
        codings = ", ".join(upstream.headers.getall("Content-Encoding"))
        raise hub_bad_answer(settings.hub, f"a text answer compressed as {ascii(codings[:40])}, which the proxy "
                                           "cannot open to keep the hub token out of it")
    compressed = coding != "identity"
    # Where the swap may change the length (a compressed text is sent inflated; a token of another length), the IDE
    # gets the body chunked — and a HEAD, the same headers as a GET. A token that was not in the body changes
    # nothing else: a large text keeps its validators, so browsers keep caching JupyterLab's scripts.
    if compressed or not swap.same_length:
        headers.popall("Content-Length", None)
    if compressed:
        headers.popall("Content-Encoding", None)
    return None if request.method == "HEAD" else BodySwap(swap, compressed)


def _mark_holding_credential(headers: CIMultiDict[str], length: int | None) -> None:
    """The headers of a small answer the swap changed: its new length (None: sent chunked), and no cache keeps it,
    as it holds a credential (a page cached with one run's token would revalidate as unchanged and then fail with
    the next)."""
    if length is not None:
        headers["Content-Length"] = str(length)
    for name in _VALIDATORS:
        headers.popall(name, None)
    headers["Cache-Control"] = "no-store"


async def relay_http(request: web.BaseRequest, settings: Settings, hub_transport: HubTransport,
                     connections: HubConnections, session: aiohttp.ClientSession, route: Route, target: str,
                     headers: CIMultiDict[str], set_cookie: str | None, cors: list[tuple[str, str]],
                     swap: TokenSwap | None) -> web.StreamResponse:
    """Forward ``request`` to ``target`` (the raw path and query on the hub, on ``route``) with ``headers`` (the hub token in them) and stream the hub's
    response back as it comes; ``set_cookie`` (the proxy's own) is added to a successful answer, ``cors`` to every
    answer; ``swap`` (None when the IDE's token is the hub's) takes the hub token out of its headers and text. A
    small 401 or 403 of the hub's own is raised as HubRefusedRequest, for the funnel to ask whether the token is
    still accepted."""
    _continue_if_expected(request)
    with hub_transport.failures():
        upstream = await _send(connections, session, hub_transport, request, settings, target, headers)
    try:
        refusal = gateway_refusal(settings, target.partition("?")[0], upstream.status, upstream.content_type)
        if refusal is not None:
            raise refusal
        answer_headers = client_response_headers(settings, upstream.headers, swap, route)
        body_swap = _body_swap(request, settings, upstream, swap, answer_headers)
        if set_cookie is not None and upstream.status < 400:
            answer_headers.add("Set-Cookie", set_cookie)
        for name, value in cors:  # the proxy's own CORS answer (routing dropped the hub's)
            if name == "Vary":
                answer_headers.add(name, value)
            else:
                answer_headers[name] = value
        read: Callable[[], Awaitable[bytes]] = upstream.content.readany
        length = upstream.content_length
        if length is not None and length <= _SMALL_BODY_BYTES and request.method != "HEAD":
            # Most API answers: read whole, so status, headers and body leave in one write.
            with hub_transport.failures():
                body = await upstream.read()
            refusal = app_not_listening(route, upstream.status, body)
            if refusal is not None:
                raise refusal
            if body_swap is not None and not body_swap.compressed:
                body, found = body_swap.swap.whole(body)
                if found:
                    _mark_holding_credential(answer_headers, len(body))
                body_swap = None
            elif body_swap is not None and not _holds_token(settings, body_swap, body):
                for name in ("Content-Encoding", "Content-Length"):  # it goes as it came, compressed
                    answer_headers.popall(name, None)
                    answer_headers.extend((name, value) for value in upstream.headers.getall(name, []))
                body_swap = None
            if body_swap is None:
                small = web.Response(status=upstream.status, reason=_reason(upstream), headers=answer_headers,
                                     body=body)
                if upstream.status in (401, 403):
                    raise HubRefusedRequest(small)
                return small
            # A compressed text with the token in it: inflated and swapped again as it is sent.
            body_swap, read = body_swap.again(), _read_once(body)
            _mark_holding_credential(answer_headers, None)
        response = web.StreamResponse(status=upstream.status, reason=_reason(upstream), headers=answer_headers)
        await response.prepare(request)
        await _copy_body(request, read, response, body_swap)
    finally:
        upstream.release()
    return response


def _holds_token(settings: Settings, body_swap: BodySwap, body: bytes) -> bool:
    """Whether the token is in a small compressed answer, looked for a piece at a time without keeping what it
    inflates to (a few KiB may inflate to a great deal)."""
    try:
        for _ in body_swap.feed(body):
            pass
        for _ in body_swap.end():
            pass
    except BrokenBody as exc:  # refused, not passed on: a lenient decoder (a browser's) would still read the token
        raise hub_bad_answer(settings.hub, str(exc)) from None
    return body_swap.found


def _read_once(body: bytes) -> Callable[[], Awaitable[bytes]]:
    chunks = [b"", body]

    async def read() -> bytes:
        return chunks.pop() if chunks else b""
    return read


def _reason(upstream: HubAnswer | aiohttp.ClientResponse) -> str | None:
    """The hub's reason phrase if it can be written as it is; else the standard one for the status."""
    reason = upstream.reason
    return reason if reason is not None and reason.isprintable() and reason.isascii() else None


async def _copy_body(request: web.BaseRequest, read: Callable[[], Awaitable[bytes]], response: web.StreamResponse,
                     body_swap: BodySwap | None) -> None:
    """Copy chunks as they arrive (through the swap, when the answer is text); a break on either side ends the
    copy without a half-finished reply."""
    copied = 0
    while True:
        try:
            chunk = await read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            _broken_off(request, copied, type(exc).__name__)
            return
        pieces = (chunk,) if body_swap is None else body_swap.feed(chunk) if chunk else body_swap.end()
        try:
            for piece in pieces:  # one at a time: an inflated chunk is never held whole
                if piece:
                    await response.write(piece)
        except BrokenBody as exc:
            _broken_off(request, copied, str(exc))
            return
        except ConnectionError:
            log.debug("%s: the IDE went away after %d bytes", loggable(request.method, request.raw_path), copied)
            return
        if not chunk:
            break
        copied += len(chunk)
    await response.write_eof()


def _broken_off(request: web.BaseRequest, copied: int, why: str) -> None:
    log.warning("%s: the hub broke off its answer after %d bytes (%s); the IDE sees a broken download and can "
                "retry", loggable(request.method, request.raw_path), copied, why)
    if request.transport is not None:
        request.transport.abort()  # never let a truncated body look complete
