"""Tokens: their expiry said in words and warned of ahead, and the file they are kept in."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from yarl import URL

from jupyter_dev_proxy.address import HubAddress
from jupyter_dev_proxy.tokens import ExpiryWarnings, TokenStore, describe_expiry


_NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("left,words", [
    (timedelta(days=6, hours=3), "expires in 6 days"), (timedelta(hours=1, minutes=5), "expires in 1 hour"),
    (timedelta(minutes=3), "expires in 3 minutes"), (timedelta(seconds=20), "expires in less than a minute"),
    (timedelta(seconds=-5), "expired on"),
])
def test_the_expiry_is_said_in_the_largest_whole_unit(left: timedelta, words: str) -> None:
    assert describe_expiry(_NOW + left, _NOW).startswith(words)
    assert describe_expiry(None, _NOW) == "does not expire"


@pytest.mark.parametrize("left,at_once,later", [
    (timedelta(days=3), 0, [timedelta(days=2), timedelta(days=2, hours=23)]),
    (timedelta(hours=5), 1, [timedelta(hours=4)]),
    (timedelta(minutes=30), 1, []),
])
async def test_warnings_come_a_day_and_an_hour_ahead_and_at_once_when_close(
        caplog: pytest.LogCaptureFixture, left: timedelta, at_once: int, later: list[timedelta]) -> None:
    warnings = ExpiryWarnings("https://hub/hub/token", clock=lambda: _NOW)
    warnings.schedule(_NOW + left)
    said = [r for r in caplog.records if "The hub token expires" in r.getMessage()]
    assert len(said) == at_once
    loop = asyncio.get_running_loop()
    assert sorted(timer.when() - loop.time() for timer in warnings._timers) == pytest.approx(
        [delay.total_seconds() for delay in later], abs=1)
    warnings.cancel()


@pytest.mark.parametrize("left,asked_after", [
    (timedelta(days=14), timedelta(days=13, hours=23)),  # an hour ahead
    (timedelta(hours=3), timedelta(hours=2)),
    (timedelta(minutes=30), timedelta(minutes=15)),  # halfway: a fresh short-lived token asks nothing at once
    (timedelta(seconds=-5), None),  # expired: the hub's refusal starts the sign-in
])
async def test_where_signing_in_renews_the_token_one_sign_in_is_asked_ahead_and_never_at_once(
        caplog: pytest.LogCaptureFixture, left: timedelta, asked_after: timedelta | None) -> None:
    asked: list[str] = []
    warnings = ExpiryWarnings("https://hub/hub/token", clock=lambda: _NOW,
                              sign_in=lambda why: asked.append(why) or "sign in")
    warnings.schedule(_NOW + left)
    assert asked == [] and not [r for r in caplog.records if "The hub token" in r.getMessage()]
    loop = asyncio.get_running_loop()
    assert [timer.when() - loop.time() for timer in warnings._timers] == pytest.approx(
        [asked_after.total_seconds()] if asked_after else [], abs=1)
    if asked_after:
        warnings._ask_to_sign_in(_NOW + left)  # what the timer runs when the moment comes
        assert asked == [f"The hub token {describe_expiry(_NOW + left, _NOW)}"]
    warnings.cancel()


def test_the_token_file_is_kept_readable_by_the_user_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "config" / "tokens.json")
    store._keyring = None  # the file, whatever keyring this machine has
    hub = HubAddress(URL("https://hub.example.org"), "/jupyter/")
    store.save(hub, "alice", "t-1")
    assert (tmp_path / "config" / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert store.find(hub, "") == ("alice", "t-1") and store.find(hub, "bob") is None
    assert store.forget(hub, "alice") and store.find(hub, "alice") is None and not store.forget(hub, "alice")
