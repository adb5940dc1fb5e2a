"""The hub token never leaves in an answer: where the server wrote it, the proxy's own token takes its place.

A user's server writes the token that authenticated a page into the page (JupyterHub's single-user extension puts
``hub_auth.get_token(handler)`` in JupyterLab's and Notebook 7's page config), and through the proxy that token is
the hub token it injected. A browser would then hold the credential the proxy exists to keep, and send it back,
which the proxy refuses as not its own. Swapping it for the proxy's token keeps it in the proxy and makes the page
work: its calls and websockets carry the proxy's token.

Pure: bytes in, bytes out. Only answers a browser reads as text are looked at (``is_textual``); the written forms
of the token are its raw bytes and, where they differ, its JSON-escaped, HTML-escaped and percent-encoded forms.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import zlib
from collections.abc import Iterator
from urllib.parse import quote

# Media types a page, a script or a program reads as text, where a server could have written a token. Everything
# else (images, archives, notebooks' binary outputs, octet-stream downloads) passes untouched, at no cost.
_TEXTUAL_TYPES = frozenset({
    "application/json", "application/javascript", "application/ecmascript", "application/x-javascript",
    "application/xml", "application/xhtml+xml", "application/x-www-form-urlencoded", "image/svg+xml",
})


@functools.lru_cache(maxsize=64)  # a server answers with a few types, again and again
def is_textual(content_type: str) -> bool:
    """Whether an answer of this Content-Type may carry text a browser reads (a missing type is sniffed by
    browsers, so it counts as text)."""
    media = content_type.partition(";")[0].strip().lower()
    return (not media or media.startswith("text/") or media in _TEXTUAL_TYPES
            or media.endswith(("+json", "+xml")))


def _written_forms(token: str) -> list[str]:
    """How a server may have written ``token``: as it is, JSON-escaped (with ``/`` as ``\\/`` too, as Tornado's
    json_encode does), HTML-escaped and percent-encoded. Hub tokens are hex, for which these are all one."""
    as_json = json.dumps(token)[1:-1]
    return [token, as_json, as_json.replace("/", "\\/"), html.escape(token), quote(token, safe="")]


class TokenSwap:
    """Replaces each written form of the hub token with the same form of the proxy's token."""

    def __init__(self, hub_token: str, local_token: str) -> None:
        replacements: dict[bytes, bytes] = {}
        for hub_form, local_form in zip(_written_forms(hub_token), _written_forms(local_token)):
            replacements.setdefault(hub_form.encode(), local_form.encode())
        self._replacements = replacements
        self._forms = tuple(replacements)
        self._text_forms = tuple(form.decode() for form in replacements)
        # No form is a prefix of another (they differ from the first character that is escaped), so at any
        # position at most one matches: the scan is the same whichever way the body is cut.
        self._pattern = re.compile(b"|".join(re.escape(form) for form in replacements))
        self._longest = max(map(len, replacements))
        self._first_bytes = frozenset(form[0] for form in replacements)
        self.same_length = all(len(hub) == len(local) for hub, local in replacements.items())

    def whole(self, body: bytes) -> tuple[bytes, bool]:
        """``body`` with every form of the hub token replaced, and whether there was any."""
        if not self.may_hold(body):
            return body, False
        if len(self._forms) == 1:  # a hex token is written the same in every form: a plain replace is 5× faster
            return body.replace(self._forms[0], self._replacements[self._forms[0]]), True
        swapped, count = self._pattern.subn(self._replace, body)
        return swapped, count > 0

    def may_hold(self, data: bytes, start: int = 0) -> bool:
        """Whether a whole form of the token is in ``data`` from ``start`` (a substring search: far cheaper than the
        pattern)."""
        for form in self._forms:
            if data.find(form, start) >= 0:
                return True
        return False

    def holds_text(self, text: str) -> bool:
        """Whether a form of the token is in ``text``: the headers of an answer, joined, are looked at once."""
        for form in self._text_forms:
            if form in text:
                return True
        return False

    def text(self, value: str) -> str:
        """A header value with every form of the hub token replaced."""
        if not self.holds_text(value):
            return value
        return self.whole(value.encode("utf-8", "surrogateescape"))[0].decode("utf-8", "surrogateescape")

    def stream(self) -> SwapStream:
        return SwapStream(self)

    def _replace(self, match: re.Match[bytes]) -> bytes:
        return self._replacements[match.group()]


# A part of a body as the stream gives it back: a view of the chunk where nothing changed (a large text is never
# copied), or the bytes that replace a token.
Piece = bytes | memoryview


class SwapStream:
    """The swap over a body that arrives in chunks: what each chunk makes certain is given back at once; only the
    bytes at its end that could begin a form of the token are held for the next one (so a progress stream's event
    is never held back, as it does not end in a token)."""

    def __init__(self, swap: TokenSwap) -> None:
        self._swap = swap
        self._held = b""
        self.found = False

    def feed(self, chunk: bytes) -> list[Piece]:
        out: list[Piece] = []
        start = 0
        held, self._held = self._held, b""
        if held:
            longest = self._swap._longest
            if len(chunk) < longest:
                return self._scan(held + chunk, 0, out)
            # A match that begins in the held bytes ends within the chunk's first bytes: it is looked for in those
            # alone, so that the chunk itself is never copied.
            window = held + chunk[:longest - 1]
            done = self._replace(window, 0, len(held), out)
            out.append(window[done:len(held)])
            start = max(done, len(held)) - len(held)
        return self._scan(chunk, start, out)

    def end(self) -> bytes:
        """What was held, swapped: the body has ended."""
        held, self._held = self._held, b""
        swapped, found = self._swap.whole(held)
        self.found = self.found or found
        return swapped

    def _scan(self, data: bytes, start: int, out: list[Piece]) -> list[Piece]:
        """``data`` from ``start`` swapped into ``out``, but for the bytes at its end that could begin a token."""
        # Every match that starts before `cut` lies wholly inside `data`, and is found as a scan of the whole body
        # would find it; what starts later is looked at again with the next chunk.
        cut = len(data) - self._swap._longest + 1
        done = self._replace(data, start, cut, out)
        keep_from = max(done, self._first_possible_start(data, max(done, cut)))
        out.append(memoryview(data)[done:keep_from])
        self._held = data[keep_from:]
        return out

    def _replace(self, data: bytes, start: int, limit: int, out: list[Piece]) -> int:
        """Put into ``out`` the part of ``data`` from ``start`` up to the last match that starts before ``limit``,
        each match replaced; the position it reached."""
        swap, done = self._swap, start
        if not swap.may_hold(data, start):
            return done
        view = memoryview(data)
        for match in swap._pattern.finditer(data, start):
            if match.start() >= limit:
                break
            out.append(view[done:match.start()])
            out.append(swap._replacements[match.group()])
            done = match.end()
            self.found = True
        return done

    def _first_possible_start(self, data: bytes, start: int) -> int:
        """The first position from ``start`` where a form of the token could begin (all of it, or a beginning cut
        off by the chunk's end); ``len(data)`` when there is none."""
        swap = self._swap
        for position in range(max(start, 0), len(data)):
            if data[position] in swap._first_bytes:
                rest = data[position:position + swap._longest]
                if any(form.startswith(rest) or rest.startswith(form) for form in swap._replacements):
                    return position
        return len(data)


# Content codings the proxy can undo to look into a text answer; the hub is asked for these only (routing).
UNDOABLE_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})

# At most this much is inflated from a compressed answer at a time, whatever it inflates to: constant memory.
_INFLATED_PIECE_BYTES = 256 * 1024


class BrokenBody(ValueError):
    """A compressed answer that does not inflate: corrupt, or cut short."""


class BodySwap:
    """The swap over an answer's body as it is sent, inflated first when it is compressed (gzip, or deflate's
    zlib stream): pieces of bounded size come out of each chunk that goes in."""

    def __init__(self, swap: TokenSwap, compressed: bool) -> None:
        self.swap = swap
        self.compressed = compressed
        self._swapping = swap.stream()
        self._inflating = _inflater() if compressed else None
        self._fed = False

    @property
    def found(self) -> bool:
        return self._swapping.found

    def again(self) -> BodySwap:
        """A new swap of the same kind, for the same body sent from its start."""
        return BodySwap(self.swap, self.compressed)

    def feed(self, chunk: bytes) -> Iterator[Piece]:
        if self._inflating is None:
            yield from self._swapping.feed(chunk)
            return
        data = chunk
        while data:
            self._fed = True
            try:
                piece = self._inflating.decompress(data, _INFLATED_PIECE_BYTES)
            except zlib.error as exc:
                raise BrokenBody(f"a compressed answer that does not inflate ({exc})") from None
            yield from self._swapping.feed(piece)
            data = self._inflating.unconsumed_tail
            if self._inflating.eof and self._inflating.unused_data:  # gzip members one after another (RFC 1952)
                data, self._inflating = self._inflating.unused_data, _inflater()

    def end(self) -> Iterator[bytes]:
        if self._inflating is not None and self._fed and not self._inflating.eof:
            raise BrokenBody("a compressed answer cut short")
        yield self._swapping.end()


def _inflater() -> zlib._Decompress:
    return zlib.decompressobj(32 + zlib.MAX_WBITS)  # 32 + 15: a gzip or a zlib header, whichever the body has


def content_coding(values: list[str]) -> str | None:
    """The one coding an answer's Content-Encoding headers apply ("identity" for none), or None when the proxy
    cannot undo them (several codings, or one it does not know)."""
    if not values:  # nearly every answer
        return "identity"
    codings = [coding for value in values for coding in (part.strip().lower() for part in value.split(","))
               if coding and coding != "identity"]
    if not codings:
        return "identity"
    return codings[0] if len(codings) == 1 and codings[0] in UNDOABLE_CODINGS else None


# A page token stands in for the hub token when the hub token is at least this long (a hex digit carries 4 bits:
# 96 bits) and no longer than the stand-ins one key makes.
_PAGE_TOKEN_LENGTHS = range(24, 129)
_PAGE_TOKEN_KEY = b"jupyter-dev-proxy page token"


@functools.lru_cache(maxsize=8)
def page_token(local_token: str, hub_token: str, profile: str | None = None) -> str:
    """The proxy's token as the server's pages get it, in the hub token's place.

    For a hub token of hex digits (JupyterHub's), a stand-in of the same length made from the proxy's token: every
    written form keeps its length, so a swapped answer keeps its Content-Length and a streamed one can be sent as
    the server sent it. The proxy accepts it as its own token; it tells nothing of the proxy's token, and it stays
    the same from run to run when JUPYTER_PROXY_TOKEN is set (cached pages keep working). With several profiles on
    one port each ``profile`` gets its own: a page of one profile must not open another's server, and every hub
    token has the same length. Any other hub token gets the proxy's own token."""
    hex_digits = "0123456789abcdefABCDEF"
    if len(hub_token) not in _PAGE_TOKEN_LENGTHS or hub_token.strip(hex_digits):
        return local_token
    made_from = local_token if profile is None else f"{local_token}\0{profile}"  # no profile name holds NUL
    stand_in = hashlib.blake2b(made_from.encode("utf-8", "surrogatepass"), key=_PAGE_TOKEN_KEY,
                               digest_size=64).hexdigest()
    return stand_in[:len(hub_token)]


@functools.lru_cache(maxsize=8)  # the hub token changes rarely (a sign-in, a renewed token file)
def token_swap(hub_token: str, local_token: str) -> TokenSwap:
    return TokenSwap(hub_token, local_token)
