"""The test kit's own hand-written wire formats agree with the real implementations: a fake hub built on them
speaks what a real peer speaks."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_dev_proxy.ws_relay import FrameTracker, control_frame
from tests.kit.frames import frame, read_frame
from tests.kit.kernel import decode_v1, encode_v1, execute_request


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
async def test_a_frame_written_by_the_kit_reads_back_whole_and_ends_where_the_relay_sees_its_end(
        size: int, masked: bool) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = frame(0x2, payload, masked)
    tracker = FrameTracker()
    tracker.feed(wire)
    assert tracker.at_boundary and tracker.last_boundary == len(wire)
    reader = asyncio.StreamReader()
    reader.feed_data(wire + control_frame(0x8, (1000).to_bytes(2, "big"), masked))
    assert await read_frame(reader) == (0x2, payload)
    assert await read_frame(reader) == (0x8, (1000).to_bytes(2, "big"))  # the relay's own frame, unmasked


def test_a_v1_message_survives_encoding_and_decoding() -> None:
    message = execute_request("1 + 1", "session-1")
    decoded = decode_v1(encode_v1("shell", message))
    assert decoded["channel"] == "shell" and decoded["buffers"] == []
    assert {k: decoded[k] for k in ("header", "parent_header", "metadata", "content")} == \
        {k: message[k] for k in ("header", "parent_header", "metadata", "content")}


@pytest.fixture
async def fixture_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def test_in_process_tests_and_their_fixtures_run_on_the_loop_pytest_was_asked_for(
        request: pytest.FixtureRequest, fixture_loop: asyncio.AbstractEventLoop) -> None:
    loop = asyncio.get_running_loop()
    assert fixture_loop is loop
    assert type(loop).__module__.startswith("uvloop") == (request.config.getoption("event_loop") == "uvloop")
