"""A token from the hub's login is renewed before it expires, by a new sign-in in the browser, and swapped in while
a kernel runs: against a real JupyterHub whose OAuth tokens last 40 seconds (the proxy asks halfway)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.hub import Hub, module_hub, require_real_servers
from tests.kit.ide import ide_session, start_session
from tests.kit.kernel import KERNEL_PROTOCOL, KernelChannel, result_text
from tests.kit.process import ProxyProcess, run_proxy
from tests.test_signin import _assert_a_second_sign_in_replaced, _kept, _sign_in_env

pytestmark = [pytest.mark.hub, pytest.mark.waits, pytest.mark.timeout(240)]

require_real_servers()
TOKEN_SECONDS = 40
hub = module_hub(oauth_token_seconds=TOKEN_SECONDS)


async def test_a_token_about_to_expire_is_renewed_by_a_sign_in_and_swapped_while_the_kernel_runs(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    proxy = run_proxy(proxies, _sign_in_env(hub, tmp_path))
    url, local = proxy.wait_for_banner()
    first = _kept(tmp_path)[hub.address]["alice"]
    async with ide_session(url, local) as ide:
        ids = await start_session(ide, "renewal.ipynb")
        async with ide.ws_connect(f"/api/kernels/{ids['kernel']}/channels?session_id={ids['session']}",
                                  protocols=(KERNEL_PROTOCOL,)) as ws:
            kernel = KernelChannel(ws, ids["session"])
            assert result_text(await kernel.execute("x = 41; x")) == "41"
            proxy.wait_for(r"The hub token expires in .*: sign in to the hub in your browser", timeout=TOKEN_SECONDS)
            proxy.wait_for("A new hub token from your sign-in is in use", timeout=30)
            assert result_text(await kernel.execute("x + 1")) == "42"  # the same kernel, on the same websocket
        async with ide.get("/api/contents") as response:
            assert response.status == 200
    _assert_a_second_sign_in_replaced(first, hub, tmp_path, proxy)
