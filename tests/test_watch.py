"""The watch of a stopped server: said once (the funnel answers 424), a failed restart not retried on every poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jupyter_dev_proxy import watch as watch_module
from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.errors import ServerNotRunning, json_error
from jupyter_dev_proxy.hubapi import HubError
from jupyter_dev_proxy.tokens import credential_for
from tests.kit.settings import LOCAL_TOKEN, make_settings


async def test_a_failed_restart_is_logged_and_not_retried_on_every_poll(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[str] = []

    async def failing_start(*args: object) -> None:
        attempts.append("start")
        raise HubError("The hub could not start your default server: no capacity.")

    monkeypatch.setattr(watch_module, "start_server", failing_start)
    settings = make_settings("https://hub", None, "hub", start_server="always")
    watch = watch_module.ServerWatch(settings, "6.1.1", credential_for(settings))

    first = json_error(watch.not_running(ServerNotRunning("not running")))
    assert first.status == 424 and b"starting it again" in first.body  # type: ignore[attr-defined]
    while watch._starting is not None:
        await asyncio.sleep(0.01)
    for _ in range(3):  # the IDE keeps polling
        again = json_error(watch.not_running(ServerNotRunning("not running")))
        assert again.status == 424 and b"could not start it again" in again.body  # type: ignore[attr-defined]
    assert attempts == ["start"]
    assert [r.getMessage() for r in caplog.records if "has stopped" in r.getMessage()] != []
    assert any("Could not start your default server again: The hub could not start" in r.getMessage()
               for r in caplog.records)


async def test_a_stopped_server_is_answered_424_by_the_funnel_and_said_once_in_the_log(
        aiohttp_server: Callable[..., Awaitable[Any]], caplog: pytest.LogCaptureFixture) -> None:
    async def stopped(request: web.Request) -> web.StreamResponse:  # the hub's redirect to its placeholder
        return web.Response(status=302, headers={"Location": "/hub/user/alice/api/status"})

    app = web.Application()
    app.router.add_get("/user/alice/api/status", stopped)
    hub = await aiohttp_server(app)
    settings = make_settings(f"http://127.0.0.1:{hub.port}", keep_warm_minutes=0)
    runner = ProxyRunner(settings, watch_module.ServerWatch(settings, "5.2.1", credential_for(settings)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"token {LOCAL_TOKEN}"}) as ide:
            for _ in range(3):  # the IDE polls
                async with ide.get(f"http://127.0.0.1:{runner.addresses[0][1]}/api/status") as response:
                    assert response.status == 424
                    assert (await response.json())["reason"] == "server-not-running"
    finally:
        await runner.cleanup()
    said = [r.getMessage() for r in caplog.records if r.name == "jupyter_dev_proxy" and r.levelno >= logging.WARNING]
    assert len(said) == 1 and "has stopped" in said[0], said
