"""Every refusal and failure, as one exception type and one Jupyter-shaped JSON reply.

    ProxyError                     status + a sentence for the user + a short machine reason
      raised by  routing           (not HTTP/1.x, a method not relayed, a     505 / 405 / 400, connection
                                    header not UTF-8: checked first)          closed
                                   (path outside the user's server)           400 / 403 / 404
                                   (the hub redirected outside it: its login  403
                                    page, or an access gateway's)
                                   (a hub header the IDE cannot be sent, an   502
                                    access gateway's refusal)
                 auth              (a Host that is not the proxy's; no or     403
                                    wrong local token)
                 transport         (each hop to the hub: the company proxy,   502 / 504
                                    TLS, the hub; a request broken off)
      HubUnreachable               no connection could be made, nothing was   502 (tried again by
                                   sent                                       http_relay while the hub was
                                                                              reached moments ago)
                 ws_relay          (the hub refused the handshake)            its status, or 502
      HubLoginRequired             the hub sent the URL to its login page     403, or 401 when the hub
                                                                              refuses the proxy's token
      ServerNotRunning             the hub sent the URL to its placeholder:   424
                                   the server is stopped (answered by watch.ServerWatch: logged once,
                                   restarted if asked)
    app._IdeConnection             a request aiohttp cannot even parse        400, connection closed

Clients get ``{"message": ..., "reason": ...}`` — the shape jupyter_server uses, so IDEs show the message.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .address import HubAddress


class ProxyError(Exception):
    """A request the proxy will not or cannot complete; ``closes``: the connection must not carry another
    request (what follows on it cannot be trusted to start where the refused one ended); ``logged``: the log
    has said it already, where it happened (once, not at every request)."""

    def __init__(self, status: int, reason: str, message: str, closes: bool = False,
                 headers: Mapping[str, str] | None = None, logged: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.closes = closes
        self.headers = headers
        self.logged = logged


class HubUnreachable(ProxyError):
    """No connection to the hub could be made (refused, reset while connecting, timed out, a name not resolved):
    nothing of the request was sent, so trying it again is safe whatever its method."""


class HubRefusedRequest(ProxyError):
    """The hub (not a gateway) answered 401 or 403: its token may no longer be accepted, or the request is not
    allowed. The funnel asks the hub which; ``answer`` is the hub's own answer, passed on when the token is fine."""

    def __init__(self, answer: web.Response) -> None:
        super().__init__(answer.status, "hub-refused", "The hub refused the request.")
        self.answer = answer


class ServerNotRunning(ProxyError):
    """The user's server is stopped: the hub sent its URL to the hub's placeholder page (424 for the IDE,
    which then retries, as it does for jupyter_server's own "not running")."""

    def __init__(self, message: str, logged: bool = False) -> None:
        super().__init__(424, "server-not-running", message, logged=logged)


class HubLoginRequired(ProxyError):
    """The hub sent a request to its login page instead of accepting the token: the token is wrong, expired or
    revoked, or lacks a scope (the funnel asks the hub which, when the token is the proxy's own)."""

    def __init__(self, message: str) -> None:
        super().__init__(403, "hub-login-required", message)


def json_error(error: ProxyError) -> web.Response:
    response = web.json_response({"message": error.message, "reason": error.reason}, status=error.status,
                                 headers=error.headers)
    if error.closes:
        response.force_close()
    return response


def hub_bad_answer(hub: HubAddress, what: str) -> ProxyError:
    """The hub (or a gateway or ingress in front of it) answered with something the proxy cannot pass on."""
    return ProxyError(502, "hub-bad-answer", f"The hub at {hub} answered with {what}; the proxy "
                                             "did not pass it on. Something between you and your server (a "
                                             "gateway, an ingress) may be misbehaving: try again, or tell "
                                             "your hub's admins.")
