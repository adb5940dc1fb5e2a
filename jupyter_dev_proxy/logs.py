"""Logging: one format for the terminal, and no secret in any line — the proxy's, aiohttp's or asyncio's.

Redaction happens when a record is made (a record factory), not when a handler writes it, so every handler
sees the clean record: the terminal, a log file, a test's capture. It covers the records of libraries too:
aiohttp logs a failed request with its raw request line, ``?token=...`` included, and an exception's text may
quote headers. Two nets: patterns for where credentials sit in HTTP (``token=``, ``Authorization:``,
``Cookie:``, ``user:password@``), and the exact values of the secrets the proxy holds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

# Where credentials sit in the text of a request or an exception. The lookbehinds keep the name and drop
# the value; a value ends where a URL query, a header line or a quoted repr ends. A value after "token " or
# "Bearer " must look like one (8+ characters with a digit), so that prose ("the token in ...") stays readable.
_CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)(?<=token=)[^&\s'\"\\;,]+"),  # query parameters, the proxy's cookie
    re.compile(r"(?i)(?:(?<=\btoken )|(?<=\bbearer ))(?=[^\s'\"\\]*\d)[^\s'\"\\]{8,}"),  # Authorization: token …
    re.compile(r"(?i)(?<=\bbasic )(?=[A-Za-z0-9+/=]*[0-9+/=])[A-Za-z0-9+/=]{8,}"),  # Proxy-Authorization
    re.compile(r"(?i)(?<=authorization: )[^\r\n'\"\\]+"),
    re.compile(r"(?i)(?<=cookie: )[^\r\n'\"\\]+"),  # Cookie: and Set-Cookie:
    re.compile(r"(?<=://)[^/@\s'\"]+(?=@)"),  # user:password@ in a URL
)

_secrets: set[str] = set()
_formatter = logging.Formatter()


def redact(text: str) -> str:
    """``text`` with every credential it shows replaced by [redacted]."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed call; logging reports it itself when the record is written
        return
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact(_formatter.formatException(record.exc_info))
        # The traceback's text is kept (exc_text); without the exception, no formatter can render it again.
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def keep_secrets_out_of_logs(secrets: Iterable[str | None]) -> None:
    """From now on, redact ``secrets`` (and every credential pattern) from every log record in this process.

    Called by whatever holds a secret, as soon as it holds it; safe to call again with more.
    """
    _secrets.update(s for s in secrets if s and len(s) >= 4)  # a 1-3 character "secret" would blank out words
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return
    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _redact_record(record)
        return record
    redacting_factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)


def configure_logging(level: str) -> None:
    """The terminal's log: time, level, message; the access log (one line per request) only at debug."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
