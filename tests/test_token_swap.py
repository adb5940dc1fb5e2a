"""The swap of the hub token out of answers, as pure functions: every written form, every way a body is cut."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_dev_proxy.token_swap import BodySwap, BrokenBody, TokenSwap, content_coding, is_textual, page_token

HUB = "8f14e45fceea167a5a36dedd4bea2543"  # the shape JupyterHub gives its tokens: 32 hex digits
LOCAL = "Yk3lM2x0aTZ0-local_Token"


def _whole(swap: TokenSwap, body: bytes) -> bytes:
    return swap.whole(body)[0]


def _streamed(swap: TokenSwap, chunks: list[bytes]) -> bytes:
    stream = swap.stream()
    return b"".join([piece for chunk in chunks for piece in stream.feed(chunk)] + [stream.end()])


def _cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(body)) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)])]


def test_the_page_config_token_becomes_the_proxys() -> None:
    page = f'<script id="jupyter-config-data">{{"token": "{HUB}", "baseUrl": "/user/alice/"}}</script>'.encode()
    swapped, found = TokenSwap(HUB, LOCAL).whole(page)
    assert found and HUB.encode() not in swapped
    assert json.loads(swapped.split(b">", 1)[1].split(b"<", 1)[0])["token"] == LOCAL


@pytest.mark.parametrize("written", [
    'a"b/c<d>&e f+g', "tok\\en", "x%2Fy", "ünï",
], ids=["quotes-slash-angle", "backslash", "percent", "non-ascii"])
def test_every_written_form_of_a_pasted_token_is_swapped(written: str) -> None:
    """Tokens pasted by users are any printable text: JSON, HTML and URL writing change them, the swap follows."""
    swap = TokenSwap(written, LOCAL)
    forms = [written, json.dumps(written)[1:-1], json.dumps(written)[1:-1].replace("/", "\\/"),
             written.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"),
             __import__("urllib.parse").parse.quote(written, safe="")]
    for form in forms:
        swapped, found = swap.whole(f"<{form}>".encode())
        assert found, form
        assert form.encode() not in swapped


def test_a_body_without_the_token_is_returned_as_it_is() -> None:
    body = b"x" * 100_000
    swapped, found = TokenSwap(HUB, LOCAL).whole(body)
    assert swapped is body and not found


def test_a_header_value_is_swapped() -> None:
    swap = TokenSwap(HUB, LOCAL)
    assert swap.text(f"/lab?token={HUB}&x=1") == f"/lab?token={LOCAL}&x=1"
    assert swap.text("no token here") == "no token here"


@settings(max_examples=400, deadline=None)
@given(token=st.sampled_from([HUB, "aaaa", "abab", "a/b\"c", "tt"]),
       parts=st.lists(st.sampled_from(["", "a", "b", "ab", "t", "x", "\n\n", HUB[:7], HUB, "aaaa", "abab", "a/b\\\"c",
                                       "a\\/b\\\"c", "tt"]), max_size=30),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_streamed_is_the_same_as_whole_however_the_body_is_cut(token: str, parts: list[str], cuts: list[int]) -> None:
    """Tokens that overlap themselves (aaaa, abab) and bodies cut anywhere: the stream swaps what the whole does."""
    swap = TokenSwap(token, LOCAL)
    body = "".join(parts).encode()
    assert _streamed(swap, _cut(body, cuts)) == _whole(swap, body)


def test_a_stream_holds_back_only_what_could_begin_the_token() -> None:
    """A progress stream's event ends in a blank line, not a token: nothing of it is held for the next chunk."""
    stream = TokenSwap(HUB, LOCAL).stream()
    event = b'data: {"progress": 50, "message": "pulling image"}\n\n'
    assert b"".join(stream.feed(event)) == event
    assert b"".join(stream.feed(b"data: " + HUB[:10].encode())) == b"data: "  # could be the token: held
    assert b"".join(stream.feed(HUB[10:].encode() + b"\n\n")) == LOCAL.encode() + b"\n\n"
    assert stream.end() == b"" and stream.found


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "deflate"])
def test_a_compressed_body_is_inflated_and_swapped_piece_by_piece(compress: object) -> None:
    body = (b"<p>" + b"filler " * 200_000 + HUB.encode() + b"</p>") * 3
    compressed = compress(body)  # type: ignore[operator]
    body_swap = BodySwap(TokenSwap(HUB, LOCAL), compressed=True)
    pieces = [piece for i in range(0, len(compressed), 1000) for piece in body_swap.feed(compressed[i:i + 1000])]
    pieces += list(body_swap.end())
    assert b"".join(pieces) == body.replace(HUB.encode(), LOCAL.encode())
    assert max(map(len, pieces)) <= 256 * 1024 + len(HUB)  # a bomb inflates a piece at a time, never whole
    assert body_swap.found


def test_a_compressed_body_that_does_not_inflate_is_broken() -> None:
    with pytest.raises(BrokenBody):
        list(BodySwap(TokenSwap(HUB, LOCAL), compressed=True).feed(b"not gzip at all"))
    cut_short = BodySwap(TokenSwap(HUB, LOCAL), compressed=True)
    list(cut_short.feed(gzip.compress(b"x" * 10_000)[:20]))
    with pytest.raises(BrokenBody):
        list(cut_short.end())


@pytest.mark.parametrize(("content_type", "textual"), [
    ("text/html; charset=UTF-8", True), ("application/json", True), ("application/javascript", True),
    ("text/event-stream", True), ("application/vnd.api+json", True), ("image/svg+xml", True), ("", True),
    ("application/octet-stream", False), ("image/png", False), ("application/zip", False),
    ("application/x-ipynb+json", True), ("APPLICATION/JSON", True),
])
def test_only_answers_read_as_text_are_looked_into(content_type: str, textual: bool) -> None:
    assert is_textual(content_type) is textual


def test_the_page_token_stands_in_for_a_hex_hub_token_at_its_length() -> None:
    stand_in = page_token(LOCAL, HUB)
    assert len(stand_in) == len(HUB) and stand_in != HUB and LOCAL not in stand_in
    assert stand_in == page_token(LOCAL, HUB.upper())  # stable: the same for every token of the hub's length, so
    assert stand_in == page_token(LOCAL, "0" * len(HUB))  # a page loaded before a token is renewed keeps working
    assert page_token("another-local-token", HUB) != stand_in
    assert TokenSwap(HUB, stand_in).same_length


@pytest.mark.parametrize("hub", ["hub-token-for-tests", "a" * 23, "0" * 129, "8f14e45f-ceea-167a-5a36-dedd4bea2543"])
def test_other_hub_tokens_get_the_proxys_own_token(hub: str) -> None:
    """Too short to stand in for a secret, longer than the stand-ins, or not hex: the proxy's token, of its length."""
    assert page_token(LOCAL, hub) == LOCAL


@pytest.mark.parametrize(("values", "coding"), [
    ([], "identity"), ([""], "identity"), (["gzip"], "gzip"), (["GZIP "], "gzip"), (["gzip, identity"], "gzip"),
    (["identity", "deflate"], "deflate"), (["x-gzip"], "x-gzip"), (["gzip", "gzip"], None), (["gzip, br"], None),
    (["br"], None), (["zstd"], None),
])
def test_the_one_coding_an_answer_has_is_read_from_every_header(values: list[str], coding: str | None) -> None:
    assert content_coding(values) == coding
