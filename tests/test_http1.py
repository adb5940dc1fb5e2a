"""The one reader of HTTP/1 answer heads (CONNECT answers, websocket handshake answers, the doctor's probe)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_dev_proxy.http1 import MAX_HEAD_BYTES, HeadTooLong, parse_answer_head, take_head


def test_a_head_is_taken_whole_once_its_blank_line_came_and_what_follows_stays() -> None:
    buffer = bytearray(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
    assert take_head(buffer) is None
    buffer += b"\r\n\x81\x02hi"
    assert take_head(buffer) == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert buffer == b"\x81\x02hi"


def test_a_head_without_end_past_the_limit_is_refused() -> None:
    with pytest.raises(HeadTooLong):
        take_head(bytearray(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6 + 1)))


def test_status_reason_and_headers_are_read() -> None:
    answer = parse_answer_head(b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
    assert answer is not None
    assert (answer.status, answer.reason, answer.headers["proxy-authenticate"]) == (407, "Proxy Authentication "
                                                                                          "Required", "Basic")


@pytest.mark.parametrize("head", [b"", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n"])
def test_what_is_not_an_http1_answer_is_none(head: bytes) -> None:
    assert parse_answer_head(head) is None


@given(st.binary(max_size=300))
def test_any_bytes_give_an_answer_or_none_never_an_error(data: bytes) -> None:
    parse_answer_head(data)
    buffer = bytearray(data)
    head = take_head(buffer)
    assert head is None or data.startswith(head)
