"""Every connection to the hub is opened here, as a stack of hops, and each hop's failure is worded here.

    TCP ─▶ [the company proxy: CONNECT host:port] ─▶ TLS (CA file, client certificate, SNI name) ─▶ a protocol

    HubTransport(settings)
      .open(protocol_factory)  one connection as configured, handed to a protocol (a websocket's, aiohttp's);
                               ProxyError naming the hop that failed; a ready one when there is one
      .note_activity()         the IDE is at work: keep connections ready for after its next pause
      .session()               the aiohttp session for HTTP requests and hub API calls, whose connections
                               come from .open; it sends the access gateway's headers with every request
      .gateway_headers         those headers, for what writes its own requests (websocket handshakes)
      .failures()              (with) around a request under way: aiohttp's errors become ProxyError

The hub's name is resolved by the system resolver, or, through a company proxy, by that proxy alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar, cast

import aiohttp
from aiohttp import http_exceptions
import certifi
from aiohttp.client_proto import ResponseHandler

from .certificates import certificate_issuer
from .config import ConfigError, ForwardProxy, Settings
from .errors import HubUnreachable, ProxyError, hub_bad_answer
from .http1 import HeadTooLong, parse_answer_head, take_head
from .timeouts import timeout

# configurable-http-proxy, in front of most hubs, drops idle keep-alive connections after 5 s. A pooled
# connection must be retired well before that, or a request can be written into a socket the hub is
# closing (a "server disconnected" that would surface to the IDE as a failed save).
IDLE_CONNECTION_SECONDS = 3.0

# Connecting (TCP, the company proxy's tunnel, TLS) must be quick.
CONNECT_TIMEOUT_SECONDS = 15.0

# Once a request is sent, the hub may stay silent this long before the proxy gives up with a 504: the head
# of an HTTP answer, each stretch of its body, the answer to a websocket handshake. jupyter_server answers a
# kernel start or a kernel channel only once the kernel replies (its kernel_info_timeout is 60 s), and a large
# save only once the file is written; twice that covers a busy node. A body that keeps flowing and an open
# websocket have no limit.
ANSWER_TIMEOUT_SECONDS = 120.0

# Connections kept ready for the next request or websocket after a pause: opened (TCP, tunnel, TLS) but never
# used, so what comes next costs one round trip instead of three. None is ever one the hub has used (the hub's
# proxy closes used ones after 5 s idle): that is the stale-connection guarantee. An IDE opening a notebook after
# a pause sends 3-6 requests at once (contents, sessions, kernelspecs, kernels, checkpoints, me), so after any
# activity as many are kept as that burst needs, or as the busiest second of the last few minutes needed if more,
# at most this many.
IDE_BURST_CONNECTIONS = 6
MAX_SPARE_CONNECTIONS = 6
_DEMAND_WINDOW_SECONDS = 300.0
# A spare older than this is replaced by a new one: an nginx ingress closes a connection that has sent no
# request within 60 s (client_header_timeout), and other middleboxes forget idle ones after a minute or more.
SPARE_MAX_AGE_SECONDS = 45.0
# How often the spares are looked after, and how long to wait after failing to open one (the hub is down).
_WARM_TICK_SECONDS = 1.0
_WARM_BACKOFF_SECONDS = 10.0
# A spare the other end closed within this long of its opening did not work: something accepts connections and
# drops them at once (an ssh tunnel whose far end is down, an ingress at its connection limit). It counts as a
# failure to open, so the warmer backs off instead of opening thousands of connections a second.
_SPARE_MIN_LIFE_SECONDS = 2.0

# Larger reads than aiohttp's 64 KiB default halve the per-chunk overhead of large downloads, at a fixed
# memory cost per open response.
READ_BUFFER_BYTES = 256 * 1024

# OpenSSL's verify code for "certificate is valid, but not for this name".
_X509_V_ERR_HOSTNAME_MISMATCH = 62

# TLS alerts with which a server (an access gateway, mostly) refuses a client without the certificate it wants.
_CLIENT_CERTIFICATE_ALERTS = ("CERTIFICATE_REQUIRED", "HANDSHAKE_FAILURE", "BAD_CERTIFICATE", "UNKNOWN_CA",
                              "CERTIFICATE_UNKNOWN", "ACCESS_DENIED")

_P = TypeVar("_P", bound=asyncio.BaseProtocol)

log = logging.getLogger("jupyter_dev_proxy")


def tls_context_for(settings: Settings) -> ssl.SSLContext:
    """Trust the public CAs (certifi) plus the cluster CA file; present the client certificate, if set."""
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"The CA file {settings.ca_file} is not a PEM certificate ({exc}): set "
                              "JUPYTER_CLUSTER_CA_CERT to the CA certificate your cluster admin gave you.") from None
    if settings.client_cert is not None:
        try:  # a key protected by a passphrase is refused, rather than prompted for on the terminal
            context.load_cert_chain(str(settings.client_cert), settings.client_key and str(settings.client_key),
                                    password=lambda: b"")
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ConfigError(f"The client certificate in {settings.client_cert} (key: "
                              f"{settings.client_key or 'in the same file'}) cannot be used ({exc.args[-1]}): set "
                              "JUPYTER_CLIENT_CERT to a PEM certificate and JUPYTER_CLIENT_KEY to its key without "
                              "a passphrase.") from None
    return context


def is_name_mismatch(cause: BaseException) -> bool:
    """The certificate is trusted but issued to another name (JUPYTER_SERVER_NAME is wrong, not the CA)."""
    return getattr(cause, "verify_code", None) == _X509_V_ERR_HOSTNAME_MISMATCH


def refuses_client(exc: BaseException) -> bool:
    """A TLS alert that says the server wants a client certificate (or does not accept the one sent)."""
    text = str(exc).upper()
    return isinstance(exc, ssl.SSLError) and any(alert in text for alert in _CLIENT_CERTIFICATE_ALERTS)


class _ConnectAnswer(asyncio.Protocol):
    """The company proxy's answer to CONNECT: a status line and headers, then the tunnel."""

    def __init__(self) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._received = bytearray()

    def data_received(self, data: bytes) -> None:
        self._received += data
        if self.head.done():
            return
        try:
            head = take_head(self._received)
        except HeadTooLong:
            head = b""  # not an HTTP proxy's answer
        if head is not None:
            self.head.set_result(head)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_result(bytes(self._received))


class _Peek(asyncio.Protocol):
    """A connection opened only to look at the hub's certificate."""

    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)


class _Spare(asyncio.Protocol):
    """A ready connection that has carried nothing yet, waiting to be handed to a protocol. The hub sends nothing
    before a request, so anything it does (bytes, closing) means the connection must not be used.

    A transport may have bound a callback to this protocol before it was handed on (Python 3.10's TLS transport
    schedules connection_lost with the protocol it has at that moment, and its is_closing() does not tell): such a
    late callback is passed to the protocol the connection went to, which would otherwise never hear of it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.born = asyncio.get_running_loop().time()
        self.usable = True
        self._handed: asyncio.BaseProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if isinstance(self._handed, asyncio.Protocol):
            self._handed.data_received(data)
            return
        self.discard()

    def eof_received(self) -> bool:
        self.usable = False
        if isinstance(self._handed, asyncio.Protocol):
            return bool(self._handed.eof_received())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._handed is not None:
            self._handed.connection_lost(exc)

    @property
    def ready(self) -> bool:
        """Usable, and its transport is not closing: a reset may already be queued for this protocol (a TLS
        transport schedules connection_lost with the protocol it has then)."""
        return self.usable and self.transport is not None and not self.transport.is_closing()

    def discard(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.abort()

    def hand_to(self, protocol: _P) -> _P:
        assert self.transport is not None
        self.usable = False
        self._handed = protocol
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        return protocol


class HubTransport:
    """The hops to the hub, configured once; every connection to the hub is made by ``open``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        hub = settings.hub.origin
        assert hub.raw_host is not None and hub.port is not None  # config accepts only http(s)://host URLs
        self._host, self._port = hub.raw_host, hub.port
        self._tls = tls_context_for(settings) if hub.scheme == "https" else None
        self._failure_map = _FailureMap(self)
        self.gateway_headers = settings.hub_headers
        self._spares: collections.deque[_Spare] = collections.deque()
        self._opened_at: collections.deque[float] = collections.deque()  # when open() was asked: the demand
        self._last_activity = -math.inf
        self._warming: asyncio.Task[None] | None = None
        self.last_reached = -math.inf  # when a connection to the hub was last made (loop time)

    # -- opening a connection ------------------------------------------------------------------------------------

    async def open(self, protocol_factory: Callable[[], _P]) -> _P:
        """A connection to the hub (tunnelled and TLS-wrapped as configured), handed to a new protocol: a spare
        one when one is ready, else a new one."""
        self._opened_at.append(asyncio.get_running_loop().time())
        while self._spares:
            spare = self._spares.popleft()
            if spare.ready:
                return spare.hand_to(protocol_factory())
            spare.discard()
        return await self._open(protocol_factory, self._tls)

    # -- keeping connections ready ---------------------------------------------------------------------------------

    def note_activity(self) -> None:
        """The IDE did something: keep connections ready (again) for the next few minutes of quiet."""
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        if self._warming is None and self._settings.keep_warm_minutes > 0:
            self._warming = loop.create_task(self._keep_warm())

    def _wanted_spares(self, now: float) -> int:
        """As many as the IDE's burst needs, or as the busiest second of the last few minutes asked for if more (at
        most the maximum)."""
        opened = self._opened_at
        while opened and opened[0] < now - _DEMAND_WINDOW_SECONDS:
            opened.popleft()
        busiest, start = IDE_BURST_CONNECTIONS, 0
        for end, moment in enumerate(opened):
            while opened[start] < moment - 1.0:
                start += 1
            busiest = max(busiest, end - start + 1)
        return min(busiest, MAX_SPARE_CONNECTIONS)

    async def _keep_warm(self) -> None:
        """Until the IDE has been quiet for the configured minutes: replace spares that aged or that the hub
        closed, and open new ones up to the demand. Nothing is ever sent on them: the user's server never sees
        them, so its idle culling works as if the proxy were not there."""
        loop = asyncio.get_running_loop()
        quiet_limit = self._settings.keep_warm_minutes * 60
        failures = 0  # spares in a row that died young: the pause before the next one grows with them
        next_open = -math.inf
        try:
            while (now := loop.time()) - self._last_activity < quiet_limit:
                for spare in list(self._spares):
                    if not spare.ready or now - spare.born > SPARE_MAX_AGE_SECONDS:
                        self._spares.remove(spare)
                        spare.discard()
                        if now - spare.born < _SPARE_MIN_LIFE_SECONDS:
                            failures += 1
                            next_open = now + min(_WARM_TICK_SECONDS * 2 ** (failures - 1), _WARM_BACKOFF_SECONDS)
                    elif now - spare.born >= _SPARE_MIN_LIFE_SECONDS:
                        failures = 0  # one lived through its first seconds: the hub keeps connections again
                pause = _WARM_TICK_SECONDS
                if len(self._spares) < self._wanted_spares(now) and now >= next_open:
                    try:
                        self._spares.append(await self._open(_Spare, self._tls))
                        pause = 0
                    except ProxyError as error:
                        log.debug("Could not open a spare connection to the hub (%s); trying again later.",
                                  error.reason)
                        pause = _WARM_BACKOFF_SECONDS
                await asyncio.sleep(pause)
        finally:
            self._warming = None
            self._drop_spares()

    def _drop_spares(self) -> None:
        while self._spares:
            self._spares.popleft().discard()

    async def close(self) -> None:
        """Stop keeping connections ready and close the ready ones."""
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        self._drop_spares()

    async def _open(self, protocol_factory: Callable[[], _P], tls: ssl.SSLContext | None) -> _P:
        protocol = await self._connect(protocol_factory, tls)
        self.last_reached = asyncio.get_running_loop().time()
        return protocol

    async def _connect(self, protocol_factory: Callable[[], _P], tls: ssl.SSLContext | None) -> _P:
        loop = asyncio.get_running_loop()
        proxy = self._settings.forward_proxy
        tunnelled = False
        try:
            async with timeout(CONNECT_TIMEOUT_SECONDS):
                if proxy is None:
                    _, protocol = await loop.create_connection(
                        protocol_factory, self._host, self._port, ssl=tls,
                        server_hostname=self._settings.tls_name if tls is not None else None)
                    return protocol
                raw = await self._tunnel(proxy)
                tunnelled = True
                protocol = protocol_factory()
                if tls is None:
                    raw.set_protocol(protocol)
                    protocol.connection_made(raw)
                    return protocol
                wrapped = await loop.start_tls(raw, protocol, tls, server_hostname=self._settings.tls_name)
                if wrapped is None:
                    raise ConnectionResetError("the connection closed during the TLS handshake")
                protocol.connection_made(wrapped)
                return protocol
        except ProxyError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise await self._untrusted(exc) from None
        except asyncio.TimeoutError:
            if proxy is not None and not tunnelled:
                raise ProxyError(504, "forward-proxy-timeout", f"The company proxy at {proxy} (from "
                                                               f"{proxy.setting}) did not open a connection to the "
                                                               f"hub within {CONNECT_TIMEOUT_SECONDS:.0f} s: check "
                                                               f"{proxy.setting}, or try again.") from None
            raise self._hub_connect_failure(TimeoutError()) from None
        except OSError as exc:
            raise self._hub_connect_failure(exc) from None

    async def _tunnel(self, proxy: ForwardProxy) -> asyncio.Transport:
        """A TCP connection to the company proxy, turned into a tunnel to the hub with CONNECT."""
        loop = asyncio.get_running_loop()
        try:
            raw, answer = await loop.create_connection(_ConnectAnswer, proxy.host, proxy.port)
        except socket.gaierror:
            raise ProxyError(502, "forward-proxy-unknown", f"The company proxy's name in {proxy.setting} "
                                                           f"({proxy.host}) could not be resolved: check "
                                                           f"{proxy.setting}, or your network.") from None
        except OSError as exc:
            raise ProxyError(502, "forward-proxy-unreachable", f"The company proxy at {proxy} (from "
                                                               f"{proxy.setting}) could not be reached "
                                                               f"({exc.strerror or exc}): check {proxy.setting}, "
                                                               "or your network.") from None
        try:
            target = f"{self._host}:{self._port}"
            lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
            if proxy.authorization is not None:
                lines.append(f"Proxy-Authorization: {proxy.authorization}")
            raw.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            self._check_tunnel(proxy, await answer.head)
        except BaseException:
            raw.abort()
            raise
        return cast(asyncio.Transport, raw)  # uvloop's transports are not asyncio.Transport subclasses

    def _check_tunnel(self, proxy: ForwardProxy, head: bytes) -> None:
        answer = parse_answer_head(head)
        hub = f"{self._host}:{self._port}"
        if answer is None:
            raise ProxyError(502, "forward-proxy-refused", f"The company proxy at {proxy} (from {proxy.setting}) "
                                                           "closed the connection or answered something that is "
                                                           f"not HTTP when asked to reach the hub at {hub}: check "
                                                           f"that {proxy.setting} names an HTTP proxy.")
        status = answer.status
        if status == 200:
            return
        said = f"{status} {answer.reason}".strip()
        if status in (401, 407):  # tinyproxy answers wrong credentials with 401
            if proxy.authorization is None:
                advice = (f"put them in {proxy.setting} as http://user:password@{proxy.host}:{proxy.port}"
                          if proxy.setting != "--hub-proxy" else
                          f"put http://user:password@{proxy.host}:{proxy.port} in JUPYTER_HUB_PROXY")
                raise ProxyError(502, "forward-proxy-auth", f"The company proxy at {proxy} wants a user name and "
                                                            f"password ({said}): {advice}.")
            raise ProxyError(502, "forward-proxy-auth", f"The company proxy at {proxy} refused the user name and "
                                                        f"password in {proxy.setting} ({said}): check them.")
        if status in (500, 502, 503, 504):
            raise HubUnreachable(502, "forward-proxy-refused", f"The company proxy at {proxy} could not reach the hub "
                                                           f"at {hub} ({said}): check the hub address (the company "
                                                           "proxy resolves its name), or try again.")
        raise ProxyError(502, "forward-proxy-refused", f"The company proxy at {proxy} refused to connect to the "
                                                       f"hub at {hub} ({said}): ask your IT department to let "
                                                       "connections to the hub through.")

    # -- failures of the last hops: the hub's TLS, and the hub itself ----------------------------------------------

    def _hub_connect_failure(self, exc: OSError | TimeoutError) -> ProxyError:
        hub = self._settings.hub
        via = f" through the company proxy at {self._settings.forward_proxy}" if self._settings.forward_proxy else ""
        if isinstance(exc, ssl.SSLError):
            if refuses_client(exc):
                return gateway_refused_certificate(self._settings, str(exc))
            return ProxyError(502, "tls-failed", f"The TLS handshake with the hub at {hub} failed ({exc}): "
                                                 "check that JUPYTER_SERVER_PORT is the hub's HTTPS port.")
        if isinstance(exc, socket.gaierror):
            return HubUnreachable(502, "hub-unknown", f"The hub's name {hub.origin.host} could not be resolved: check "
                                                  "the hub address and your network or VPN (or set "
                                                  "HTTPS_PROXY if only your company proxy can reach it).")
        if isinstance(exc, TimeoutError):  # not HubUnreachable: trying again would make the IDE wait minutes
            return ProxyError(504, "hub-timeout", f"The hub at {hub} did not answer in time{via}: it may be "
                                                  "overloaded, or your network or VPN may be down.")
        return HubUnreachable(502, "hub-unreachable", f"The hub at {hub} could not be reached{via} "
                                                  f"({exc.strerror or exc}): check the hub address and your "
                                                  "network or VPN.")

    async def _untrusted(self, exc: ssl.SSLCertVerificationError) -> ProxyError:
        settings = self._settings
        detail = exc.verify_message or str(exc)
        if is_name_mismatch(exc):
            advice = (f"its certificate is not issued to '{settings.tls_name}': set JUPYTER_SERVER_NAME "
                      "to the name on the hub's certificate")
        elif settings.ca_file is None:
            advice = (f"its certificate was refused ({detail}); if your cluster has its own CA, set "
                      "JUPYTER_CLUSTER_CA_CERT to its CA file")
        else:
            advice = f"it is not signed by the CA in {settings.ca_file} ({detail}): check JUPYTER_CLUSTER_CA_CERT"
        issuer = None if is_name_mismatch(exc) else await self._peer_issuer()
        issued = f"; the hub's certificate was issued by '{issuer}'" if issuer else ""
        return ProxyError(502, "tls-verification-failed",
                          f"The hub at {settings.hub} could not be trusted: {advice}{issued}.")

    async def _peer_issuer(self) -> str | None:
        """Who issued the certificate the hub presents, read without verifying it, only to name it."""
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        try:
            peek = await self._open(_Peek, unverified)
        except ProxyError:
            return None
        assert peek.transport is not None
        try:
            der = peek.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            peek.transport.abort()
        return certificate_issuer(der) if der else None

    # -- HTTP: aiohttp's session over these connections -----------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The client session for HTTP requests to the hub; the caller closes it."""
        return aiohttp.ClientSession(
            connector=_HubConnector(self, keepalive_timeout=IDLE_CONNECTION_SECONDS,
                                    limit=0),  # never queue a request behind others for a connection
            timeout=aiohttp.ClientTimeout(total=None, sock_read=ANSWER_TIMEOUT_SECONDS),
            headers=self.gateway_headers,
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep one client's hub cookies for another request
            auto_decompress=False,
            read_bufsize=READ_BUFFER_BYTES,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    def failures(self) -> _FailureMap:
        """Around a request under way (an HTTP request, a websocket handshake), ``with``: the one map from what can
        go wrong after connecting (aiohttp's errors, a reset, a TLS alert, a deadline) to ProxyError, each with its
        sentence. What goes wrong while connecting is mapped in ``_connect``, naming the hop."""
        return self._failure_map

    def _failure(self, exc: BaseException) -> ProxyError | None:
        hub = self._settings.hub
        if isinstance(exc, aiohttp.SocketTimeoutError):  # connected and asked, but the hub went silent
            return ProxyError(504, "hub-timeout", f"The hub at {hub} accepted the request but sent no answer in "
                                                  "time: your server may be stuck or overloaded; try again, and "
                                                  "check it on the hub if this keeps happening.")
        if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):  # a connection or a call took too long
            return self._hub_connect_failure(TimeoutError())
        if isinstance(exc, (aiohttp.ClientResponseError, http_exceptions.HttpProcessingError)):  # a head not HTTP
            return hub_bad_answer(self._settings.hub, "something that is not a valid HTTP answer")
        if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ssl.SSLError,
                            ConnectionError)):
            cause = exc.__cause__ or exc
            if refuses_client(cause):  # with TLS 1.3, a missing client certificate is refused after the handshake
                return gateway_refused_certificate(self._settings, str(cause))
            return ProxyError(502, "hub-disconnected", f"The connection to the hub at {hub} broke "
                                                       f"({type(exc).__name__}): try again.")
        return None


class _FailureMap:
    """HubTransport.failures(): a plain class, not a generator-based context manager, as it wraps every request
    (issue 19: an async generator per request costs its creation, hooks and two weak-set updates)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: HubTransport) -> None:
        self._transport = transport

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        if exc is not None and isinstance(exc, Exception):
            mapped = self._transport._failure(exc)
            if mapped is not None:
                raise mapped from None


def gateway_refused_certificate(settings: Settings, detail: str) -> ProxyError:
    """The hub's address wants a client certificate, or did not accept the one sent."""
    which = (f"the certificate in {settings.client_cert} was not accepted" if settings.client_cert is not None
             else "none was sent; set JUPYTER_CLIENT_CERT (and JUPYTER_CLIENT_KEY) to the certificate your "
                  "hub's admins give out")
    return ProxyError(502, "gateway-refused", f"An access gateway in front of the hub at {settings.hub} refused "
                                              f"the connection, not the hub: it wants a client certificate, and "
                                              f"{which} ({detail[:120]}).")


class _HubConnector(aiohttp.BaseConnector):
    """aiohttp's connection pool, with every new connection made by ``HubTransport.open``."""

    def __init__(self, transport: HubTransport, **kwargs: float | int | None) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._transport = transport

    async def _create_connection(self, req: aiohttp.ClientRequest, traces: object,
                                 timeout: aiohttp.ClientTimeout) -> ResponseHandler:
        return await self._transport.open(self._factory)
