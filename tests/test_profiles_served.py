"""One proxy serving several profiles at once, each under /<profile>/ (front.py): the pure prefixing of what a
profile writes back, and the front in this event loop in front of the echo upstream and a real Jupyter server —
the cut path reaches the profile's server byte for byte, confinement holds per profile, websockets go through.
The whole proxy process against a real JupyterHub is in test_profiles_hub.py."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDict

from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.demo import DemoServer, free_port
from jupyter_dev_proxy.front import (FrontRunner, ProfileSlot, prefix_answer_headers, prefixed_location,
                                     prefixed_set_cookie, split_profile)
from tests.kit.env import clean_env
from tests.kit.ide import ide_session, new_notebook, start_session, whole_lifecycle
from tests.kit.process import PROXY, ProxyProcess, run_proxy
from tests.kit.rawhttp import exchange, request_head
from tests.kit.settings import LOCAL_TOKEN, make_settings


@pytest.mark.parametrize(("location", "expected"), [
    ("/tree?x=1", "/gpu/tree?x=1"),
    ("/", "/gpu/"),
    ("/api/contents/a%20b.ipynb", "/gpu/api/contents/a%20b.ipynb"),
    ("relative/path", "relative/path"),  # resolves the same under the prefix
    ("https://hub.example.org/hub/home", "https://hub.example.org/hub/home"),  # the hub's page, on purpose
    ("//evil.example/x", "//evil.example/x"),
    ("/\\evil.example/x", "/\\evil.example/x"),
])
def test_a_profiles_redirect_to_a_path_of_its_own_gets_the_profiles_prefix(location: str, expected: str) -> None:
    assert prefixed_location(location, "/gpu") == expected


@pytest.mark.parametrize(("cookie", "expected"), [
    ("_xsrf=abc; Path=/; HttpOnly", "_xsrf=abc; Path=/gpu/; HttpOnly"),
    ("own=1; path=/api; HttpOnly", "own=1; path=/gpu/api; HttpOnly"),
    ("plain=1", "plain=1"),  # no Path: the browser takes the request's, under the prefix already
    ("jupyter-dev-proxy-session=s; Path=/; HttpOnly; SameSite=Strict",
     "jupyter-dev-proxy-session=s; Path=/; HttpOnly; SameSite=Strict"),  # one browser session for every profile
])
def test_a_profiles_cookie_path_gets_the_profiles_prefix_but_the_proxys_session_stays_at_the_root(
        cookie: str, expected: str) -> None:
    assert prefixed_set_cookie(cookie, "/gpu") == expected


def test_every_location_and_cookie_of_an_answer_is_prefixed_and_other_headers_are_left_alone() -> None:
    headers = CIMultiDict([("Location", "/tree"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/api"),
                           ("Content-Type", "text/html")])
    prefix_answer_headers(headers, "/main")
    assert list(headers.items()) == [("Location", "/main/tree"), ("Content-Type", "text/html"),
                                     ("Set-Cookie", "a=1; Path=/main/"), ("Set-Cookie", "b=2; Path=/main/api")]


@pytest.mark.parametrize(("raw", "expected"), [
    ("/gpu/api/x?y=1", ("gpu", "/api/x?y=1")),
    ("/gpu/", ("gpu", "/")),
    ("/gpu?token=t", ("gpu", None)),
    ("/gpu%2F../api", ("gpu%2F..", "/api")),  # never decoded: no profile is named so
    ("/", ("", None)),
    ("/gpu/a%2Fb/../c?", ("gpu", "/a%2Fb/../c?")),  # the rest byte for byte, a bare ? too
])
def test_the_first_raw_segment_names_the_profile_and_the_rest_is_kept_byte_for_byte(
        raw: str, expected: tuple[str, str | None]) -> None:
    assert split_profile(raw) == expected


Front = Callable[[dict[str, Settings]], Awaitable[FrontRunner]]


@pytest.fixture
async def start_front() -> AsyncIterator[Front]:
    """A front in this event loop with a runner per profile, as the CLI builds it (every profile with the shared
    local token); ``front.port`` is where it listens."""
    fronts: list[FrontRunner] = []

    async def start(profiles: dict[str, Settings]) -> FrontRunner:
        slots = {}
        for name, settings in profiles.items():
            settings = replace(settings, profile=name)
            runner = ProxyRunner(settings)
            await runner.setup()
            slots[name] = ProfileSlot(name, settings, runner)
        front = FrontRunner(next(iter(profiles.values())), slots)
        await front.setup()
        fronts.append(front)
        await web.TCPSite(front, "127.0.0.1", 0).start()
        front.port = front.addresses[0][1]
        return front

    yield start
    for front in fronts:
        if front.server is not None:  # not cleaned up by the test itself
            await front.cleanup()


@pytest.fixture
def echo_settings(echo_upstream: Any, tls_ca: tuple[trustme.CA, Path]) -> Callable[..., Settings]:
    return lambda **kwargs: make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub",
                                          **kwargs)


async def get(front: FrontRunner, target: str, token: str | None = LOCAL_TOKEN) -> Any:
    return await exchange(front.port, request_head("GET", target, token, "Connection: close",
                                                   host=f"127.0.0.1:{front.port}"))


async def test_each_profile_reaches_its_own_server_with_the_rest_of_the_path_byte_for_byte(
        start_front: Front, echo_settings: Callable[..., Settings]) -> None:
    front = await start_front({"main": echo_settings(), "bob": echo_settings(user="bob"),
                               "gpu": echo_settings(server="gpu")})
    for target, reached in [(f"/main/api/x%20y?q=1&token={LOCAL_TOKEN}", "/user/alice/api/x%20y?q=1"),
                            ("/bob/api/contents?", "/user/bob/api/contents"),
                            ("/gpu/api/kernels", "/user/alice/gpu/api/kernels"),
                            ("/user/bob/api/absolute", "/user/bob/api/absolute"),  # an address a server handed out
                            ("/user/alice/gpu/api/k", "/user/alice/gpu/api/k"),  # the named server's, not main's
                            ("/user/alice/api/k", "/user/alice/api/k")]:
        answer = await get(front, target)
        assert answer.status == 200, (target, answer.body)
        assert answer.json()["raw_path"] == reached, target


@pytest.mark.parametrize("target", [
    "/main/../bob/api/status", "/main/%2e%2e/bob/api/status", "/main/%2E%2E%2Fbob/api/status",
    "/main%2F..%2Fbob/api/status", "/main/..%2fbob/api/status", "/main/%252e%252e/bob/api/status",
    "/main/user/bob/api/status", "/main/gpu/api/status", "/main/g%70u/api/status", "/main/user/alice/gpu/api",
    "/main//bob/api/status", "/main/./../bob/api", "/gpu/../api/status", "/bob/../main/api/status",
    "/main/hub/api/users", "/Main/api/status", "/main%2fapi/status",
])
async def test_nothing_under_one_profiles_path_reaches_another_profiles_server(
        start_front: Front, echo_settings: Callable[..., Settings], echo_seen: list[web.Request],
        target: str) -> None:
    front = await start_front({"main": echo_settings(), "bob": echo_settings(user="bob"),
                               "gpu": echo_settings(server="gpu")})
    first = target.split("/")[1]
    answer = await get(front, target)
    assert answer.status is not None and answer.status >= 400, (target, answer.status, answer.body)
    assert set(answer.json()) == {"message", "reason"}
    crossed = [seen.raw_path for seen in echo_seen
               if not (first == "main" and seen.raw_path.startswith("/user/alice/")
                       and not seen.raw_path.startswith("/user/alice/gpu/"))]
    assert crossed == []


async def test_an_unknown_first_segment_is_a_jupyter_404_naming_the_profiles_and_the_root_leads_to_the_status_page(
        start_front: Front, echo_settings: Callable[..., Settings], echo_seen: list[web.Request]) -> None:
    front = await start_front({"main": echo_settings(), "gpu": echo_settings(server="gpu")})
    answer = await get(front, "/api/kernels")
    assert answer.status == 404 and answer.json()["reason"] == "no-such-profile"
    assert "/main/, /gpu/" in answer.json()["message"]
    assert (await get(front, "/api/kernels", token=None)).status == 403  # not even the names without the token
    root = await get(front, "/?token=" + LOCAL_TOKEN)
    assert root.status == 307 and root.headers["Location"] == "/jupyter-dev-proxy/"  # never the token
    assert "jupyter-dev-proxy-session=" in root.headers["Set-Cookie"]
    bare = await get(front, "/gpu?x=1&token=" + LOCAL_TOKEN)
    assert bare.status == 307 and bare.headers["Location"] == "/gpu/?x=1"
    assert echo_seen == []


async def test_the_status_page_at_the_root_lists_every_profile_with_its_hub_server_and_state(
        start_front: Front, echo_settings: Callable[..., Settings]) -> None:
    front = await start_front({"main": echo_settings(), "gpu": echo_settings(server="gpu")})
    front.slots["down"] = ProfileSlot("down", echo_settings(user="carol"), failure="The hub at x is down.")
    answer = await get(front, "/jupyter-dev-proxy/api/status")
    assert answer.status == 200
    profiles = {entry["name"]: entry for entry in answer.json()["profiles"]}
    assert profiles["main"]["ide_url"] == f"http://127.0.0.1:{front.port}/main/"
    assert profiles["gpu"]["server"] == "named server 'gpu'" and profiles["gpu"]["kernels"] == 0
    assert profiles["down"]["state"] == "not serving" and profiles["down"]["failure"] == "The hub at x is down."
    page = await get(front, "/jupyter-dev-proxy/")
    assert page.status == 200 and b"The hub at x is down." in page.body and LOCAL_TOKEN.encode() not in page.body
    down = await get(front, "/down/api/status")
    assert down.status == 503 and down.json() == {"reason": "profile-not-serving", "message": (
        "The profile 'down' is not served: The hub at x is down. Then restart the proxy.")}


async def test_a_profiles_redirects_and_cookies_come_back_under_its_prefix(
        start_front: Front, echo_settings: Callable[..., Settings]) -> None:
    front = await start_front({"main": echo_settings(), "gpu": echo_settings(server="gpu")})
    answer = await get(front, "/main/redirect?to=/user/alice/tree%3Fx%3D1")
    assert answer.status == 302 and answer.headers["Location"] == "/main/tree?x=1"
    cookies = await get(front, "/main/cookies")
    assert cookies.headers.getall("Set-Cookie") == ["own=1; Path=/main/api; HttpOnly", "root=3; Path=/main/"]


async def test_the_ides_whole_lifecycle_with_kernel_websockets_goes_through_a_profiles_path(
        start_front: Front, jupyter_upstream: DemoServer, echo_settings: Callable[..., Settings]) -> None:
    jupyter = make_settings(jupyter_upstream.url, jupyter_upstream.ca_file, jupyter_upstream.tls_name,
                            hub_token=jupyter_upstream.token)
    front = await start_front({"echo": echo_settings(user="bob"), "lab": jupyter})
    await whole_lifecycle(f"http://127.0.0.1:{front.port}/lab/", LOCAL_TOKEN)
    async with ide_session(f"http://127.0.0.1:{front.port}/lab/", LOCAL_TOKEN) as client:
        async with client.get("api/kernels") as response:
            assert response.status == 200


async def test_stopping_the_front_closes_every_profiles_kernel_websockets_with_1001(
        start_front: Front, jupyter_upstream: DemoServer) -> None:
    front = await start_front({"lab": make_settings(jupyter_upstream.url, jupyter_upstream.ca_file,
                                                    jupyter_upstream.tls_name, hub_token=jupyter_upstream.token)})
    async with ide_session(f"http://127.0.0.1:{front.port}/lab/", LOCAL_TOKEN) as client:
        ids = await start_session(client, await new_notebook(client))
        async with client.ws_connect(f"api/kernels/{ids['kernel']}/channels?session_id={ids['session']}") as ws:
            stopping = asyncio.ensure_future(front.cleanup())  # it waits for the relay, which waits for this IDE
            message = await ws.receive(timeout=10)
            while message.type is aiohttp.WSMsgType.TEXT:  # the kernel's status, said before the front stopped
                message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        await asyncio.wait_for(stopping, 10)


LAB_AND_DOWN = """
[profiles.lab]
hub-url = "{url}"
ca-cert = "{ca}"
tls-name = "{tls_name}"
username = "{user}"
hub-token-file = "{token_file}"

[profiles.down]
hub-url = "https://127.0.0.1:{down_port}"
hub-token-file = "{token_file}"
"""


ON_A_FREE_PORT = '\n[defaults]\nlisten-port = "0"\nlisten-host = "127.0.0.1"\n'  # to add to a profiles file


def lab_and_down_file(upstream: DemoServer, tmp_path: Path, down_port: int, more: str = "") -> Path:
    """A profiles file (and its token file) in ``tmp_path``: ``lab``, the real server ``upstream``, and ``down``, a
    hub at ``down_port`` on this machine; ``more`` appended."""
    token_file, config = tmp_path / "token", tmp_path / "config.toml"
    token_file.write_text(upstream.token)
    config.write_text(LAB_AND_DOWN.format(url=upstream.url, ca=upstream.ca_file, tls_name=upstream.tls_name,
                                          user=upstream.username, token_file=token_file, down_port=down_port) + more)
    return config


async def test_python_proxy_py_with_a_profiles_file_serves_its_profiles_names_them_in_its_log_and_stops_with_1001(
        proxies: list[ProxyProcess], jupyter_upstream: DemoServer, tmp_path: Path) -> None:
    config = lab_and_down_file(jupyter_upstream, tmp_path, free_port())
    proxy = run_proxy(proxies, clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), JUPYTER_DEV_PROXY_CONFIG=str(config),
                                         PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
                                         JUPYTER_PROXY_PORT="0", JUPYTER_PROXY_IP_OR_NAME="127.0.0.1"))
    proxy.wait_for(r"Status page: ")
    lab = re.search(r"IDE URL for lab: (http://\S+/)\?token=(\S+)  alice's default server", proxy.output)
    assert lab is not None, proxy.output
    url, token = lab.groups()
    # Each log line about a profile, from its start or from a request to it, names the profile.
    assert re.search(r"INFO lab: https://\S+ is a plain Jupyter server", proxy.output)
    proxy.url, proxy.token = url.removesuffix("lab/"), token
    assert proxy.get("/lab/%2e%2e/x")[0] == 400
    proxy.wait_for(r"WARNING lab: GET /%2e%2e/x → 400 bad-path")
    assert re.search(r"IDE URL for down: http://\S+/down/\?token=\S+  NOT SERVING", proxy.output)
    async with ide_session(url, token) as client:
        async with client.get("api/status") as response:
            assert response.status == 200
        async with client.post("api/kernels") as response:
            kernel = (await response.json())["id"]
        async with client.ws_connect(f"api/kernels/{kernel}/channels") as ws:
            proxy.process.send_signal(signal.SIGTERM)
            message = await ws.receive(timeout=10)
            while message.type is aiohttp.WSMsgType.TEXT:
                message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
    assert await asyncio.to_thread(proxy.process.wait, 10) == 0
    assert jupyter_upstream.token not in proxy.output


def test_doctor_with_a_profiles_file_checks_every_profile_in_a_block_of_its_own(
        jupyter_upstream: DemoServer, tmp_path: Path) -> None:
    config = lab_and_down_file(jupyter_upstream, tmp_path, free_port())
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), JUPYTER_DEV_PROXY_CONFIG=str(config),
                    PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    result = subprocess.run([sys.executable, str(PROXY), "doctor"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1, result  # the hub that is down
    lab, down = result.stdout.split("Profile down:\n")
    assert lab.startswith("Profile lab:\n") and "✗" not in lab and "✓ kernel" in lab, result.stdout
    assert "✗" in down and jupyter_upstream.token not in result.stdout


async def test_a_request_the_front_cannot_parse_is_answered_in_jupyters_json_without_quoting_it(
        start_front: Front, echo_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    front = await start_front({"main": echo_settings()})
    answer = await exchange(front.port, b"GET /main/api?token=" + LOCAL_TOKEN.encode() + b" HTTP/1.1\r\n"
                                        b"Host: 127.0.0.1\r\nno colon here\r\n\r\n")
    assert answer.status == 400 and answer.json()["reason"] == "bad-request" and answer.closed
    assert LOCAL_TOKEN not in caplog.text


async def test_the_fronts_own_refusals_of_one_kind_are_logged_once_not_at_every_request(
        start_front: Front, echo_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    front = await start_front({"main": echo_settings()})
    for _ in range(5):  # a web page firing <img> requests at paths of no profile
        assert (await get(front, "/nothing/here")).status == 404
    assert [record.getMessage() for record in caplog.records
            if "no-such-profile" in record.getMessage()] == [
        "GET /nothing/here → 404 no-such-profile: This proxy serves several Jupyter servers, each under the name of "
        "its profile: /main/. Nothing is at '/nothing/here': use the URL of one of them that the proxy printed when "
        "it started."]


async def test_without_the_token_a_path_into_another_profiles_server_is_refused_without_naming_it(
        start_front: Front, echo_settings: Callable[..., Settings], echo_seen: list[web.Request]) -> None:
    front = await start_front({"main": echo_settings(), "gpu": echo_settings(server="gpu")})
    for target in ["/main/gpu/api/status", "/nothing/here", "/"]:
        answer = await get(front, target, token=None)
        assert answer.status == 403 and "gpu" not in answer.body.decode(), (target, answer.body)
    assert echo_seen == []


def test_sigterm_while_a_profiles_hub_is_still_being_asked_stops_the_proxy_at_once(
        proxies: list[ProxyProcess], jupyter_upstream: DemoServer, tmp_path: Path) -> None:
    with socket.socket() as silent:  # a hub that takes the connection and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = lab_and_down_file(jupyter_upstream, tmp_path, silent.getsockname()[1])
        proxy = run_proxy(proxies, clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"),
                                             JUPYTER_DEV_PROXY_CONFIG=str(config), JUPYTER_PROXY_PORT="0",
                                             PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring"))
        silent.settimeout(60)
        connection, _ = silent.accept()  # the proxy is asking it
        with connection:
            proxy.process.send_signal(signal.SIGTERM)
            assert proxy.exit_status(timeout=15) == 128 + signal.SIGINT  # as shells report an interrupted start
    assert "jupyter-dev-proxy: stopped before the servers were ready." in proxy.output
    assert "Traceback" not in proxy.output and "Unclosed" not in proxy.output


async def test_a_server_address_two_hubs_share_goes_to_the_profile_of_the_page_that_asks_else_is_refused(
        start_front: Front, echo_upstream: Any, tls_ca: tuple[trustme.CA, Path]) -> None:
    port = echo_upstream.port  # one echo server, reached as two hubs by two names: alice on each
    front = await start_front({"work": make_settings(f"https://127.0.0.1:{port}", tls_ca[1], "jupyterhub"),
                               "teach": make_settings(f"https://localhost:{port}", tls_ca[1], "jupyterhub")})
    page = f"Referer: http://127.0.0.1:{front.port}/teach/lab/tree"
    answer = await exchange(front.port, request_head("GET", "/user/alice/static/lab.js", LOCAL_TOKEN, page,
                                                     "Connection: close", host=f"127.0.0.1:{front.port}"))
    assert answer.status == 200 and ["Host", f"localhost:{port}"] in answer.json()["headers"]
    unreadable = await exchange(front.port, request_head("GET", "/user/alice/x", LOCAL_TOKEN, "Referer: http://[x",
                                                         "Connection: close", host=f"127.0.0.1:{front.port}"))
    assert unreadable.status == 404 and unreadable.json()["reason"] == "ambiguous-server-path"
    ambiguous = await get(front, "/user/alice/static/lab.js")
    assert ambiguous.status == 404 and ambiguous.json()["reason"] == "ambiguous-server-path"
    assert "/work/ and /teach/" in ambiguous.json()["message"]


async def test_a_profile_named_like_the_servers_addresses_is_not_served_and_those_addresses_still_work(
        proxies: list[ProxyProcess], jupyter_upstream: DemoServer, tmp_path: Path) -> None:
    token_file, config = tmp_path / "token", tmp_path / "config.toml"
    token_file.write_text(jupyter_upstream.token)
    lab = LAB_AND_DOWN.split("[profiles.down]")[0].format(url=jupyter_upstream.url, ca=jupyter_upstream.ca_file,
                                                          tls_name=jupyter_upstream.tls_name,
                                                          user=jupyter_upstream.username, token_file=token_file)
    config.write_text(lab + lab.replace("[profiles.lab]", "[profiles.user]"))
    proxy = run_proxy(proxies, clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), JUPYTER_DEV_PROXY_CONFIG=str(config),
                                         PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
                                         JUPYTER_PROXY_PORT="0", JUPYTER_PROXY_IP_OR_NAME="127.0.0.1"))
    proxy.wait_for(r"Status page: ")
    assert re.search(r"IDE URL for user: \S+  NOT SERVING", proxy.output)
    assert "user: Not served: its name is the start of your servers' addresses (/user/alice/...)" in proxy.output
    served = re.search(r"IDE URL for lab: (http://\S+)/lab/\?token=(\S+)  alice's", proxy.output)
    assert served is not None, proxy.output
    proxy.url, proxy.token = served.groups()
    assert proxy.get("/user/alice/api/status")[0] == 200  # the address the server hands out: lab's


async def test_a_profile_that_does_not_serve_makes_no_server_address_ambiguous(
        start_front: Front, echo_settings: Callable[..., Settings], echo_upstream: Any,
        tls_ca: tuple[trustme.CA, Path]) -> None:
    front = await start_front({"main": echo_settings()})
    front.slots["down"] = ProfileSlot("down", make_settings(f"https://localhost:{echo_upstream.port}", tls_ca[1],
                                                            "jupyterhub"), failure="The hub at x is down.")
    answer = await get(front, "/user/alice/api/x")
    assert answer.status == 200 and answer.json()["raw_path"] == "/user/alice/api/x"


async def test_a_profile_still_starting_after_the_grace_time_holds_none_and_is_served_once_its_start_ends(
        jupyter_upstream: DemoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A spawn that takes minutes (an image pulled) must not keep the other profiles from the IDE: after the grace
    time the front serves them, and the slow one answers 503 "still starting" until its start ends."""
    from jupyter_dev_proxy import cli
    from jupyter_dev_proxy.profiles import read_profiles
    monkeypatch.setattr(cli, "_PROFILES_START_GRACE_SECONDS", 0.5)
    answering = asyncio.Event()

    async def slow_hub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answering.wait()  # takes the connection, says nothing until told: a start under way
        writer.close()  # and then breaks off: that profile is not served, for a reason it says

    slow = await asyncio.start_server(slow_hub, "127.0.0.1", 0)
    config = lab_and_down_file(jupyter_upstream, tmp_path, slow.sockets[0].getsockname()[1], ON_A_FREE_PORT)
    profiles = read_profiles(config, named=True).each_settings({})
    stop = asyncio.Event()
    serving = asyncio.ensure_future(cli.serve_profiles(profiles, stop))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "Status page: " not in (out := capsys.readouterr().out):
            assert asyncio.get_running_loop().time() < deadline and not serving.done(), out
            await asyncio.sleep(0.05)
        lab = re.search(r"IDE URL for lab: (http://\S+/)\?token=(\S+)  alice's default server", out)
        assert lab is not None and re.search(r"IDE URL for down: \S+  STARTING", out), out
        url, token = lab.groups()
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}api/status", headers={"Authorization": f"token {token}"}) as answer:
                assert answer.status == 200  # the lab profile serves while the other still starts
            down = url.replace("/lab/", "/down/")
            async with client.get(f"{down}api/status", headers={"Authorization": f"token {token}"}) as answer:
                assert (answer.status, (await answer.json())["reason"]) == (503, "profile-starting")
            answering.set()
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # its start ends (the hub broke off): now it says why it is not served
                async with client.get(f"{down}api/status", headers={"Authorization": f"token {token}"}) as answer:
                    if (await answer.json())["reason"] == "profile-not-serving":
                        break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 30) == 0
        slow.close()


async def test_a_profile_start_that_hits_a_fault_of_the_proxys_own_is_not_served_and_the_others_are(
        jupyter_upstream: DemoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_dev_proxy import cli
    from jupyter_dev_proxy.profiles import read_profiles
    real_check_hub, down_port = cli.check_hub, free_port()

    async def faulty_for_down(settings: Settings, *args: Any) -> Any:
        if settings.hub.origin.port == down_port:
            raise RuntimeError("a bug in the proxy")
        return await real_check_hub(settings, *args)

    monkeypatch.setattr(cli, "check_hub", faulty_for_down)
    config = lab_and_down_file(jupyter_upstream, tmp_path, down_port, ON_A_FREE_PORT)
    stop = asyncio.Event()
    serving = asyncio.ensure_future(cli.serve_profiles(read_profiles(config, named=True).each_settings({}), stop))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "Status page: " not in (out := capsys.readouterr().out):
            assert asyncio.get_running_loop().time() < deadline and not serving.done(), out
            await asyncio.sleep(0.05)
        assert re.search(r"IDE URL for down: \S+  NOT SERVING", out), out
        lab = re.search(r"IDE URL for lab: (http://\S+/)\?token=(\S+)  alice's default server", out)
        assert lab is not None, out
        url, token = lab.groups()
        async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as client:
            async with client.get(f"{url}api/status") as answer:
                assert answer.status == 200
            async with client.get(f"{url.replace('/lab/', '/down/')}api/status") as answer:
                body = await answer.json()
                assert (answer.status, body["reason"]) == (503, "profile-not-serving")
                assert "unexpected error" in body["message"]
    finally:
        stop.set()
        assert await asyncio.wait_for(serving, 30) == 0  # the fault does not come back when the proxy stops
