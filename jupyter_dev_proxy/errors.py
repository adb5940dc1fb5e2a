"""Every refusal and failure, as one exception type and one Jupyter-shaped JSON reply.

    ProxyError                     status + a sentence for the user + a short machine reason
      raised by  routing           (not HTTP/1.x, a method not relayed, a     505 / 405 / 400, connection
                                    header not UTF-8: checked first)          closed
                                   (path outside the user's server)           400 / 403 / 404
                                   (the hub redirected outside it: stopped    424
                                    server, or its login page)                403
                                   (a hub header the IDE cannot be sent)      502
                 auth              (no or wrong local token)                  403
                 ws_relay          (the hub refused the handshake)            its status, or 502
                 upstream_failure  (aiohttp's client errors, mapped here)     502 / 504
                 connect_failure   (a websocket's own connection, mapped here) 502 / 504
      answered by  hub.ServerWatch (a stopped server: logged once, restarted if asked)  424
    app._IdeConnection             a request aiohttp cannot even parse        400, connection closed

Clients get ``{"message": ..., "reason": ...}`` — the shape jupyter_server uses, so IDEs show the message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from .config import Settings

# OpenSSL's verify code for "certificate is valid, but not for this name".
_X509_V_ERR_HOSTNAME_MISMATCH = 62


class ProxyError(Exception):
    """A request the proxy will not or cannot complete; ``closes``: the connection must not carry another
    request (what follows on it cannot be trusted to start where the refused one ended)."""

    def __init__(self, status: int, reason: str, message: str, closes: bool = False,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.closes = closes
        self.headers = headers


def json_error(error: ProxyError) -> web.Response:
    response = web.json_response({"message": error.message, "reason": error.reason}, status=error.status,
                                 headers=error.headers)
    if error.closes:
        response.force_close()
    return response


def is_name_mismatch(cause: BaseException) -> bool:
    """The certificate is trusted but issued to another name (JUPYTER_SERVER_NAME is wrong, not the CA)."""
    return getattr(cause, "verify_code", None) == _X509_V_ERR_HOSTNAME_MISMATCH


def _tls_failure(cause: BaseException, settings: Settings) -> ProxyError:
    detail = getattr(cause, "verify_message", None) or str(cause)
    if is_name_mismatch(cause):
        advice = (f"its certificate is not issued to '{settings.tls_name}': set JUPYTER_SERVER_NAME "
                  "to the name on the hub's certificate")
    elif settings.ca_file is None:
        advice = (f"its certificate was refused ({detail}); if your cluster has its own CA, set "
                  "JUPYTER_CLUSTER_CA_CERT to its CA file")
    else:
        advice = (f"it is not signed by the CA in {settings.ca_file} ({detail}): check "
                  "JUPYTER_CLUSTER_CA_CERT")
    return ProxyError(502, "tls-verification-failed",
                      f"The hub at {settings.hub_url} could not be trusted: {advice}.")


def _hub_unknown(settings: Settings) -> ProxyError:
    return ProxyError(502, "hub-unknown", f"The hub's name {settings.hub_url.host} could not be resolved: check "
                                          "the hub address and your network or VPN.")


def _hub_timeout(settings: Settings) -> ProxyError:
    return ProxyError(504, "hub-timeout", f"The hub at {settings.hub_url} did not answer in time: it may be "
                                          "overloaded, or your network or VPN may be down.")


def hub_bad_answer(settings: Settings, what: str) -> ProxyError:
    """The hub (or a gateway or ingress in front of it) answered with something the proxy cannot pass on."""
    return ProxyError(502, "hub-bad-answer", f"The hub at {settings.hub_url} answered with {what}; the proxy "
                                             "did not pass it on. Something between you and your server (a "
                                             "gateway, an ingress) may be misbehaving: try again, or tell "
                                             "your hub's admins.")


def connect_failure(exc: OSError | TimeoutError, settings: Settings) -> ProxyError:
    """Map a failure to connect to the hub to a ProxyError: the websocket relay's own, or the one aiohttp
    wraps for HTTP requests (``upstream_failure``)."""
    hub = settings.hub_url
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _tls_failure(exc, settings)
    if isinstance(exc, ssl.SSLError):
        return ProxyError(502, "tls-failed", f"The TLS handshake with the hub at {hub} failed ({exc}): "
                                             "check that JUPYTER_SERVER_PORT is the hub's HTTPS port.")
    if isinstance(exc, socket.gaierror):
        return _hub_unknown(settings)
    if isinstance(exc, TimeoutError):
        return _hub_timeout(settings)
    return ProxyError(502, "hub-unreachable", f"The hub at {hub} could not be reached ({exc.strerror or exc}): "
                                              "check the hub address and your network or VPN.")


def upstream_failure(exc: BaseException, settings: Settings) -> ProxyError | None:
    """Map aiohttp's failure talking to the hub to a ProxyError; None when it is not one (a bug)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _tls_failure(exc.certificate_error, settings)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):  # whatever the resolver raised
        return _hub_unknown(settings)
    if isinstance(exc, aiohttp.ClientConnectorError):  # aiohttp's wrapper around the connection's own error
        return connect_failure(exc.os_error, settings)
    if isinstance(exc, aiohttp.SocketTimeoutError):  # connected and asked, but the hub went silent
        return ProxyError(504, "hub-timeout", f"The hub at {settings.hub_url} accepted the request but sent no "
                                              "answer in time: your server may be stuck or overloaded; try "
                                              "again, and check it on the hub if this keeps happening.")
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return _hub_timeout(settings)
    if isinstance(exc, aiohttp.ClientResponseError):  # raised while reading the answer's head
        return hub_bad_answer(settings, "something that is not a valid HTTP answer")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ssl.SSLError)):
        return ProxyError(502, "hub-disconnected", f"The connection to the hub at {settings.hub_url} broke "
                                                   f"({type(exc).__name__}): try again.")
    return None
