"""A hub reached moments ago that now gives no answer at all (a VPN that dropped: SYNs vanish): the IDE waits one
connect timeout, not four (found by the attack review)."""
from __future__ import annotations

import asyncio
import socket
import time


from jupyter_dev_proxy import transport
from tests.kit.settings import make_settings


async def test_a_blackholed_hub_fails_a_request_within_about_one_connect_timeout(start_proxy, monkeypatch) -> None:
    monkeypatch.setattr(transport, "CONNECT_TIMEOUT_SECONDS", 1.0)  # 15 s in production
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: later SYNs are dropped, as on a dead VPN
        s = socket.socket(); s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    await asyncio.sleep(0.2)
    from aiohttp import web
    import aiohttp
    from jupyter_dev_proxy.app import ProxyRunner
    from tests.kit.settings import LOCAL_TOKEN
    runner = ProxyRunner(make_settings(f"http://127.0.0.1:{port}", keep_warm_minutes=0))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hub_transport = runner._transport
    # The hub was reached a moment ago (its last answer), then the link went dark.
    hub_transport.last_reached = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession(headers={"Authorization": f"token {LOCAL_TOKEN}"}) as ide:
        started = time.monotonic()
        async with ide.put(f"http://127.0.0.1:{runner.addresses[0][1]}/api/contents/x.ipynb", data=b"{}") as r:
            took = time.monotonic() - started
            print("status", r.status, (await r.text())[:120], "after", round(took, 2), "s")
    await runner.cleanup()
    listener.close()
    for s in fillers:
        s.close()
    assert took < 2.5, took
