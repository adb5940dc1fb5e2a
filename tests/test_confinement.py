"""No request target, however encoded, reaches anything on the hub outside /user/alice/.

Targets are written to a raw socket: HTTP client libraries normalise '..' and encodings before sending,
which would hide exactly what is tested here.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from aiohttp import web

from tests.kit.rawhttp import RawAnswer, exchange, request_head
from tests.kit.settings import LOCAL_TOKEN, Proxy

REFUSED = [
    "/hub", "/hub/", "/hub/api", "/hub/api/users", "/hub/login", "/%68ub/api",
    "/user/bob/api/contents", "/user/bob", "/user/%62ob/api", "/user/alice/../bob/api",
    "/user/alicex/api", "/user/alice%2f..%2fbob/api",
    "/api/../hub/api", "/api/../../hub/api", "/api/./kernels", "/..", "/.",
    "/api/%2e%2e/%2e%2e/hub/api", "/api/%2E%2e/x", "/api/.%2e/x", "/api/%252e%252e/%252e%252e/hub",
    "/api/%25252e%25252e/hub", "/api%2f..%2f..%2fhub%2fapi", "/api%2F..", "//hub/api", "/api//kernels",
    "/api\\..\\..\\hub", "/api/%5c..%5c..%5chub", "/api/%00", "/api/%0d%0aX-Injected:%201", "/api/%ff",
    "http://evil.example/hub/api", "hub/api", "*",
]

# Odd but harmless: these stay inside alice's server and must arrive there (and only there).
INSIDE = ["/api/contents/a%20b.ipynb", "/files/%C3%A9t%C3%A9.txt", "/USER/bob/api", "/files/user/bob/x",
          "/api/contents/100%25.txt", "/user/alice", "/user/alice/", "/user/al%69ce/api/status",
          "/api/contents/..hidden", "/api/contents/x..y"]


async def _raw_get(proxy: Proxy, target: str) -> RawAnswer:
    assert proxy.url.port is not None
    return await exchange(proxy.url.port, request_head("GET", target, LOCAL_TOKEN, "Connection: close"))


@pytest.mark.parametrize("target", REFUSED)
async def test_targets_outside_the_users_server_never_leave_the_proxy(
        echo_proxy: Proxy, echo_seen: list[web.Request], target: str) -> None:
    answer = await _raw_get(echo_proxy, target)
    status, body = answer.status, answer.body
    assert status is not None and 400 <= status < 500, (status, body)
    if status != 400 or body.startswith(b"{"):  # aiohttp itself rejects some targets before the proxy sees them
        assert set(json.loads(body)) == {"message", "reason"}
    assert echo_seen == []


@pytest.mark.parametrize("target", INSIDE)
async def test_odd_but_confined_targets_arrive_under_the_users_prefix(
        echo_proxy: Proxy, echo_seen: list[web.Request], target: str) -> None:
    assert (await _raw_get(echo_proxy, target)).status == 200
    [arrived] = echo_seen
    decoded = arrived.raw_path
    for _ in range(3):
        decoded = unquote(decoded)
    assert arrived.raw_path.startswith("/user/alice/") or arrived.raw_path == "/user/alice"
    assert "/../" not in decoded + "/" and "\\" not in decoded
