"""Routing: the IDE's paths, queries, headers, redirects and cookies mapped to and from /user/<name>/.

Pure tests of pure functions; the confinement rule is also checked with hypothesis over generated paths.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.errors import ProxyError
from jupyter_dev_proxy.routing import (
    client_response_headers,
    local_location_for,
    local_set_cookie_for,
    query_without_token,
    upstream_path_for,
    upstream_request_headers,
)
from tests.kit.settings import make_settings

HUB_TOKEN = "hub-secret"

# Deterministic, no example database written into the repository, a few seconds at most.
PROPERTY = hypothesis_settings(max_examples=500, derandomize=True, database=None, deadline=None,
                               suppress_health_check=[HealthCheck.too_slow])


def settings(hub_url: str = "https://10.0.0.5:8000", tls_name: str = "jupyterhub", **overrides: Any) -> Settings:
    return make_settings(hub_url, None, tls_name, hub_token=HUB_TOKEN, local_token="local-secret",
                         listen_host="localhost", listen_port=8000, **overrides)


ALICE = settings()


def headers(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def refusal(raw_path: str, config: Settings = ALICE) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        upstream_path_for(config, raw_path)
    return caught.value


def assert_jupyter_style_refusal(error: ProxyError) -> None:
    """A 4xx with a short machine reason and a sentence the IDE can show."""
    assert 400 <= error.status < 500
    assert error.reason and " " not in error.reason
    assert error.message.endswith(".") and "\n" not in error.message
    assert str(error) == error.message


def fully_decoded(path: str) -> str:
    """Percent-decode until nothing changes, as a chain of servers each decoding once might."""
    while (decoded := unquote(path, errors="replace")) != path:
        path = decoded
    return path


# --- upstream paths: everything lands under /user/<name>/ -------------------------------------------------


@pytest.mark.parametrize(("local", "upstream"), [
    ("/", "/user/alice/"),
    ("/api", "/user/alice/api"),
    ("/api/", "/user/alice/api/"),
    ("/api/kernels", "/user/alice/api/kernels"),
    ("/api/kernels/0f3c/channels", "/user/alice/api/kernels/0f3c/channels"),
    ("/api/contents/my%20notebook.ipynb", "/user/alice/api/contents/my%20notebook.ipynb"),
    ("/api/contents/caf%C3%A9.ipynb", "/user/alice/api/contents/caf%C3%A9.ipynb"),
    ("/kernelspecs/python3/logo-64x64.png", "/user/alice/kernelspecs/python3/logo-64x64.png"),
    ("/files/data/x.csv", "/user/alice/files/data/x.csv"),
    ("/terminals/websocket/1", "/user/alice/terminals/websocket/1"),
    ("/tree", "/user/alice/tree"),
    ("/lab", "/user/alice/lab"),
    ("/lab/tree/a.ipynb", "/user/alice/lab/tree/a.ipynb"),
    ("/login", "/user/alice/login"),
    ("/users/x", "/user/alice/users/x"),
    ("/hubble", "/user/alice/hubble"),
    ("/api/contents/.ipynb_checkpoints", "/user/alice/api/contents/.ipynb_checkpoints"),
    ("/api/contents/a..b", "/user/alice/api/contents/a..b"),
    ("/api/contents/...", "/user/alice/api/contents/..."),
])
def test_every_local_path_goes_under_the_users_server(local: str, upstream: str) -> None:
    assert upstream_path_for(ALICE, local) == upstream


@pytest.mark.parametrize("path", [
    "/user/alice/",
    "/user/alice/api/kernels",
    "/user/alice/kernelspecs/python3/logo-64x64.png",
    "/user/alice/user/alice/x",
])
def test_a_path_already_under_the_users_prefix_is_sent_once(path: str) -> None:
    assert upstream_path_for(ALICE, path) == path


@pytest.mark.parametrize(("config", "path"), [
    (ALICE, "/user/alice"),
    (settings(user="a b@c~d"), "/user/a%20b@c~d"),
    (settings(server="dev"), "/user/alice/dev"),
])
def test_the_prefix_without_its_slash_is_sent_once(config: Settings, path: str) -> None:
    assert upstream_path_for(config, path) in (path, path + "/")


@pytest.mark.parametrize(("username", "path"), [
    ("a b@c~d", "/user/a%20b@c~d/kernelspecs/python3/logo-64x64.png"),
    ("jösé", "/user/j%C3%B6s%C3%A9/api/kernels"),
])
def test_the_escaped_prefix_is_sent_once(username: str, path: str) -> None:
    assert upstream_path_for(settings(user=username), path) == path


@pytest.mark.parametrize("username", ["a b@c~d", "jösé", "名前"])
def test_local_paths_get_the_escaped_prefix(username: str) -> None:
    config = settings(user=username)
    assert upstream_path_for(config, "/api/kernels") == config.hub.server_prefix + "api/kernels"


@pytest.mark.parametrize(("path", "upstream"), [
    ("/user/al%69ce/api/kernels", "/user/alice/api/kernels"),
    ("/%75ser/alice/api/kernels", "/user/alice/api/kernels"),
    ("/us%65r/%61lice/tree/a%20b", "/user/alice/tree/a%20b"),
])
def test_a_differently_encoded_own_prefix_is_sent_canonical(path: str, upstream: str) -> None:
    # The hub's proxy routes on raw paths: /user/al%69ce/ could miss alice's route and reach the hub itself.
    assert upstream_path_for(ALICE, path) == upstream


@pytest.mark.parametrize(("path", "status"), [
    ("/hub", 404),
    ("/hub/", 404),
    ("/hub/api", 404),
    ("/hub/api/users/alice", 404),
    ("/hub/login", 404),
    ("/%68ub/api", 404),
    ("/user", 403),
    ("/user/", 403),
    ("/user/bob", 403),
    ("/user/bob/api/kernels", 403),
    ("/user/alicebob/api", 403),
    ("/user/alic/api", 403),
    ("/user/%62ob/api", 403),
])
def test_the_hub_and_other_users_are_refused(path: str, status: int) -> None:
    error = refusal(path)
    assert error.status == status
    assert_jupyter_style_refusal(error)


def test_refusing_the_hub_api_hides_it_from_vs_code() -> None:
    # VS Code refuses a server whose /hub/api answers JSON with a version: the proxy must not forward it.
    assert "/user/alice/" in refusal("/hub/api").message


@pytest.mark.parametrize("path", [
    "/..", "/../hub/api", "/api/../../hub", "/api/..", "/user/alice/../bob/api",
    "/.", "/./api", "/api/./kernels", "/api/.",
])
def test_dot_and_dot_dot_segments_are_refused(path: str) -> None:
    error = refusal(path)
    assert error.status == 400
    assert_jupyter_style_refusal(error)


@pytest.mark.parametrize("path", [
    "/%2e%2e/hub/api", "/%2E%2E/hub", "/%2E%2e", "/%2e%2E/x", "/.%2e/hub", "/%2e./hub",
    "/api/%2e%2e/%2e%2e/hub", "/user/alice/%2e%2e/bob", "/%2e/api",
    "/%252e%252e/hub", "/%252E%252e/hub", "/%25252e%25252e/hub", "/%%32e%%32e/hub", "/%2%65%2%65/hub",
])
def test_dot_dot_in_any_encoding_is_refused(path: str) -> None:
    error = refusal(path)
    assert error.status == 400
    assert_jupyter_style_refusal(error)


@pytest.mark.parametrize("path", [
    "/api%2f..%2f..%2fhub", "/api/contents%2Fsecret", "/user%2fbob/api", "/user/alice%2F..%2Fbob",
    "/api/%252f", "/api/%25252F",
])
def test_encoded_slashes_are_refused(path: str) -> None:
    error = refusal(path)
    assert error.status == 400
    assert_jupyter_style_refusal(error)


@pytest.mark.parametrize("path", ["//", "//hub/api", "/api//kernels", "//evil.example/x", "/user/alice//x"])
def test_empty_segments_are_refused(path: str) -> None:
    error = refusal(path)
    assert error.status == 400
    assert_jupyter_style_refusal(error)


@pytest.mark.parametrize("path", [
    "/api\\..\\hub", "/\\hub", "/api/%5c..%5chub", "/api/%5C", "/api/%255c",
    "/api/\x00", "/api/%00", "/api/%2500", "/api/\r\nX-Injected: 1", "/api/%0d%0a", "/api/%0a", "/api/\t",
    "/api/%7f", "/api/\x1b",
])
def test_backslashes_and_control_characters_are_refused(path: str) -> None:
    error = refusal(path)
    assert error.status == 400
    assert_jupyter_style_refusal(error)


@pytest.mark.parametrize("path", ["", "api/kernels", "hub/api", "..", "%2fapi", "*", "http://evil.example/"])
def test_paths_not_starting_with_a_slash_are_refused(path: str) -> None:
    error = refusal(path)
    assert error.status == 400
    assert_jupyter_style_refusal(error)


def test_too_many_encodings_are_refused() -> None:
    # Four rounds of encoding of a plain letter: refused rather than decoded ever deeper.
    error = refusal("/api/%2525252561")
    assert error.status == 400
    assert_jupyter_style_refusal(error)


@pytest.mark.parametrize("path", ["/api/%ff", "/api/contents/caf%E9.txt", "/%c3"])
def test_non_utf8_escapes_are_a_clean_refusal(path: str) -> None:
    assert_jupyter_style_refusal(refusal(path))


# --- named servers -------------------------------------------------------------------------------------

DEV = settings(server="dev")


@pytest.mark.parametrize(("local", "upstream"), [
    ("/", "/user/alice/dev/"),
    ("/api/kernels", "/user/alice/dev/api/kernels"),
    ("/user/alice/dev/api/kernels", "/user/alice/dev/api/kernels"),
    ("/user/alice/dev/", "/user/alice/dev/"),
])
def test_a_named_server_is_the_prefix_for_everything(local: str, upstream: str) -> None:
    assert upstream_path_for(DEV, local) == upstream


def test_a_named_server_prefix_is_escaped_like_jupyterhub() -> None:
    config = settings(server="my lab@x~")
    assert config.hub.server_prefix == "/user/alice/my%20lab@x~/"
    assert upstream_path_for(config, "/api") == "/user/alice/my%20lab@x~/api"


@pytest.mark.parametrize("path", ["/user/alice/api/kernels", "/user/alice/devx/api", "/user/alice/other/api",
                                  "/user/alice/", "/user/bob/dev/api"])
def test_with_a_named_server_the_default_and_other_servers_are_refused(path: str) -> None:
    error = refusal(path, DEV)
    assert error.status == 403
    assert "/user/alice/dev/" in error.message


def test_a_named_server_maps_redirects_and_cookies() -> None:
    assert local_location_for(DEV, "/user/alice/dev/tree?x=1") == "/tree?x=1"
    assert local_location_for(DEV, "/user/alice/tree") is None
    assert local_set_cookie_for(DEV, "_xsrf=a; Path=/user/alice/dev/") == "_xsrf=a; Path=/"
    assert local_set_cookie_for(DEV, "_xsrf=a; Path=/user/alice/") is None
    with pytest.raises(ProxyError) as caught:
        client_response_headers(DEV, headers(("Location", "/hub/user/alice/dev/api/kernels")))
    assert (caught.value.status, caught.value.reason) == (424, "server-not-running")


# --- upstream paths: property over generated paths ------------------------------------------------------

# Pieces that matter for escaping: traversal, encodings of '.', '/', '\\' and '%', other users, the hub.
_ATOMS = ["", ".", "..", "...", "%2e", "%2E", "%2e%2e", "%2E%2e", "%252e", "%25", "%", "%2f", "%2F", "%252f",
          "%5c", "\\", "%00", "%0a", "%20", "user", "alice", "bob", "hub", "api", "kernels", "a b", "é",
          "%C3%A9", ";", "?", "#", "~", "@", "dev"]
# Where a path starts: nowhere special, the user's own prefix, someone else's, the hub.
_LEADS = ["", "", "user/alice/", "user/alice", "user/", "user/bob/", "user/alice/user/bob/", "user/alice/dev/",
          "user/alice/dev", "hub/", "api/"]
_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])


@st.composite
def raw_paths(draw: st.DrawFn, valid_utf8_escapes_only: bool = True) -> str:
    lead = draw(st.sampled_from(_LEADS))
    segments = draw(st.lists(st.one_of(st.sampled_from(_ATOMS), st.text(_CHARS, min_size=1, max_size=4)),
                             max_size=6))
    path = "/" + lead + "/".join(segments)
    # Percent-encode some characters, zero to three times over, in upper or lower case hex.
    for _ in range(draw(st.integers(0, 3))):
        chosen = draw(st.sets(st.sampled_from("./\\%ehu"), max_size=3))
        hexdigits = "{:02X}" if draw(st.booleans()) else "{:02x}"
        path = "/" + "".join("%" + hexdigits.format(ord(c)) if c in chosen else c for c in path[1:])
    if not valid_utf8_escapes_only:
        path += draw(st.sampled_from(["", "%ff", "%C3", "%80"]))
    return path


@PROPERTY
@given(raw_path=raw_paths(), username=st.sampled_from(["alice", "a b@c~d", "jösé"]),
       server_name=st.sampled_from(["", "", "dev"]))
@example(raw_path="/%252e%252e/hub", username="alice", server_name="")
@example(raw_path="/user/alice/%2e%2e/bob", username="alice", server_name="")
@example(raw_path="/user/alice", username="alice", server_name="")
@example(raw_path="/user/alice/dev/%2e%2e/x", username="alice", server_name="dev")
def test_no_generated_path_can_leave_the_users_server(raw_path: str, username: str, server_name: str) -> None:
    config = settings(user=username, server=server_name)
    try:
        upstream = upstream_path_for(config, raw_path)
    except ProxyError as error:
        assert_jupyter_style_refusal(error)
        return
    except UnicodeDecodeError:
        return  # refused, if not cleanly: see test_non_utf8_escapes_are_a_clean_refusal
    decoded = fully_decoded(upstream)
    own = fully_decoded(config.hub.server_prefix)
    assert (decoded + "/").startswith(own), (raw_path, upstream)
    segments = decoded.split("/")[1:]
    assert "." not in segments and ".." not in segments, (raw_path, upstream)
    assert "" not in segments[:-1], (raw_path, upstream)
    assert "\\" not in decoded, (raw_path, upstream)
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded), (raw_path, upstream)


@PROPERTY
@given(raw_path=raw_paths(), config=st.sampled_from([ALICE, settings(server="dev")]))
@example(raw_path="/user/al%69ce/api", config=ALICE)
@example(raw_path="/%75ser/alice", config=ALICE)
def test_every_forwarded_path_starts_with_the_literal_prefix(raw_path: str, config: Settings) -> None:
    # The rule is on the raw path the hub receives, not only on its decoded form.
    try:
        upstream = upstream_path_for(config, raw_path)
    except (ProxyError, UnicodeDecodeError):
        return
    assert (upstream + "/").startswith(config.hub.server_prefix), (raw_path, upstream)


@PROPERTY
@given(raw_path=raw_paths(valid_utf8_escapes_only=False))
@example(raw_path="/api/%ff")
def test_every_path_is_forwarded_or_refused_with_a_proxy_error(raw_path: str) -> None:
    try:
        assert isinstance(upstream_path_for(ALICE, raw_path), str)
    except ProxyError as error:
        assert_jupyter_style_refusal(error)


@PROPERTY
@given(tail=st.lists(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6),
                     max_size=5))
def test_plain_paths_are_prefixed_byte_for_byte(tail: list[str]) -> None:
    path = "/" + "/".join(tail)
    if tail and tail[0] in ("hub", "user"):
        return
    assert upstream_path_for(ALICE, path) == "/user/alice/" + path[1:]


# --- query: only the proxy's token is removed -----------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("", ""),
    ("token=abc", ""),
    ("token=", ""),
    ("token", ""),
    ("token=abc&x=1", "x=1"),
    ("x=1&token=abc", "x=1"),
    ("a=1&token=abc&b=2", "a=1&b=2"),
    ("token=a&x=1&token=b", "x=1"),
    ("1700000000", "1700000000"),
    ("1700000000&token=abc", "1700000000"),
    ("token=abc&1700000000", "1700000000"),
    ("session_id=3f2a&token=abc", "session_id=3f2a"),
    ("a=&b=", "a=&b="),
    ("a=&token=abc&b=", "a=&b="),
    ("a&b", "a&b"),
    ("a=1&&b=2", "a=1&&b=2"),
    ("x=a+b&y=%2F%20&z=%E9", "x=a+b&y=%2F%20&z=%E9"),
    ("tokens=1&mytoken=2&token_x=3&x=token&tok=en", "tokens=1&mytoken=2&token_x=3&x=token&tok=en"),
    ("next=%2Fuser%2Falice%3Ftoken%3Dx", "next=%2Fuser%2Falice%3Ftoken%3Dx"),
    ("b=2&a=1&c=3", "b=2&a=1&c=3"),
])
def test_only_the_token_parameter_is_removed(query: str, expected: str) -> None:
    assert query_without_token(query) == expected


@pytest.mark.parametrize(("query", "expected"), [
    ("%74oken=abc", ""),
    ("a=1&%74oken=abc", "a=1"),
    ("t%6Fken=abc&b=2", "b=2"),
    ("%74%6F%6B%65%6E=abc", ""),
])
def test_an_encoded_token_name_is_removed_too(query: str, expected: str) -> None:
    assert query_without_token(query) == expected


def test_an_encoded_token_name_is_removed_when_the_query_also_says_token() -> None:
    assert query_without_token("%74oken=abc&x=token") == "x=token"


_QUERY_PIECES = st.text(st.characters(codec="ascii", exclude_characters="&#"), max_size=12).filter(
    lambda piece: unquote(piece.partition("=")[0]) != "token")


@PROPERTY
@given(pieces=st.lists(_QUERY_PIECES, max_size=6), token_at=st.sets(st.integers(0, 6), max_size=3))
def test_removing_the_token_keeps_every_other_byte_in_order(pieces: list[str], token_at: set[int]) -> None:
    query = "&".join(pieces)
    assert query_without_token(query) == query
    with_tokens = list(pieces)
    for index in sorted(token_at, reverse=True):
        with_tokens.insert(min(index, len(with_tokens)), "token=local-secret")
    assert query_without_token("&".join(with_tokens)) == query


# --- request headers ------------------------------------------------------------------------------------


def test_client_credentials_are_replaced_by_the_hub_token() -> None:
    out = upstream_request_headers(headers(("authorization", "token local-secret"), ("Accept", "*/*")), HUB_TOKEN)
    assert out.getall("Authorization") == [f"token {HUB_TOKEN}"]
    assert out["Accept"] == "*/*"


def test_the_hub_token_is_added_when_the_client_sent_none() -> None:
    assert upstream_request_headers(headers(), HUB_TOKEN) == CIMultiDict({"Authorization": f"token {HUB_TOKEN}"})


@pytest.mark.parametrize("name", [
    "Authorization", "Cookie", "Origin", "Referer", "Host", "Expect",
    "Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Authorization",
    "Proxy-Connection",
])
@pytest.mark.parametrize("websocket", [False, True])
def test_credentials_origin_host_and_hop_by_hop_headers_are_dropped(name: str, websocket: bool) -> None:
    sent = headers((name, "x"), (name.lower(), "y"), ("X-Kept", "1"))
    out = upstream_request_headers(sent, HUB_TOKEN, websocket=websocket)
    assert name not in out or (name == "Authorization" and out.getall(name) == [f"token {HUB_TOKEN}"])
    assert out["X-Kept"] == "1"


def test_headers_named_in_connection_are_dropped() -> None:
    sent = headers(("Connection", "keep-alive, X-Hop-One ,x-hop-two"), ("X-Hop-One", "1"), ("X-Hop-Two", "2"),
                   ("X-End-To-End", "3"))
    out = upstream_request_headers(sent, HUB_TOKEN)
    assert "X-Hop-One" not in out and "X-Hop-Two" not in out
    assert out["X-End-To-End"] == "3"


def test_headers_named_in_any_connection_header_are_dropped() -> None:
    sent = headers(("Connection", "keep-alive"), ("Connection", "X-Hop"), ("X-Hop", "1"))
    assert "X-Hop" not in upstream_request_headers(sent, HUB_TOKEN)


def test_everything_else_is_kept_in_order_with_repeats_and_content_length() -> None:
    kept = [("Content-Type", "application/json"), ("Content-Length", "17"), ("Accept", "text/html"),
            ("Accept", "application/json"), ("X-XSRFToken", "abc"), ("User-Agent", "vscode"),
            ("Sec-Fetch-Mode", "cors"), ("Accept-Encoding", "gzip"), ("If-None-Match", '"etag"')]
    sent = headers(("Host", "localhost:8000"), *kept[:3], ("Cookie", "_xsrf=abc"), *kept[3:],
                   ("Connection", "keep-alive"))
    out = upstream_request_headers(sent, HUB_TOKEN)
    assert [item for item in out.items() if item[0] != "Authorization"] == kept
    assert out.getall("Accept") == ["text/html", "application/json"]


WEBSOCKET_HANDSHAKE = [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
                       ("Sec-WebSocket-Extensions", "permessage-deflate"),
                       ("Sec-WebSocket-Protocol", "v1.kernel.websocket.jupyter.org")]


def test_websocket_handshake_headers_are_dropped_for_a_websocket() -> None:
    sent = headers(("Connection", "Upgrade"), ("Upgrade", "websocket"), *WEBSOCKET_HANDSHAKE,
                   ("Origin", "http://localhost:8000"), ("X-Kept", "1"))
    out = upstream_request_headers(sent, HUB_TOKEN, websocket=True)
    assert list(out.items()) == [("X-Kept", "1"), ("Authorization", f"token {HUB_TOKEN}")]


def test_websocket_handshake_headers_are_only_dropped_for_a_websocket() -> None:
    out = upstream_request_headers(headers(*WEBSOCKET_HANDSHAKE), HUB_TOKEN)
    assert [item for item in out.items() if item[0] != "Authorization"] == WEBSOCKET_HANDSHAKE


def test_request_headers_are_not_mutated() -> None:
    source = CIMultiDict([("Cookie", "a=1"), ("Authorization", "token local")])
    upstream_request_headers(CIMultiDictProxy(source), HUB_TOKEN)
    assert list(source.items()) == [("Cookie", "a=1"), ("Authorization", "token local")]


# --- Location ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("location", "local"), [
    ("https://10.0.0.5:8000/user/alice/tree?x=1#cell", "/tree?x=1#cell"),
    ("https://10.0.0.5:8000/user/alice/", "/"),
    ("https://10.0.0.5:8000/user/alice", "/"),
    ("https://jupyterhub/user/alice/lab", "/lab"),
    ("https://jupyterhub:8000/user/alice/api/contents/a.ipynb", "/api/contents/a.ipynb"),
    ("//10.0.0.5:8000/user/alice/tree", "/tree"),
    ("/user/alice/tree?x=1", "/tree?x=1"),
    ("/user/alice/api/kernels/1?a=1&b=%20%26#frag", "/api/kernels/1?a=1&b=%20%26#frag"),
    ("/user/alice/", "/"),
    ("/user/alice", "/"),
    ("/user/alice/api/contents/my%20file.ipynb", "/api/contents/my%20file.ipynb"),
])
def test_redirects_inside_the_users_server_are_mapped_to_local_paths(location: str, local: str) -> None:
    assert local_location_for(ALICE, location) == local


def test_redirect_query_values_keep_their_meaning() -> None:
    # yarl may write %2F as / inside a query; both decode to the same value, which is what servers read.
    local = local_location_for(ALICE, "/user/alice/lab?next=%2Fuser%2Falice%2Flab%3Fx%3D1&a=%2B%26")
    assert local is not None and local.startswith("/lab?")
    assert parse_qsl(local.partition("?")[2]) == [("next", "/user/alice/lab?x=1"), ("a", "+&")]


@pytest.mark.parametrize("location", ["tree?x=1", "kernels/1", "../tree", "?next=1", "#top", "logo.png"])
def test_relative_redirects_are_kept(location: str) -> None:
    assert local_location_for(ALICE, location) == location


def test_redirects_to_a_named_hub_map_by_its_name() -> None:
    config = settings(hub_url="https://hub.example.org", tls_name="hub.example.org")
    assert local_location_for(config, "https://hub.example.org/user/alice/tree") == "/tree"
    assert local_location_for(config, "https://jupyterhub/user/alice/tree") is None


def test_redirects_use_the_escaped_prefix() -> None:
    config = settings(user="a b@c~d")
    assert local_location_for(config, "/user/a%20b@c~d/tree?x=1") == "/tree?x=1"
    assert local_location_for(config, "/user/a%20b@c~d") == "/"


@pytest.mark.parametrize("location", [
    "/hub/user/alice/api/kernels",
    "/hub/login?next=%2Fuser%2Falice%2F",
    "/user/bob/tree",
    "/user/alicebob/tree",
    "/",
    "https://evil.example/user/alice/tree",
    "https://10.0.0.6:8000/user/alice/tree",
    "//evil.example/user/alice/",
])
def test_redirects_out_of_the_users_server_map_to_none(location: str) -> None:
    assert local_location_for(ALICE, location) is None


# What a browser reads as another origin although it does not look like one: `\\` is `/` in http(s) URLs, tabs and
# newlines are dropped anywhere, and a scheme without `//` still leaves an http page (WHATWG URL parsing).
@pytest.mark.parametrize("location", [
    "\\\\evil.example/x",
    "\\/evil.example/x",
    "/\\evil.example/x",
    "https:\\\\evil.example/x",
    "https:evil.example",
    "https:/evil.example/user/alice/",
    "http:\\evil.example",
    "javascript:alert(1)",
    "/\t/evil.example/x",
    "\t//evil.example/x",
    " \\\\evil.example/x",
    "///evil.example/user/alice/",
    "\\\\evil.example/user/alice/tree",
    "//[bad",
])
def test_backslash_and_schemed_redirects_never_leave_the_proxys_origin(location: str) -> None:
    assert local_location_for(ALICE, location) is None
    with pytest.raises(ProxyError) as caught:
        client_response_headers(ALICE, headers(("Location", location)))
    assert caught.value.status == 403


def test_a_backslashed_redirect_to_the_users_server_is_mapped_to_a_local_path() -> None:
    assert local_location_for(ALICE, "\\\\10.0.0.5:8000\\user\\alice\\tree?x=1") == "/tree?x=1"
    assert local_location_for(ALICE, "https:\\\\jupyterhub/user/alice/lab") == "/lab"


_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


@PROPERTY
@given(location=st.lists(st.sampled_from(["/", "\\", "\t", " ", ":", "https", "http:", "evil.example", "user/alice",
                                          "10.0.0.5:8000", "@", "?", "#", ".", "a"]), max_size=8).map("".join))
def test_a_kept_redirect_stays_on_the_proxys_origin_as_a_browser_reads_it(location: str) -> None:
    local = local_location_for(ALICE, location)
    if local is not None:
        as_read = re.sub(r"[\t\n\r]", "", local).strip(" ").replace("\\", "/")
        assert not as_read.startswith("//") and not _URL_SCHEME.match(as_read), (location, local)


@pytest.mark.parametrize("location", [
    "/hub/user/alice/api/kernels/1?x=1",
    "/hub/user/alice/",
    "https://10.0.0.5:8000/hub/user/alice/lab",
])
def test_a_redirect_to_the_hubs_spawn_page_means_the_server_is_not_running(location: str) -> None:
    with pytest.raises(ProxyError) as caught:
        client_response_headers(ALICE, headers(("Location", location)))
    assert caught.value.status == 424
    assert caught.value.reason == "server-not-running"
    assert "/user/alice/" in caught.value.message


@pytest.mark.parametrize("location", [
    "/hub/login?next=%2Fuser%2Falice%2Fapi%2Fkernels",
    "https://10.0.0.5:8000/hub/login",
    "https://evil.example/user/alice/",
    "/hub/user/bob/",
    "/user/bob/",
])
def test_a_redirect_to_the_hub_login_or_elsewhere_is_refused(location: str) -> None:
    with pytest.raises(ProxyError) as caught:
        client_response_headers(ALICE, headers(("Location", location)))
    assert caught.value.status == 403
    assert_jupyter_style_refusal(caught.value)
    assert HUB_TOKEN not in caught.value.message


def test_response_location_is_rewritten_in_place() -> None:
    out = client_response_headers(ALICE, headers(("Content-Type", "text/html"),
                                                 ("Location", "https://10.0.0.5:8000/user/alice/lab?reset")))
    assert list(out.items()) == [("Content-Type", "text/html"), ("Location", "/lab?reset")]


# --- Set-Cookie ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hub_cookie", "local_cookie"), [
    ("_xsrf=abc; Path=/user/alice/x", "_xsrf=abc; Path=/x"),
    ("_xsrf=abc; Path=/user/alice/", "_xsrf=abc; Path=/"),
    ("_xsrf=abc; Path=/user/alice", "_xsrf=abc; Path=/"),
    ("_xsrf=abc; expires=Wed, 01 Jan 2031 00:00:00 GMT; Path=/user/alice/; HttpOnly; SameSite=Lax",
     "_xsrf=abc; expires=Wed, 01 Jan 2031 00:00:00 GMT; Path=/; HttpOnly; SameSite=Lax"),
    ("a=1; path=/user/alice/api", "a=1; path=/api"),
    ("a=1;Path=/user/alice/lab;Secure", "a=1;Path=/lab;Secure"),
    ("a=1; Domain=10.0.0.5; Path=/user/alice/", "a=1; Path=/"),
    ("a=1; Path=/user/alice/; domain=.example.org; Secure", "a=1; Path=/; Secure"),
    ("a=1; DOMAIN=hub; Path=/user/alice/", "a=1; Path=/"),
    ("a=1", "a=1"),
    ("a=1; HttpOnly", "a=1; HttpOnly"),
    ("a=1; Domain=hub.example.org", "a=1"),
    ("path=/user/alice/; Path=/user/alice/x", "path=/user/alice/; Path=/x"),
])
def test_cookie_paths_are_mapped_and_domains_dropped(hub_cookie: str, local_cookie: str) -> None:
    assert local_set_cookie_for(ALICE, hub_cookie) == local_cookie


@pytest.mark.parametrize("hub_cookie", [
    "jupyterhub-session-id=s; Path=/hub/",
    "jupyterhub-hub-login=x; Path=/hub/; HttpOnly",
    "other=1; Path=/user/bob/",
    "other=1; Path=/user/alicebob/",
    "root=1; Path=/",
])
def test_cookies_for_other_paths_are_dropped(hub_cookie: str) -> None:
    assert local_set_cookie_for(ALICE, hub_cookie) is None


def test_cookie_path_uses_the_escaped_prefix() -> None:
    assert local_set_cookie_for(settings(user="a b"), "x=1; Path=/user/a%20b/lab") == "x=1; Path=/lab"


def test_response_cookies_are_mapped_repeated_and_filtered() -> None:
    out = client_response_headers(ALICE, headers(
        ("Set-Cookie", "_xsrf=abc; Path=/user/alice/"),
        ("Set-Cookie", "jupyterhub-session-id=s; Path=/hub/"),
        ("Set-Cookie", "plain=1"),
    ))
    assert out.getall("Set-Cookie") == ["_xsrf=abc; Path=/", "plain=1"]


# --- other response headers ----------------------------------------------------------------------------


def test_response_hop_by_hop_headers_are_dropped_and_the_rest_kept_in_order() -> None:
    out = client_response_headers(ALICE, headers(
        ("Connection", "keep-alive, X-Hop"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
        ("Proxy-Authenticate", "Basic"), ("Trailer", "X"), ("Upgrade", "h2c"), ("X-Hop", "1"),
        ("Content-Type", "application/json"), ("Content-Length", "2"), ("X-Jupyter", "a"), ("X-Jupyter", "b"),
        ("Content-Security-Policy", "frame-ancestors 'self'"),
    ))
    assert list(out.items()) == [("Content-Type", "application/json"), ("Content-Length", "2"),
                                 ("X-Jupyter", "a"), ("X-Jupyter", "b"),
                                 ("Content-Security-Policy", "frame-ancestors 'self'")]
