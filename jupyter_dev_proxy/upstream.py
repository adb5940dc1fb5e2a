"""The one HTTP client that talks to the hub: verified TLS, pooled connections, no surprises.

Built once per proxy and shared by every request, so connections are reused instead of re-handshaking TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import certifi

from .config import ConfigError, Settings
from .errors import connect_failure

# configurable-http-proxy, in front of most hubs, drops idle keep-alive connections after 5 s. A pooled
# connection must be retired well before that, or a request can be written into a socket the hub is
# closing (a "server disconnected" that would surface to the IDE as a failed save).
IDLE_CONNECTION_SECONDS = 3.0

# Connecting (TCP + TLS) must be quick.
CONNECT_TIMEOUT_SECONDS = 15.0

# Once a request is sent, the hub may stay silent this long before the proxy gives up with a 504: the head
# of an HTTP answer, each stretch of its body, the answer to a websocket handshake. jupyter_server answers a
# kernel start or a kernel channel only once the kernel replies (its kernel_info_timeout is 60 s), and a large
# save only once the file is written; twice that covers a busy node. A body that keeps flowing and an open
# websocket have no limit.
ANSWER_TIMEOUT_SECONDS = 120.0

# Larger reads than aiohttp's 64 KiB default halve the per-chunk overhead of large downloads, at a fixed
# memory cost per open response.
READ_BUFFER_BYTES = 256 * 1024

_P = TypeVar("_P", bound=asyncio.Protocol)


def tls_context_for(settings: Settings) -> ssl.SSLContext:
    """Trust the public CAs (certifi) plus the cluster CA file, if one is set."""
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"The CA file {settings.ca_file} is not a PEM certificate ({exc}): set "
                              "JUPYTER_CLUSTER_CA_CERT to the CA certificate your cluster admin gave you.") from None
    return context


def hub_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the hub; None when the hub is plain HTTP."""
    return tls_context_for(settings) if settings.hub_url.scheme == "https" else None


def open_hub_session(settings: Settings, tls: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """The client session for HTTP requests to the hub (``tls`` from ``hub_tls_context``); the caller closes it."""
    connector = aiohttp.TCPConnector(
        ssl=tls if tls is not None else False,
        keepalive_timeout=IDLE_CONNECTION_SECONDS,
        limit=0,  # never queue a request behind others for a connection
        # The system resolver, as the websocket connections use: aiohttp would switch to c-ares whenever aiodns
        # happens to be installed, and c-ares skips the system's name services (VPN clients, /etc/nsswitch).
        resolver=aiohttp.ThreadedResolver(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS,
                                      sock_read=ANSWER_TIMEOUT_SECONDS),
        cookie_jar=aiohttp.DummyCookieJar(),  # never keep one client's hub cookies for another request
        auto_decompress=False,
        read_bufsize=READ_BUFFER_BYTES,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
    )


async def open_hub_connection(settings: Settings, tls: ssl.SSLContext | None,
                              protocol: Callable[[], _P]) -> _P:
    """A raw TCP (+ verified TLS) connection to the hub, for a websocket; failures become ProxyError."""
    hub = settings.hub_url
    assert hub.raw_host is not None and hub.port is not None  # config accepts only http(s)://host URLs
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            _, connected = await loop.create_connection(
                protocol, hub.raw_host, hub.port, ssl=tls,
                server_hostname=settings.tls_name if tls is not None else None)
    except (OSError, TimeoutError) as exc:
        raise connect_failure(exc, settings) from None
    return connected
