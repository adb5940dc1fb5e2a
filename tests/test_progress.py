"""The terminal's progress bar while the hub starts the server."""

from __future__ import annotations

import pytest

from jupyter_dev_proxy.cli import progress_bar
from jupyter_dev_proxy.startup import Progress


@pytest.mark.parametrize("percent,message,expected", [
    (0, "Server requested", "[····················]   0% Server requested"),
    (50, "Spawning server...", "[##########··········]  50% Spawning server..."),
    (100, "Server ready", "[####################] 100% Server ready"),
    (None, "Pulling image", "[····················]      Pulling image"),
])
def test_the_terminal_progress_bar_shows_percent_and_message(percent: int | None, message: str,
                                                             expected: str) -> None:
    assert progress_bar(Progress(percent, message), 200) == expected


def test_the_terminal_progress_bar_fits_the_terminal() -> None:
    assert len(progress_bar(Progress(30, "x" * 500), 80)) == 79
