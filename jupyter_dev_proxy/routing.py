"""Pure rewriting between the IDE's view (a server at /) and the hub's (a server at /user/<name>/).

Nothing here does I/O: each function maps request or response parts to new parts, so every rule can be
tested exhaustively. The relays apply the results and never re-derive them.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from urllib.parse import unquote

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from yarl import URL

from .address import HubAddress
from .auth import COOKIE_NAME
from .config import ForwardedPort, Settings
from .errors import HubLoginRequired, HubPage, ProxyError, ServerNotRunning, hub_bad_answer
from .token_swap import UNDOABLE_CODINGS, TokenSwap

# A path is decoded this many times when looking for traversal: enough to unwrap double and triple
# encodings (%252e%252e) that a chain of servers might each decode once.
_DECODE_ROUNDS = 3

# Hop-by-hop headers describe one connection, not the message (RFC 9110 §7.6.1), so they never cross the
# proxy. Upgrade stays out too: the websocket relay makes its own handshakes.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade",
})

# Request headers the hub must not see: the client's own credentials (the proxy injects the hub token),
# its Origin and Referer (they name localhost, and a Referer can carry the local ?token=), Host (set from
# the hub URL), and Expect (the proxy answers 100-continue itself, see http_relay).
_DROPPED_REQUEST_HEADERS = frozenset({"authorization", "cookie", "origin", "referer", "host", "expect"})

# The websocket handshake headers that the relay writes itself, and a body's length: a handshake has no
# body, and a hub told to expect one would wait for it.
_WEBSOCKET_HANDSHAKE_HEADERS = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
    "content-length",
})

# The methods a Jupyter server answers. Anything else (CONNECT, TRACE, WebDAV...) never reaches the hub.
RELAYED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_HTTP_1 = ((1, 0), (1, 1))

# A header the IDE can be sent: a token for a name (RFC 9110 §5.1), and a value without control characters
# (§5.5: CR, LF and NUL are forbidden, other controls make aiohttp refuse to write it) nor bytes that are not
# UTF-8 (aiohttp would silently drop them when writing).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNWRITABLE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# Header values are checked joined by a space, which a value may hold: one search per message instead of one per
# header (no form of a token holds a space, so the swap looks into the joined values at once too).
_VALUE_SEPARATOR = " "
# Names joined by ":", which no name may hold, are checked in one match too.
_HEADER_NAMES = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?::[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")


def _unwritable(values: str) -> bool:
    """Whether ``values`` hold a character no header value may (a control character, a lone surrogate). Nearly
    always they are printable text, which str.isprintable() tells at C speed; the search looks only at the rest."""
    return not values.isprintable() and _UNWRITABLE_VALUE.search(values) is not None

_COOKIE_PATH = re.compile(r";\s*path=([^;]*)", re.IGNORECASE)
_COOKIE_DOMAIN = re.compile(r";\s*domain=[^;]*", re.IGNORECASE)


def _refuse(message: str, status: int = 404, reason: str = "outside-your-server") -> ProxyError:
    return ProxyError(status, reason, message)


def _check_confined(raw_path: str) -> None:
    """Refuse any path that could leave the directory it names, however it is encoded."""
    form = raw_path
    for _ in range(_DECODE_ROUNDS + 1):
        if "\\" in form or any(ord(c) < 0x20 or ord(c) == 0x7F for c in form):
            raise _refuse("The path contains a backslash or a control character; the proxy does not "
                          "forward such paths.", 400, "bad-path")
        if "%2f" in form.lower():
            raise _refuse("The path contains an encoded slash (%2F); the proxy does not forward such paths.",
                          400, "bad-path")
        segments = form.split("/")[1:]
        if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
            raise _refuse("The path contains '.', '..' or '//' segments; the proxy only forwards plain "
                          "paths inside your server.", 400, "bad-path")
        try:
            decoded = unquote(form, errors="strict")
        except UnicodeDecodeError:
            raise _refuse("The path contains a percent-escape that is not UTF-8; the proxy does not forward it.",
                          400, "bad-path") from None
        if decoded == form:
            return
        form = decoded
    raise _refuse("The path is encoded too many times; the proxy does not forward it.", 400, "bad-path")


def check_request_head(method: str, version: tuple[int, int], headers: MultiMapping[str]) -> None:
    """Refuse, before anything else is looked at, a request that is not HTTP/1.0 or 1.1, whose method the
    proxy does not relay, or whose body framing is faulty. The connection is closed: aiohttp would take an
    HTTP/0.9 line (no version) or ``HTTP/2.0`` as a request, after a CONNECT a client may already be sending
    another protocol, and after faulty framing the next request's start is unknown."""
    if version not in _HTTP_1:
        raise ProxyError(505, "http-version-not-supported", "The proxy speaks HTTP/1.1 (and 1.0) only; the "
                                                            "request was not forwarded.", closes=True)
    if method not in RELAYED_METHODS:
        raise ProxyError(405, "method-not-allowed", f"The proxy does not relay {method} requests (it is not a "
                                                    "forward proxy); the request was not forwarded.", closes=True,
                         headers={"Allow": ", ".join(sorted(RELAYED_METHODS))})
    if version == (1, 0) and "Transfer-Encoding" in headers:  # RFC 9112 §6.1: framing is faulty
        raise ProxyError(400, "bad-request", "The request is not valid HTTP/1.1 (an HTTP/1.0 request with "
                                             "Transfer-Encoding); the proxy did not forward it.", closes=True)
    if _unwritable(_VALUE_SEPARATOR.join(headers.values())):  # at once; which one, only if one is
        name = next(name for name, value in headers.items() if _UNWRITABLE_VALUE.search(value))
        raise ProxyError(400, "bad-request", f"The request's header {ascii(name[:60])} is not UTF-8 text; "
                                             "the proxy did not forward it.", closes=True)


def _relative_to_base(hub: HubAddress, raw_path: str) -> str:
    """The raw path seen from the hub's base when it starts with it (an absolute URL the server handed out,
    ``/jupyter/user/alice/kernelspecs/...``), else as it is (the IDE's own view of a server at /)."""
    if hub.base == "/":
        return raw_path
    depth = hub.base.count("/") - 1
    parts = raw_path.split("/", depth + 1)
    if unquote("/".join(parts[:depth + 1]) + "/") == unquote(hub.base):
        return "/" + (parts[depth + 1] if len(parts) > depth + 1 else "")
    return raw_path


@functools.lru_cache(maxsize=512)  # an IDE asks for the same few paths again and again; refusals are not kept
def upstream_path_for(settings: Settings, raw_path: str) -> str:
    """Map the IDE's raw path to the raw path on the hub, or raise ProxyError if it would leave the server.

    ``/api/kernels`` → ``/user/alice/api/kernels``; ``/user/alice/kernelspecs/x/logo.png`` (an absolute
    URL the server handed out, with the hub's base if it has one) is sent once, unprefixed; ``/hub/...`` and
    ``/user/bob/...`` never leave, with or without the base.
    """
    if not raw_path.startswith("/"):
        raise _refuse("Only paths starting with / are served.", 400, "bad-path")
    _check_confined(raw_path)
    hub = settings.hub
    relative = _relative_to_base(hub, raw_path)
    first, _, _ = unquote(relative[1:]).partition("/")
    if first == "hub":
        raise HubPage(hub, relative[len("/hub/"):] if relative.startswith("/hub/") else "")
    if first == "user":
        own = hub.server_prefix[len(hub.base) - 1:]  # /user/alice/[dev/], as seen from the base
        if not unquote(relative + "/").startswith(unquote(own)):
            raise _refuse(f"This proxy only reaches your own server at {hub.server_prefix}.", 403)
        # Sent with the canonical prefix: /user/al%69ce/x must not slip past a hub proxy's route table.
        depth = own.count("/") - 1
        after_prefix = relative.split("/", depth + 1)[depth + 1:]
        return hub.server_prefix + (after_prefix[0] if after_prefix else "")
    return hub.server_prefix + raw_path[1:]


@dataclasses.dataclass(frozen=True)
class Route:
    """What the paths of one listening port stand for on the hub: the user's server (the proxy's port), or a web app
    on a port of the server, through its jupyter-server-proxy (a forwarded port)."""

    prefix: str  # the hub path that the port's / stands for
    app: ForwardedPort | None = None  # None: the user's server itself

    @classmethod
    def to_server(cls, settings: Settings) -> Route:
        return cls(settings.hub.server_prefix)

    @classmethod
    def to_app(cls, settings: Settings, app: ForwardedPort) -> Route:
        """``/`` is ``<server>/proxy/<port>/`` (jupyter-server-proxy removes that prefix before the app sees the
        path), or ``<server>/proxy/absolute/<port>/`` for an app that knows its whole path."""
        kind = "absolute/" if app.absolute else ""
        return cls(f"{settings.hub.server_prefix}proxy/{kind}{app.remote}/", app)


@functools.lru_cache(maxsize=512)
def app_path_for(route: Route, raw_path: str) -> str:
    """Map a path on a forwarded port to the app's path on the hub: everything stays in the app, and for an app that
    knows its whole path, a link it made with that path (``/user/alice/proxy/absolute/5000/x``) is taken as it is."""
    if not raw_path.startswith("/"):
        raise _refuse("Only paths starting with / are served.", 400, "bad-path")
    _check_confined(raw_path)
    assert route.app is not None
    if route.app.absolute and unquote(raw_path + "/").startswith(unquote(route.prefix)):
        depth = route.prefix.count("/") - 1
        after_prefix = raw_path.split("/", depth + 1)[depth + 1:]
        return route.prefix + (after_prefix[0] if after_prefix else "")
    return route.prefix + raw_path[1:]


def upstream_target_for(settings: Settings, raw_path_qs: str, route: Route | None = None) -> str:
    """The raw path and query on the hub for a request's (what an HTTP request line names): the user's server prefix
    (or a forwarded app's) added, the proxy's token removed."""
    raw_path, _, raw_query = raw_path_qs.partition("?")
    if route is None or route.app is None:
        path = upstream_path_for(settings, raw_path)
    else:
        path = app_path_for(route, raw_path)
    query = query_without_token(raw_query)
    return f"{path}?{query}" if query else path


def upstream_url_for(settings: Settings, raw_path_qs: str, route: Route | None = None) -> URL:
    """The hub URL for a request's raw path and query (upstream_target_for on the hub's origin)."""
    return hub_url(settings, upstream_target_for(settings, raw_path_qs, route))


def hub_url(settings: Settings, target: str) -> URL:
    """The hub URL of a raw path and query on it, byte for byte."""
    path, _, query = target.partition("?")
    return settings.hub.url(path, query)


def loggable(method: str, raw_path: str) -> str:
    """The request as a log line may show it: the raw path (no CR/LF can hide in it), never the query,
    which may hold the proxy's token."""
    return f"{method} {raw_path.partition('?')[0]}"


def query_without_token(raw_query: str) -> str:
    """Drop the proxy's own ``token`` parameter; every other byte of the query is kept as sent."""
    if "token" not in raw_query and "%" not in raw_query:  # nothing named token, as it is or encoded
        return raw_query
    kept = [p for p in raw_query.split("&") if unquote(p.partition("=")[0]) != "token"]
    return "&".join(kept)


def _forwardable(headers: MultiMapping[str], dropped: frozenset[str]) -> list[tuple[str, str]]:
    """The headers whose lowercase name is not in ``dropped`` (the hop-by-hop ones among them) nor named by
    Connection."""
    if "Connection" in headers:
        dropped = _also_named(dropped, ",".join(headers.getall("Connection")))
    return [(name, value) for name, value in headers.items() if name.lower() not in dropped]


@functools.lru_cache(maxsize=32)  # a client sends the same Connection value every time ("keep-alive")
def _also_named(dropped: frozenset[str], connection: str) -> frozenset[str]:
    return dropped | {name.strip().lower() for name in connection.split(",")}


@functools.lru_cache(maxsize=8)  # decided once per kind of request and gateway settings, not at every request
def _dropped_request_headers(websocket: bool, gateway_headers: tuple[tuple[str, str], ...]) -> frozenset[str]:
    return (_HOP_BY_HOP | _DROPPED_REQUEST_HEADERS | (_WEBSOCKET_HANDSHAKE_HEADERS if websocket else frozenset())
            | {name.lower() for name, _ in gateway_headers})


_ASKABLE_CODINGS = UNDOABLE_CODINGS | {"identity"}


@functools.lru_cache(maxsize=32)  # a client sends the same Accept-Encoding every time
def _undoable_encodings(value: str) -> str:
    """The client's Accept-Encoding (its values joined), keeping only the codings the proxy can undo to look into a
    text answer for the hub token (token_swap): ``gzip, deflate, br, zstd`` → ``gzip, deflate``; ``identity`` when
    none is left."""
    kept = [part.strip() for part in value.split(",") if part.partition(";")[0].strip().lower() in _ASKABLE_CODINGS]
    return ", ".join(kept) or "identity"


def hub_authorization(token: str) -> str:
    """The ``Authorization`` value that carries a hub token, the one way JupyterHub and jupyter_server read it."""
    return f"token {token}"


def upstream_request_headers(headers: CIMultiDictProxy[str], hub_token: str, websocket: bool = False,
                             gateway_headers: tuple[tuple[str, str], ...] = (),
                             to_app: bool = False) -> CIMultiDict[str]:
    """The client's headers as the hub should see them: its credentials replaced by the hub token, and an
    access gateway's headers (which the client cannot override) added. For a web app (``to_app``), the browser's
    cookies go on to it, as the app set them for itself, all but the proxy's own."""
    out = CIMultiDict(_forwardable(headers, _dropped_request_headers(websocket, gateway_headers)))
    if to_app:
        kept = [cookie.strip() for value in headers.getall("Cookie", ()) for cookie in value.split(";")
                if cookie.strip() and cookie.partition("=")[0].strip() != COOKIE_NAME]
        if kept:
            out["Cookie"] = "; ".join(kept)
    if "Accept-Encoding" in out:
        out["Accept-Encoding"] = _undoable_encodings(",".join(out.getall("Accept-Encoding")))
    out["Authorization"] = hub_authorization(hub_token)
    out.extend(gateway_headers)
    return out


# Refusals that JupyterHub and jupyter_server write as JSON for an API request; the same status with another
# body comes from something in front of them. 495/496 are nginx's own: a client certificate refused or missing.
_REFUSALS = frozenset({401, 403})
_CERTIFICATE_REFUSALS = frozenset({495, 496})


def gateway_refusal(settings: Settings, raw_path: str, status: int, content_type: str) -> ProxyError | None:
    """The error to answer when an access gateway, not the hub or the server, refused the request; else None."""
    if status not in _REFUSALS and status not in _CERTIFICATE_REFUSALS:  # nearly every answer: nothing to look at
        return None
    api = raw_path.startswith("/api/") or raw_path.startswith(settings.hub.server_prefix + "api/")
    if status in _CERTIFICATE_REFUSALS or (api and "json" not in content_type):
        wants = ("credentials for programs: set JUPYTER_HUB_HEADERS (or JUPYTER_CLIENT_CERT) to what your "
                 "hub's admins give out" if not (settings.hub_headers or settings.client_cert) else
                 "other credentials than those in JUPYTER_HUB_HEADERS / JUPYTER_CLIENT_CERT: check them")
        return ProxyError(502, "gateway-refused", f"An access gateway in front of the hub refused the request "
                                                  f"({status}), not the hub or your server: it wants {wants}.")
    return None


# How jupyter-server-proxy (4.x) answers when it cannot reach the app's port: a 500 with jupyter_server's own error
# page, or (when it streams) a body that is only the error's text, "[Errno 111] Connection refused". The app's own
# 500 comes with the app's body, whatever words are in it.
_CANNOT_REACH_APP = re.compile(rb"\A\s*\[Errno \d+\][^<\n]{0,200}\s*\Z|<title>Jupyter Server</title>.*"
                               rb"<h1>500 : Internal Server Error</h1>", re.S)


APP_NOT_LISTENING = "app-not-listening"


def app_not_listening(route: Route, status: int, body: bytes) -> ProxyError | None:
    """The explained answer when the forwarded app's port has nothing listening on the server; else None (an
    app's own 500 passes as it is)."""
    if route.app is None or status != 500 or not _CANNOT_REACH_APP.search(body):
        return None
    port = route.app.remote
    return ProxyError(502, APP_NOT_LISTENING, f"Nothing listens on port {port} of your server (your server could "
                                                f"not reach it): start the app there (for example tensorboard "
                                                f"--logdir runs --port {port}), then reload.")


def _is_the_hub(settings: Settings, url: URL) -> bool:
    return url.host in (settings.hub.origin.host, settings.tls_name)


# What a browser drops from a URL before reading it (WHATWG URL parsing): tabs and newlines anywhere, C0 controls
# and spaces at either end.
_URL_IGNORED = re.compile(r"[\t\n\r]")
_URL_TRIMMED = "".join(map(chr, range(0x21)))


def _as_browser_reads(location: str) -> str:
    """A Location as a browser reads it on an http(s) page, where ``\\`` is ``/``: ``\\\\evil.example/x`` and
    ``/\\evil.example`` are the scheme-relative ``//evil.example/...``, which look like paths to yarl."""
    return _URL_IGNORED.sub("", location).strip(_URL_TRIMMED).replace("\\", "/")


def local_location_for(settings: Settings, location: str, prefix: str | None = None) -> str | None:
    """Map a redirect target on the hub back to the IDE's view; None when it leaves the user's server.

    ``https://hub/user/alice/tree?x=1``, ``/user/alice/tree?x=1`` and ``\\\\hub\\user\\alice\\tree?x=1`` →
    ``/tree?x=1``; ``relative/path`` stays as it is (it resolves the same on both sides);
    ``/hub/login?next=...``, another host, a scheme without a host (``https:evil.example``, which leaves an http
    page) or ``///host`` → None.
    """
    read = _as_browser_reads(location)
    try:
        url = URL(read)
    except ValueError:  # not a URL yarl can read (``//[bad``): no telling where a browser would go
        return None
    if url.absolute:
        if not _is_the_hub(settings, url):
            return None
    elif url.scheme or read.startswith("//"):
        return None
    elif not read.startswith("/"):
        return location
    path = url.raw_path
    prefix = prefix or settings.hub.server_prefix
    if path + "/" == prefix or path.startswith(prefix):
        local = URL.build(path="/" + path[len(prefix):], query_string=url.raw_query_string,
                          fragment=url.raw_fragment, encoded=True)
        return str(local)
    return None


def local_set_cookie_for(settings: Settings, set_cookie: str, prefix: str | None = None,
                         app: bool = False) -> str | None:
    """Map a hub cookie's Path from /user/<name>/... to /...; None for cookies meant for other paths — but for a
    web app (``app``), which thinks it is at the root and is at the root of its local port, a path of its own
    (``Path=/``) stays as it is, and the server's own cookies are dropped.

    The Domain attribute is dropped: it names the hub, and a browser would reject it for localhost.
    """
    cookie = _COOKIE_DOMAIN.sub("", set_cookie)
    match = _COOKIE_PATH.search(cookie)
    if match is None:
        return cookie
    path = match.group(1).strip()
    prefix = prefix or settings.hub.server_prefix
    if path + "/" == prefix or path.startswith(prefix):
        local = "/" + path[len(prefix):]
        return cookie[:match.start(1)] + local + cookie[match.end(1):]
    # An app's own path (it thinks it is at the root) stays; a path of the hub's (the server's own cookies, such as
    # its _xsrf on /user/<name>/) means nothing on the app's port.
    hub = settings.hub
    return cookie if app and not path.startswith((hub.users_prefix, hub.hub_prefix)) else None


def _redirect_out_of_server(settings: Settings, location: str) -> ProxyError:
    """What a redirect that leaves the user's server means, as an error the IDE understands.

    A stopped server's URLs redirect to ``<base>hub/user/<name>/...`` (the hub then answers 424); a redirect
    to another host is an access gateway's login page; anything else is the hub's login flow, which a valid
    token never triggers.
    """
    hub = settings.hub
    try:
        target = URL(_as_browser_reads(location))
    except ValueError:  # unreadable: no host to name, so it is told as the hub's login flow below
        target = URL()
    if target.absolute and not _is_the_hub(settings, target):
        return ProxyError(403, "gateway-login-required",
                          f"An access gateway in front of the hub sent the request to its login page "
                          f"({target.host}) instead of passing it on: set JUPYTER_HUB_HEADERS (or "
                          "JUPYTER_CLIENT_CERT) to the credentials for programs your hub's admins give out.")
    if (target.raw_path + "/").startswith(hub.stopped_prefix):
        return ServerNotRunning(f"Your server on the hub ({hub.server_prefix}) is not running: start it from "
                                f"{hub.page('home')}, then retry.")
    return HubLoginRequired("The hub asked for a login instead of accepting the token: the token is missing, "
                            f"wrong or expired, or lacks the scope access:servers!user={hub.user}. "
                            f"Make a new one at {hub.page('token')}.")


class _HeaderNames(enum.Enum):
    """What an answer's header names, all together, ask of the mapping."""

    UNWRITABLE = enum.auto()  # one is not a header name the IDE can be sent
    ALL_PASSED = enum.auto()  # each goes to the IDE as it is: none hop-by-hop, CORS, Location or Set-Cookie
    MAPPED = enum.auto()  # some are dropped or mapped


@functools.lru_cache(maxsize=64)  # a server answers with the same few sets of header names
def _header_names(joined: str) -> _HeaderNames:
    """``joined``: the names joined by ":", in order ("" for an answer without headers, which is fine)."""
    if not joined:
        return _HeaderNames.ALL_PASSED
    if _HEADER_NAMES.fullmatch(joined) is None:
        return _HeaderNames.UNWRITABLE
    names = joined.split(":")
    passed = all(name.lower() not in _HOP_BY_HOP and _response_header_kind(name) is _ResponseHeader.PASSED
                 for name in names)
    return _HeaderNames.ALL_PASSED if passed and "Connection" not in names else _HeaderNames.MAPPED


def client_response_headers(settings: Settings, headers: MultiMapping[str], swap: TokenSwap | None = None,
                            route: Route | None = None) -> CIMultiDict[str]:
    """The hub's response headers as the IDE should see them, with the hub token swapped out of them (``swap``);
    redirects and cookie paths are mapped from ``route``'s prefix on the hub (the user's server unless given) to /;
    no cookie of the server's or a web app's may replace the proxy's own.

    Raises ProxyError when the hub redirects out of the user's server (passing such a redirect on would
    send the IDE to the hub itself), and when a header could not be written to the IDE intact.
    """
    prefix = route.prefix if route is not None else None
    to_app = route is not None and route.app is not None
    # The usual answer's names, values and (for the swap) text are each looked at once, joined.
    values = _VALUE_SEPARATOR.join(headers.values())
    names = _header_names(":".join(headers.keys()))
    if names is _HeaderNames.UNWRITABLE or _unwritable(values):
        name = next(name for name, value in headers.items()
                    if not _HEADER_NAME.fullmatch(name) or _UNWRITABLE_VALUE.search(value))
        raise hub_bad_answer(settings.hub, f"a header the IDE cannot be sent, {ascii(name[:60])}")
    if swap is not None and not swap.holds_text(values):
        swap = None
    if names is _HeaderNames.ALL_PASSED and swap is None:  # most answers: copied as they are
        return CIMultiDict(headers)
    kept: list[tuple[str, str]] = []
    for name, value in _forwardable(headers, _HOP_BY_HOP):
        kind = _response_header_kind(name)
        if kind is _ResponseHeader.PASSED:
            kept.append((name, value if swap is None else swap.text(value)))
            continue
        if kind is _ResponseHeader.CORS:
            continue  # which web pages may read the answer is the proxy's decision (its CORS settings)
        if swap is not None:
            value = swap.text(value)
        if kind is _ResponseHeader.LOCATION:
            local = local_location_for(settings, value, prefix)
            if local is None:
                raise _redirect_out_of_server(settings, value)
        else:
            local = local_set_cookie_for(settings, value, prefix, app=to_app)
            if local is None or local.partition("=")[0].strip() == COOKIE_NAME:
                continue  # another path's cookie; or one named as the proxy's, which would log the browser out
        kept.append((name, local))
    return CIMultiDict(kept)


class _ResponseHeader(enum.Enum):
    """What the IDE's copy of a hub answer's header needs."""

    PASSED = enum.auto()  # as it is (the token swapped out)
    CORS = enum.auto()  # dropped: CORS is the proxy's own answer
    LOCATION = enum.auto()  # mapped to the proxy's paths, or refused
    SET_COOKIE = enum.auto()  # its path mapped, or dropped


@functools.lru_cache(maxsize=256)  # header names repeat from answer to answer
def _response_header_kind(name: str) -> _ResponseHeader:
    lower = name.lower()
    if lower.startswith("access-control-"):
        return _ResponseHeader.CORS
    return {"location": _ResponseHeader.LOCATION, "set-cookie": _ResponseHeader.SET_COOKIE}.get(
        lower, _ResponseHeader.PASSED)
