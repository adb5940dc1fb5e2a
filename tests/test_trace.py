"""The kernel-message trace logs what names a message, never what it carries (review #12)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from jupyter_dev_proxy.trace import MessageTrace

_KERNEL = "5f0c1a2b-0000-4000-8000-000000000000"


def _text_frame(message: dict[str, Any]) -> bytes:
    """A legacy JSON message as the hub sends it: one unmasked text frame."""
    payload = json.dumps(message).encode()
    if len(payload) < 1 << 16:
        return bytes((0x81, 126)) + len(payload).to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + len(payload).to_bytes(8, "big") + payload


def _from_jupyter_server(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """jupyter_server's key order: header first, channel last."""
    header = {"msg_id": "0c9d8e7f-1c2b3a4d5e6f7081_6218_12", "msg_type": msg_type, "username": "alice",
              "session": "0c9d8e7f-1c2b3a4d5e6f7081", "date": "2026-12-02T09:00:00Z", "version": "5.3"}
    return {"header": header, "msg_id": header["msg_id"], "msg_type": msg_type,
            "parent_header": {"msg_id": "9a1b2c3d", "msg_type": "execute_request"}, "metadata": {},
            "content": content, "buffers": [], "channel": "iopub"}


def _traced(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("trace ")]


def test_a_large_json_message_with_a_channel_key_in_its_content_logs_no_user_content(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jupyter_dev_proxy")
    user_data = {"channel": "xoxb-SLACK-BOT-TOKEN-from-the-users-output", "rows": "x" * 1_200_000}
    message = _from_jupyter_server("display_data", {"data": {"application/json": user_data}})
    MessageTrace("hub → IDE", _KERNEL).feed(_text_frame(message))
    assert not [r for r in caplog.records if "xoxb" in r.getMessage()]
    assert _traced(caplog) == [
        f"trace hub → IDE kernel 5f0c1a2b iopub   display_data           0c9d8e7f {len(json.dumps(message))} bytes"]


def test_a_msg_type_with_a_newline_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jupyter_dev_proxy")
    forged = "status\ntrace hub → IDE kernel 5f0c1a2b shell   execute_reply          2b3c4d5e 448 bytes"
    message = _from_jupyter_server(forged, {"execution_state": "idle"})
    MessageTrace("hub → IDE", _KERNEL).feed(_text_frame(message))
    lines = [line for record in caplog.records for line in record.getMessage().splitlines()]
    assert not [line for line in lines if "execute_reply" in line], lines
    assert _traced(caplog) == [f"trace hub → IDE kernel 5f0c1a2b iopub   ?                      0c9d8e7f "
                               f"{len(json.dumps(message))} bytes"]


def test_a_frame_that_is_not_a_kernel_message_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jupyter_dev_proxy")
    MessageTrace("IDE → hub", _KERNEL).feed(bytes((0x82, 5)) + b"hello")
    assert _traced(caplog) == ["trace IDE → hub kernel 5f0c1a2b: a 5-byte frame that is not a kernel message"]
