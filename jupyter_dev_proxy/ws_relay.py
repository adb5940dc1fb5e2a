"""One websocket (a kernel channel, a terminal): connect upstream first, then relay frames both ways.

The order matters: the IDE is accepted only after the hub has answered, with exactly the subprotocol the
hub chose — node's ``ws`` (VS Code) aborts a handshake that answers a subprotocol it did not expect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import MultiMapping
from yarl import URL

from .config import Settings
from .errors import ProxyError
from .routing import client_response_headers, upstream_request_headers
from .upstream import RedirectRefused

log = logging.getLogger("jupyter_dev_proxy")

# Close codes that describe a connection that died rather than one that was closed; they may not be sent
# in a close frame (RFC 6455 §7.4.1), so the other side is told 1011 (unexpected condition) instead.
_NOT_SENDABLE = frozenset({1005, 1006, 1015})

# How long a closing handshake may take before the connection is simply dropped.
_CLOSE_TIMEOUT_SECONDS = 5.0

# Both sides are opened with decode_text=False (text frames arrive as bytes); aiohttp's server-side type
# does not narrow on that argument, hence Any.
_IdeSocket = web.WebSocketResponse[Any]
_HubSocket = aiohttp.ClientWebSocketResponse[Any]
_Socket = _IdeSocket | _HubSocket

# Every relay in progress, IDE side first, so shutdown can close both sides with 1001.
OPEN_RELAYS = web.AppKey("open_relays", set[tuple[_IdeSocket, _HubSocket]])


def _offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


async def relay_websocket(request: web.Request, settings: Settings, session: aiohttp.ClientSession,
                          hub_token: str, url: URL) -> web.WebSocketResponse:
    """Open ``url`` on the hub as a websocket, accept the IDE with the same subprotocol, relay until closed."""
    try:
        upstream = await session.ws_connect(
            url,
            protocols=_offered_protocols(request),
            headers=upstream_request_headers(request.headers, hub_token, websocket=True),
            server_hostname=settings.tls_name,
            max_msg_size=0,  # notebooks send outputs far larger than aiohttp's 4 MiB default
            decode_text=False,  # text frames are relayed as bytes, never decoded and re-encoded
            autoclose=False,  # a close is relayed to the IDE, whose answer is relayed back (see _pump)
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_TIMEOUT_SECONDS),
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise _handshake_refused(settings, exc.status, exc.headers) from None
    except RedirectRefused as exc:
        raise _handshake_refused(settings, exc.status, exc.headers) from None
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        max_msg_size=0,
        decode_text=False,
        autoclose=False,  # see _pump
        timeout=_CLOSE_TIMEOUT_SECONDS,
    )
    relays, relay = request.app[OPEN_RELAYS], (client, upstream)
    to_hub: asyncio.Future[None] | None = None
    try:
        await client.prepare(request)
        relays.add(relay)
        to_hub = asyncio.ensure_future(_pump(client, upstream))
        await _pump(upstream, client)
        await to_hub
    finally:
        relays.discard(relay)
        if to_hub is not None and not to_hub.done():
            to_hub.cancel()
        if not upstream.closed:
            await upstream.close(code=WSCloseCode.GOING_AWAY)
    return client


def _handshake_refused(settings: Settings, status: int, headers: MultiMapping[str] | None) -> ProxyError:
    """The hub answered the handshake with something other than 101: tell the IDE what and why."""
    if headers is not None:
        client_response_headers(settings, headers)  # raises for a redirect out of the user's server
    return ProxyError(status if status >= 400 else 502, "hub-refused-websocket",
                      f"The hub answered the websocket handshake with HTTP {status} instead of accepting it.")


async def _pump(source: _Socket, sink: _Socket) -> None:
    """Relay data frames in order from ``source`` to ``sink``; then relay the closing handshake.

    When the IDE closes with 4002, the hub gets 4002 and the IDE then gets the hub's answer, so neither
    side hears "closed" before the other knows. A CLOSING message means the other pump is closing
    ``source`` itself and finishes both sides.
    """
    while True:
        message = await source.receive()
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            try:
                await sink.send_frame(message.data, message.type)
            except ConnectionError:
                break
        elif message.type is WSMsgType.CLOSING:
            return
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    await _close(sink, source.close_code)
    await _close(source, sink.close_code)


async def _close(ws: _Socket, code: int | None) -> None:
    if ws.closed:
        return
    if code is None or code in _NOT_SENDABLE:
        code = WSCloseCode.INTERNAL_ERROR
    await ws.close(code=code)


async def close_all(relays: set[tuple[_IdeSocket, _HubSocket]]) -> None:
    """Close both sides of every relay with 1001 (going away): the proxy is shutting down."""
    for client, upstream in list(relays):
        await asyncio.gather(client.close(code=WSCloseCode.GOING_AWAY, message=b"jupyter-dev-proxy stopped"),
                             upstream.close(code=WSCloseCode.GOING_AWAY), return_exceptions=True)
