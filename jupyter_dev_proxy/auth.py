"""Who may use the proxy: only a client that names the proxy as its host and presents the proxy's token.

The token is accepted where Jupyter clients put it: ``?token=`` (node's ``ws`` and PyCharm on websocket
handshakes) or ``Authorization: token ...`` (``@jupyterlab/services``). A browser that first visits with the
proxy's token in ``?token=`` gets a cookie that stands for it: a random session value of this run, never a token,
as a browser sends a host's cookies to every port of it (RFC 6265 §8.5), that is to every other local service; and
no cookie at all when the IDE's token is the hub's (it would be the hub token). The server's pages are given a
stand-in for the proxy's token in the hub token's place (token_swap.page_token), accepted as the proxy's own.
A request from a web page (it carries ``Origin``) must come from the proxy's own origin or one allowed with
JUPYTER_PROXY_ALLOW_ORIGIN, and a cookie-only one from the proxy's own origin: the browser sends a cookie on its
own, and otherwise any web page could drive the user's hub account through the proxy.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
from http.cookies import SimpleCookie

from aiohttp import web
from yarl import URL

from .config import Settings
from .errors import ProxyError
from .token_swap import page_token

COOKIE_NAME = "jupyter-dev-proxy-session"


def _header_token(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer") and token.strip():
        return token.strip()
    return None


def _query_token(request: web.BaseRequest) -> str | None:
    """``?token=``, without parsing a query that cannot hold it (an IDE's cache-buster, ``?1701234567890``):
    the name would be there as it is, or percent-encoded."""
    query = request.query_string
    if "token" not in query and "%" not in query:
        return None
    return request.query.get("token")


def _same_origin(request: web.BaseRequest) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        return URL(origin).raw_authority == request.host
    except (ValueError, TypeError, UnicodeError):  # not even a URL: certainly not the proxy's own page
        return False


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` → ``::1``, ``localhost:8000`` → ``localhost``."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name if rest == "" or (rest[:1] == ":" and rest[1:].isdigit()) else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


@functools.lru_cache(maxsize=256)  # the same one or two Host values at every request; a flood of others only evicts
def _names_the_proxy(host: str, settings: Settings) -> bool:
    name = _host_name(host).lower()
    if name in settings.allowed_hosts:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_host(request: web.BaseRequest, settings: Settings) -> None:
    """Refuse a request whose Host is not a name the proxy is reached by: a web page whose name was made to
    resolve to 127.0.0.1 (DNS rebinding) would otherwise use the proxy, and through it the hub token, as if it
    were a local client. jupyter_server refuses such requests itself, but not those authenticated with a token,
    as all the proxy's are."""
    host = request.headers.get("Host", "")
    if not _names_the_proxy(host, settings):
        raise ProxyError(403, "host-not-allowed", f"The request named the host {ascii(host[:80])}, which is not "
                                                  "this proxy's address (localhost): if you reach the proxy under "
                                                  "another name, add it to JUPYTER_PROXY_ALLOWED_HOSTS.")


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


def _equal(presented: str, expected: str) -> bool:
    """In constant time, so that the time taken tells nothing of how much of it was right."""
    return hmac.compare_digest(_as_bytes(presented), _as_bytes(expected))


def _presented(request: web.BaseRequest, settings: Settings) -> str:
    """The token the client presents, where Jupyter clients put one, or the proxy's token for this run's browser
    session cookie; ProxyError(403) when there is none, it comes only in the cookie from another web site, or the
    cookie is not this run's (never accepted when the IDE's token is the hub's: none is set then)."""
    presented = _query_token(request) or _header_token(request)
    if presented:
        return presented
    session = request.cookies.get(COOKIE_NAME)
    if session and not _same_origin(request):
        raise ProxyError(403, "cross-origin", "A request from another web site was refused: open the "
                                              "proxy's URL with ?token= directly.")
    if not session or settings.forwards_ide_token:
        raise ProxyError(403, "token-required", "This proxy needs its token: use the URL with ?token= that "
                                                "the proxy printed when it started.")
    if not _equal(session, settings.browser_session):
        raise _token_wrong()
    return settings.local_token


def _check_origin(request: web.BaseRequest, settings: Settings) -> None:
    """A request from a web page is accepted from the proxy's own origin or an allowed one only, whatever carries
    its token: a page that knows the token could otherwise send a "simple" request (a POST of text/plain needs no
    preflight) or open a websocket, and drive the user's server. Browsers send Origin on every cross-origin
    request and on same-origin ones that are not GET; IDEs send none."""
    origin = _origin_of(request)
    if origin is None or _same_origin(request) or (settings.cors is not None and settings.cors.allows(origin)):
        return
    raise ProxyError(403, "cross-origin", f"A request from the web page at {ascii(origin[:80])} was refused: add "
                                          "its origin to JUPYTER_PROXY_ALLOW_ORIGIN if it is yours.")


def check_proxy_token(request: web.BaseRequest, settings: Settings, hub_token: str | None = None) -> None:
    """The proxy's own token, or the stand-in for it the server's pages were given in place of ``hub_token``
    (token_swap.page_token), and no other, is presented from a page allowed to (its status page wants it even when
    the IDE's token is what the hub gets)."""
    _check_origin(request, settings)
    presented = _presented(request, settings)
    if _equal(presented, settings.local_token):
        return
    if hub_token is None or not _equal(presented, page_token(settings.local_token, hub_token,
                                                             settings.profile)):
        raise _token_wrong()


def hub_token_for(request: web.BaseRequest, settings: Settings, hub_token: str | None) -> str:
    """The hub credential to use for this request — ``hub_token``, the one in use now, or without one the IDE's
    own — or ProxyError(403) if the client is not allowed.

    Total: whatever bytes the client sent, in whichever position, the answer is a credential or a 403.
    """
    if hub_token is None:
        _check_origin(request, settings)
        presented = _presented(request, settings)
        if not _FORWARDABLE_TOKEN.fullmatch(presented):
            raise _token_wrong()
        return presented
    check_proxy_token(request, settings, hub_token)
    return hub_token


def cookie_to_remember(request: web.BaseRequest, settings: Settings) -> str | None:
    """The Set-Cookie value that lets a browser which arrived with the proxy's token in ?token= (checked before)
    keep using the proxy without it: this run's session value, never the token; None when the IDE's token is the
    hub's, and when there is nothing new to remember. The relays add it to successful answers."""
    if settings.forwards_ide_token or not _query_token(request):
        return None
    if _equal(request.cookies.get(COOKIE_NAME, ""), settings.browser_session):
        return None
    cookie: SimpleCookie = SimpleCookie()
    cookie[COOKIE_NAME] = settings.browser_session
    cookie[COOKIE_NAME].update({"path": "/", "httponly": "yes", "samesite": "Strict"})
    return cookie[COOKIE_NAME].OutputString()


def _origin_of(request: web.BaseRequest) -> str | None:
    origin = request.headers.get("Origin")
    return origin.rstrip("/").lower() if origin else None


def is_preflight(request: web.BaseRequest) -> bool:
    """A browser asking whether a cross-origin request may be sent (it carries no credentials)."""
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


def preflight_answer(request: web.BaseRequest, settings: Settings) -> web.Response:
    """The proxy's own answer to a preflight: the allowed methods and headers for an allowed origin, else 403."""
    origin = _origin_of(request) or ""
    cors = settings.cors
    if cors is None or not cors.allows(origin):
        raise ProxyError(403, "cross-origin", f"Web pages from {ascii(origin[:80])} may not use this proxy: add the "
                                              "origin to JUPYTER_PROXY_ALLOW_ORIGIN if it is yours.")
    return web.Response(status=204, headers={**dict(cors_headers(request, settings)),
                                             "Access-Control-Allow-Methods": cors.methods,
                                             "Access-Control-Allow-Headers": cors.headers,
                                             "Access-Control-Max-Age": "600"})


def cors_headers(request: web.BaseRequest, settings: Settings) -> list[tuple[str, str]]:
    """What an answer to an allowed other origin carries so that its page may read it; nothing otherwise."""
    origin = _origin_of(request)
    cors = settings.cors
    if cors is None or origin is None or not cors.allows(origin):
        return []
    headers = [("Access-Control-Allow-Origin", request.headers["Origin"] if cors.credentials or "*" not in
                cors.origins else "*"), ("Vary", "Origin")]
    if cors.credentials:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    return headers
