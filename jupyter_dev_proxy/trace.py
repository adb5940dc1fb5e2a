"""The kernel-message trace (``--trace``): one log line per message on a kernel websocket — direction, channel,
``msg_type``, a short ``msg_id``, size — never the content. Only built when tracing is on: without it the relay
stays a byte relay.

Messages are read by ``kernel_messages.MessageReader``, which takes fields only from where the message puts them
and restricts them to ``[A-Za-z0-9_.:-]``: nothing logged here can carry user data or start a line of its own.
"""

from __future__ import annotations

import logging

from .kernel_messages import KernelMessage, MessageReader

log = logging.getLogger("jupyter_dev_proxy")


class MessageTrace:
    """One direction of one kernel websocket, logged message by message."""

    def __init__(self, direction: str, kernel: str) -> None:
        self._direction = direction
        self._kernel = kernel[:8]
        self._reader = MessageReader()

    def feed(self, data: bytes) -> None:
        """Note ``data`` as relayed; log each kernel message it completes."""
        for message in self._reader.feed(data):
            self.log(message)

    def log(self, message: KernelMessage) -> None:
        """One line for a message read elsewhere (the relay reads each message once, for its ledger too)."""
        if message.channel == message.msg_type == "?":
            log.info("trace %s kernel %s: a %d-byte frame that is not a kernel message", self._direction,
                     self._kernel, message.size)
        else:
            log.info("trace %s kernel %s %-7s %-22s %s %d bytes", self._direction, self._kernel, message.channel,
                     message.msg_type, message.msg_id[:8], message.size)
