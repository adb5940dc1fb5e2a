"""The one HTTP client that talks to the hub: verified TLS, pooled connections, no surprises.

Built once per proxy and shared by every request, so connections are reused instead of re-handshaking TLS.
"""

from __future__ import annotations

import ssl

import aiohttp
import certifi
from multidict import CIMultiDictProxy

from .config import ConfigError, Settings

# configurable-http-proxy, in front of most hubs, drops idle keep-alive connections after 5 s. A pooled
# connection must be retired well before that, or a request can be written into a socket the hub is
# closing (a "server disconnected" that would surface to the IDE as a failed save).
IDLE_CONNECTION_SECONDS = 3.0

# Connecting (TCP + TLS) must be quick; an answer may take as long as the server needs (a kernel start,
# a large save), and a websocket may stay idle for hours.
CONNECT_TIMEOUT_SECONDS = 15.0

# Larger reads than aiohttp's 64 KiB default halve the per-chunk overhead of large downloads, at a fixed
# memory cost per open response.
READ_BUFFER_BYTES = 256 * 1024


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


class RedirectRefused(Exception):
    """The hub answered a websocket handshake with a redirect; the proxy never follows one."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        super().__init__(f"redirect {status}")
        self.status = status
        self.headers = headers


async def _refuse_redirect(session: aiohttp.ClientSession, context: object,
                           params: aiohttp.TraceRequestRedirectParams) -> None:
    params.response.release()
    raise RedirectRefused(params.response.status, params.response.headers)


def open_hub_session(settings: Settings, websockets: bool = False) -> aiohttp.ClientSession:
    """A client session for the hub; the caller closes it.

    ``ws_connect`` always follows redirects, token attached; a session for websockets therefore refuses
    them through a trace hook. HTTP requests are sent with ``allow_redirects=False`` and skip the hook's
    per-chunk cost.
    """
    trace_configs = None
    if websockets:
        trace = aiohttp.TraceConfig()
        trace.on_request_redirect.append(_refuse_redirect)
        trace_configs = [trace]
    connector = aiohttp.TCPConnector(
        ssl=tls_context_for(settings) if settings.hub_url.scheme == "https" else False,
        keepalive_timeout=IDLE_CONNECTION_SECONDS,
        limit=0,  # every open websocket holds a connection; a cap would stall the next one
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS),
        cookie_jar=aiohttp.DummyCookieJar(),  # never keep one client's hub cookies for another request
        auto_decompress=False,
        read_bufsize=READ_BUFFER_BYTES,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        trace_configs=trace_configs,
    )
