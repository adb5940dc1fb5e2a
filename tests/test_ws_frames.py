"""The websocket relay's frame bookkeeping: it must know every frame boundary however reads cut the stream."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_dev_proxy.ws_frames import FrameTracker, control_frame
from tests.kit.frames import frame as _frame

_DATA_OPCODES = (0x0, 0x1, 0x2)  # continuation, text, binary


_frames = st.lists(st.one_of(
    st.tuples(st.sampled_from(_DATA_OPCODES), st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000])),
    st.tuples(st.sampled_from([0x9, 0xA]), st.integers(0, 125)),  # ping, pong
), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(frames=_frames, masked=st.booleans(), cuts=st.lists(st.integers(0, 400_000), max_size=30),
       close_at_end=st.booleans())
def test_boundaries_closes_and_pings_are_found_however_the_stream_is_cut(
        frames: list[tuple[int, int]], masked: bool, cuts: list[int], close_at_end: bool) -> None:
    wire, ends, pings = b"", {0}, []
    for opcode, size in frames:
        payload = os.urandom(size)
        wire += _frame(opcode, payload, masked)
        ends.add(len(wire))
        if opcode == 0x9 and not masked:
            pings.append(payload)
    if close_at_end:
        wire += control_frame(0x8, (1000).to_bytes(2, "big"), masked)
        ends.add(len(wire))
    tracker, seen_pings, position = FrameTracker(), [], 0
    for cut in sorted({c for c in cuts if c < len(wire)} | {len(wire)}):
        seen_pings += tracker.feed(wire[position:cut])
        position = cut
        assert tracker.at_boundary == (position in ends), position
        assert tracker.closed == (close_at_end and position == len(wire))
    assert seen_pings == pings


def test_a_control_frame_cut_in_two_is_waited_for_whole() -> None:
    ping = control_frame(0x9, b"are you there?", masked=False)
    tracker = FrameTracker()
    assert tracker.feed(ping[:5]) == [] and not tracker.at_boundary
    assert tracker.feed(ping[5:]) == [b"are you there?"] and tracker.at_boundary


def test_masked_control_frames_carry_their_payload_masked() -> None:
    frame = control_frame(0x8, b"\x03\xe9bye", masked=True)
    assert frame[0] == 0x88 and frame[1] == 0x80 | 5
    key, masked_payload = frame[2:6], frame[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked_payload)) == b"\x03\xe9bye"


@settings(max_examples=300, deadline=None)
@given(frames=_frames, masked=st.booleans(), cuts=st.lists(st.integers(0, 400_000), max_size=30))
def test_the_last_boundary_in_each_read_is_where_a_frame_ended(
        frames: list[tuple[int, int]], masked: bool, cuts: list[int]) -> None:
    wire, ends = b"", set()
    for opcode, size in frames:
        wire += _frame(opcode, os.urandom(size), masked)
        ends.add(len(wire))
    tracker, position = FrameTracker(), 0
    for cut in sorted({c for c in cuts if 0 < c < len(wire)} | {len(wire)}):
        tracker.feed(wire[position:cut])
        inside = [end - position for end in ends if position < end <= cut]
        assert tracker.last_boundary == (max(inside) if inside else -1), (position, cut)
        position = cut


def test_the_ides_masked_pings_are_found_unmasked_when_asked_for() -> None:
    ping = control_frame(0x9, b"still there?", masked=True)
    assert FrameTracker().feed(ping) == []  # by default only the hub's pings are answered
    tracker = FrameTracker(masked_pings=True)
    assert tracker.feed(ping[:7]) == [] and tracker.feed(ping[7:]) == [b"still there?"]
    assert tracker.feed(control_frame(0x9, b"hub", masked=False)) == []


def test_a_boundary_followed_by_one_byte_of_the_next_frame_is_found() -> None:
    first, second = _frame(0x2, b"x" * 10, masked=True), _frame(0x2, b"y", masked=True)
    tracker = FrameTracker()
    tracker.feed(first + second[:1])
    assert tracker.last_boundary == len(first) and not tracker.at_boundary


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(st.tuples(st.lists(st.integers(0, 70_000), min_size=1, max_size=4), st.booleans()),
                         min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 300_000), max_size=30))
def test_message_boundaries_skip_fragments_and_the_pings_between_them(
        messages: list[tuple[list[int], bool]], cuts: list[int]) -> None:
    """Where a whole message ends is what the relay replays from after a break and where it may put a message of
    its own; a ping between two fragments is not such a place (the attack review's fragmented-message breaks)."""
    wire, message_ends = b"", {0}
    for sizes, ping_between in messages:
        for index, size in enumerate(sizes):
            wire += _frame(0x2 if index == 0 else 0x0, os.urandom(size), masked=False, fin=index == len(sizes) - 1)
            if ping_between and index < len(sizes) - 1:
                wire += control_frame(0x9, b"ping", masked=False)
        message_ends.add(len(wire))
    tracker, position, seen = FrameTracker(), 0, {0}
    for cut in sorted({c for c in cuts if c < len(wire)} | {len(wire)}):
        tracker.feed(wire[position:cut])
        if tracker.last_message_boundary >= 0:
            seen.add(position + tracker.last_message_boundary)
        assert tracker.at_message_boundary == (cut in message_ends)
        position = cut
    assert seen <= message_ends and len(wire) in seen
