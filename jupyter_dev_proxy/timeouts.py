"""Deadlines on awaits, the same on every Python the proxy supports.

``asyncio.timeout`` came with Python 3.11; on 3.10 the ``async_timeout`` package (which aiohttp itself
depends on there) does the same. Both raise ``asyncio.TimeoutError``, which on 3.10 is not the builtin
``TimeoutError``: code catches ``asyncio.TimeoutError``, which is right on both.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # pragma: no cover - exercised by CI's Python 3.10 run
    from async_timeout import timeout

__all__ = ["timeout"]
