"""Every refusal and failure, as one exception type and one Jupyter-shaped JSON reply.

    ProxyError                     status + a sentence for the user + a short machine reason
      raised by  routing           (not HTTP/1.x, a method not relayed, a     505 / 405 / 400, connection
                                    header not UTF-8: checked first)          closed
                                   (path outside the user's server)           400 / 403 / 404
      HubPage                      a page or the API of the hub itself        404; a browser navigating
                                                                              there gets a page with the
                                                                              link to it on the hub
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

import html
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


class HubPage(ProxyError):
    """A page or the API of the hub itself (its control panel, log out, sharing, the token page): the proxy reaches
    only the user's server, so it never serves them; ``hub_url`` is the page on the hub, for a browser's user."""

    def __init__(self, hub: HubAddress, page: str) -> None:
        super().__init__(404, "outside-your-server", "The hub's own pages and API are not served through this "
                                                     f"proxy: it only reaches your server at {hub.server_prefix}.")
        self.hub_url = hub.page(page)


_HUB_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>A page of your hub</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}code{{font-size:90%}}</style>
</head><body>
<h1>This is a page of your hub</h1>
<p>This link leads to your JupyterHub's own page (its control panel, log out, sharing or tokens), not to your
server. jupyter-dev-proxy reaches only your server, so it does not open the hub's pages.</p>
<p>Open it on the hub: <a href="{url}" rel="noreferrer">{url}</a></p>
</body></html>
"""


def hub_page_answer(error: HubPage) -> web.Response:
    """The page a browser gets for a link into the hub (JupyterLab's File → Hub Control Panel, Log Out)."""
    return web.Response(status=error.status, text=_HUB_PAGE.format(url=html.escape(error.hub_url)),
                        content_type="text/html", headers={
                            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


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
