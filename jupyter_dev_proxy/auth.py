"""Who may use the proxy: only a client that presents the proxy's token.

The token is accepted where Jupyter clients put it: ``?token=`` (node's ``ws`` and PyCharm on websocket
handshakes), ``Authorization: token ...`` (``@jupyterlab/services``), or a cookie set when a browser first
visits with ``?token=``. A cookie is sent by the browser on its own, so a cookie-only request must also come
from the proxy's own origin: otherwise any web page could drive the user's hub account through it.
"""

from __future__ import annotations

import hmac
import re
from http.cookies import SimpleCookie

from aiohttp import web
from yarl import URL

from .config import Settings
from .errors import ProxyError

COOKIE_NAME = "jupyter-dev-proxy-token"


def _header_token(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer") and token.strip():
        return token.strip()
    return None


def _same_origin(request: web.BaseRequest) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        return URL(origin).raw_authority == request.host
    except (ValueError, TypeError, UnicodeError):  # not even a URL: certainly not the proxy's own page
        return False


def _token_wrong() -> ProxyError:
    return ProxyError(403, "token-wrong", "The token does not match this proxy's: use the URL with ?token= that "
                                          "the proxy printed when it started (it changes at every start unless "
                                          "JUPYTER_PROXY_TOKEN is set).")

# A token the IDE may forward to the hub as its credential: printable ASCII, nothing that could end or split
# the Authorization header it is put in.
_FORWARDABLE_TOKEN = re.compile(r"[\x21-\x7e]+")


def _as_bytes(text: str) -> bytes:
    """Any str as bytes, without error: aiohttp decodes raw header bytes with surrogate escapes, and a percent-
    escape in the query may decode to a lone surrogate."""
    return text.encode("utf-8", "surrogatepass")


def hub_token_for(request: web.BaseRequest, settings: Settings) -> str:
    """The hub credential to use for this request, or ProxyError(403) if the client is not allowed.

    Total: whatever bytes the client sent, in whichever position, the answer is a credential or a 403.
    """
    presented = request.query.get("token") or _header_token(request)
    if presented is None:
        presented = request.cookies.get(COOKIE_NAME)
        if presented is not None and not _same_origin(request):
            raise ProxyError(403, "cross-origin", "A request from another web site was refused: open the "
                                                  "proxy's URL with ?token= directly.")
    if not presented:
        raise ProxyError(403, "token-required", "This proxy needs its token: use the URL with ?token= that "
                                                "the proxy printed when it started.")
    if settings.hub_token is None:
        if not _FORWARDABLE_TOKEN.fullmatch(presented):
            raise _token_wrong()
        return presented
    if not hmac.compare_digest(_as_bytes(presented), _as_bytes(settings.local_token)):
        raise _token_wrong()
    return settings.hub_token


def cookie_to_remember(request: web.BaseRequest) -> str | None:
    """The Set-Cookie value that lets a browser which arrived with ?token= keep using the proxy without it;
    None when there is nothing new to remember. The relays add it to successful answers."""
    token = request.query.get("token")
    if not token or request.cookies.get(COOKIE_NAME) == token:
        return None
    cookie: SimpleCookie = SimpleCookie()
    cookie[COOKIE_NAME] = token
    cookie[COOKIE_NAME].update({"path": "/", "httponly": "yes", "samesite": "Strict"})
    return cookie[COOKIE_NAME].OutputString()
