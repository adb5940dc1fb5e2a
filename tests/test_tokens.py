"""Tokens without friction, against a real JupyterHub: a first run that gets the token (in a real pseudo-terminal,
with a test keyring and a recorded browser), a token replaced under a running proxy, a revoked one, expiry said
ahead, and the server started with the right spawn options."""

from __future__ import annotations

import html
import json
import re
import signal
import stat
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pexpect
import pytest
from pexpect.popen_spawn import PopenSpawn

from tests.kit.hub import Hub, module_hub, require_real_servers
from tests.kit.hub import hub_env as token_env
from tests.kit.ide import ide_session
from tests.kit.process import PROXY, ProxyProcess, failed_start, run_proxy

pytestmark = [pytest.mark.hub, pytest.mark.timeout(240)]

require_real_servers()
TEST_KEYRING = "tests.keyring_backend.FileKeyring"
hub = module_hub()


# -- the first run ----------------------------------------------------------------------------------------------------

@pytest.fixture
def first_run_env(hub: Hub, tmp_path: Path) -> dict[str, str]:
    """No token anywhere; a test keyring in a file; a browser that records what it was asked to open."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> {opened}\n")
    browser.chmod(0o755)
    return token_env(hub, PYTHON_KEYRING_BACKEND=TEST_KEYRING, TEST_KEYRING_FILE=str(tmp_path / "keyring.json"),
                     BROWSER=f"{browser} %s", XDG_CONFIG_HOME=str(tmp_path / "config"),
                     PYTHONPATH=str(PROXY.parent))


def _first_run(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, [str(PROXY), *args], env=env, cwd=str(Path(env["TEST_KEYRING_FILE"]).parent),
                         encoding="utf-8", timeout=60)


def _paste(env: dict[str, str], token: str, *then: Any) -> None:
    """A first run in a terminal: ``token`` pasted at its prompt, then each of ``then`` (text, or pexpect.EOF)
    expected in turn; the process is stopped after."""
    terminal = _first_run(env)
    try:
        terminal.expect("Paste the token here")
        terminal.sendline(token)
        for expected in then:
            terminal.expect(expected)
    finally:
        terminal.kill(signal.SIGTERM)
        terminal.close()


def _password_login(env: dict[str, str], user: str, password: str) -> tuple[str, int]:
    """``login --password`` in a terminal, answered ``user`` and ``password``: what it printed, its exit status."""
    terminal = _first_run(env, "login", "--password")
    try:
        terminal.expect("Your user name on the hub: ")  # JUPYTER_USERNAME is not set
        terminal.sendline(user)
        terminal.expect("password on ")
        terminal.sendline(password)
        terminal.expect(pexpect.EOF)
        transcript = terminal.before
    finally:
        terminal.close()
    return transcript, terminal.exitstatus


def test_a_first_run_opens_the_token_page_asks_hidden_checks_and_keeps_the_token(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice")
    terminal = _first_run(first_run_env)
    try:
        terminal.expect("none is set or kept yet")
        terminal.expect("access:servers!server=<you>/")
        terminal.expect("Paste the token here")
        terminal.sendline("not-a-token")
        terminal.expect("The hub does not accept this token")
        terminal.expect("Paste the token here")
        terminal.sendline(token)
        terminal.expect("The token is alice's")
        terminal.expect("The proxy made a token of its own")
        terminal.expect("The token you pasted is revoked")
        terminal.expect("Kept in the system keyring")
        terminal.expect("Authorization URL with token for IDE")
        terminal.expect(r"\n")
        output = terminal.before + terminal.after
        transcript = str(terminal.logfile_read or "")
    finally:
        terminal.kill(signal.SIGTERM)
        terminal.close()
    hub_page, paste_page = (tmp_path / "opened.txt").read_text().split()
    assert hub_page == f"{hub.address}/hub/token"  # and the proxy's own page, which says what to pick there
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/token/[\w-]{20,}", paste_page), paste_page
    assert token not in output and token not in transcript  # the prompt did not echo it
    kept = json.loads((tmp_path / "keyring.json").read_text())
    own = kept[f"jupyter-dev-proxy|alice on {hub.address}"]
    assert kept == {f"jupyter-dev-proxy|alice on {hub.address}": own,
                    f"jupyter-dev-proxy|user on {hub.address}": "alice"}
    # The pasted token could make tokens, so the proxy keeps one of its own, narrow and expiring, and the pasted
    # one is revoked.
    assert own != token and own not in transcript
    assert hub.api("GET", "/user", token=token)[0] == 403
    _assert_the_proxys_own_token(hub, own)

    # The next start, not on a terminal, finds it there; forget-token removes it.
    proxy = run_proxy(proxies, first_run_env)
    proxy.wait_for_banner()
    assert "Token: alice's, from the system keyring" in proxy.output
    assert proxy.get("/api/status")[0] == 200
    proxy.stop()
    forget = pexpect.run(f"{sys.executable} {PROXY} forget-token", env=first_run_env, encoding="utf-8")
    assert f"Removed the token kept for {hub.address} from the system keyring." in forget
    assert f"jupyter-dev-proxy|alice on {hub.address}" not in json.loads((tmp_path / "keyring.json").read_text())


def test_without_a_usable_keyring_the_token_is_kept_in_a_file_only_the_user_may_read(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path) -> None:
    env = {**first_run_env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    token = hub.make_token("alice")
    _paste(env, token, "Kept in the proxy's token file", "Authorization URL with token for IDE")
    kept = tmp_path / "config" / "jupyter-dev-proxy" / "tokens.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    own = json.loads(kept.read_text())[hub.address]["alice"]
    assert json.loads(kept.read_text()) == {hub.address: {"alice": own}} and own != token
    _assert_the_proxys_own_token(hub, own)


def _assert_the_proxys_own_token(hub: Hub, own: str) -> None:
    """``own`` is the proxy's own token of alice's: its note, only the scopes it needs, a month's expiry."""
    status, me = hub.api("GET", "/user", token=own)
    assert status == 200 and me["name"] == "alice"
    model = hub.token_model("alice", me["token_id"])
    assert model is not None and model["note"].startswith("jupyter-dev-proxy on ")
    asked = {"access:servers!server=alice/", "read:servers!user=alice", "read:tokens!user=alice",
             "start:servers!user=alice"}
    implied = {"read:users:name!user=alice", "read:users:groups!user=alice"}  # the hub adds what read:servers needs
    assert set(model["scopes"]) - implied == asked, model["scopes"]
    days = (datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00")) - datetime.now(timezone.utc)).days
    assert 29 <= days <= 30


def test_a_pasted_token_that_may_not_make_tokens_is_kept_as_it_is(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path) -> None:
    hub.ensure_running("alice")  # the token may not start it
    token = hub.make_token("alice", scopes=["access:servers!user=alice", "read:servers!user=alice"])
    _paste(first_run_env, token, "This token may not make tokens, so the proxy keeps it as it is",
           "Kept in the system keyring", "Authorization URL with token for IDE")
    assert json.loads((tmp_path / "keyring.json").read_text())[f"jupyter-dev-proxy|alice on {hub.address}"] == token
    assert hub.api("GET", "/user", token=token)[0] == 200


def test_login_with_a_password_makes_the_proxys_own_token_and_keeps_no_password(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    """On a hub with a password login: the password goes to the hub once, the hub makes the proxy's own token
    (narrow, expiring), and the next start asks nothing."""
    hub.ensure_running("alice")
    transcript, status = _password_login(first_run_env, "alice", "not-the-password")
    assert "The hub did not accept that user name and password" in transcript and status != 0
    transcript, status = _password_login(first_run_env, "alice", hub.user_password)
    assert "The hub made the proxy a token of alice's" in transcript and "Kept in the system keyring" in transcript
    assert status == 0 and hub.user_password not in transcript
    kept = (tmp_path / "keyring.json").read_text()
    assert hub.user_password not in kept and not (tmp_path / "config").exists()  # the password is kept nowhere
    _assert_the_proxys_own_token(hub, json.loads(kept)[f"jupyter-dev-proxy|alice on {hub.address}"])
    proxy = run_proxy(proxies, first_run_env)
    proxy.wait_for_banner()
    assert "Token: alice's, from the system keyring" in proxy.output
    assert proxy.get("/api/status")[0] == 200


def test_login_replaces_a_kept_token_with_a_new_paste(hub: Hub, first_run_env: dict[str, str], tmp_path: Path) -> None:
    hub.ensure_running("alice")  # the tokens may not start it
    first, second = (hub.make_token("alice", scopes=["access:servers!user=alice"]) for _ in range(2))
    for token, why in ((first, "none is set or kept yet"), (second, "you asked for a new one")):
        terminal = _first_run(first_run_env, *(("login",) if token == second else ()))
        try:
            terminal.expect(why)
            terminal.expect("Paste the token here")
            terminal.sendline(token)
            terminal.expect("Kept in the system keyring")
            if token == second:
                terminal.expect(pexpect.EOF)  # login keeps the token and ends; it starts no proxy
        finally:
            terminal.kill(signal.SIGTERM)
            terminal.close()
    assert json.loads((tmp_path / "keyring.json").read_text())[f"jupyter-dev-proxy|alice on {hub.address}"] == second


# -- the paste page ---------------------------------------------------------------------------------------------------

_PAGE_LINE = r"aste it on this page of the proxy's, which says what to pick: (http://127\.0\.0\.1:\d+/\S+)"


def _login_without_a_terminal(env: dict[str, str]) -> PopenSpawn:
    """``login`` with its input a pipe, as from a script or an IDE's task: the page alone can take the token."""
    return PopenSpawn([sys.executable, str(PROXY), "login"], env=env, cwd=str(Path(env["TEST_KEYRING_FILE"]).parent),
                      encoding="utf-8", timeout=60)


def _page_submit(url: str, token: str) -> tuple[int, str]:
    """What a browser does on the page: load it, paste ``token`` in its form, send it. The answer's status and
    text (unescaped)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        secret = re.search(r'name="form" value="([^"]+)"', response.read().decode())
    assert secret, "the page has no form"
    request = urllib.request.Request(url, data=urlencode({"form": html.unescape(secret.group(1)),
                                                          "token": token}).encode(),
                                     headers={"Origin": url.split("/token/")[0]}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, html.unescape(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, html.unescape(error.read().decode())


def test_login_without_a_terminal_takes_the_token_on_its_page_and_shows_what_it_did(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path) -> None:
    """A token that may make tokens, pasted on the page: the proxy's own narrow token is kept, the pasted one is
    revoked, and the page says so, as the terminal does, without showing either token."""
    token = hub.make_token("alice")
    login = _login_without_a_terminal(first_run_env)
    login.expect(_PAGE_LINE)
    url = login.match.group(1)
    with urllib.request.urlopen(url, timeout=30) as response:
        advice = html.unescape(response.read().decode())
    for value in ("jupyter-dev-proxy on ", "30 days", "access:servers!server=<you>/", "to use your server",
                  f"{hub.address}/hub/token"):
        assert value in advice
    status, shown = _page_submit(url, token)
    login.expect(pexpect.EOF)
    terminal = login.before
    assert login.wait() == 0
    kept = json.loads((tmp_path / "keyring.json").read_text())[f"jupyter-dev-proxy|alice on {hub.address}"]
    assert status == 200
    for line in ("The token is alice's", "The proxy made a token of its own", "The token you pasted is revoked",
                 "Kept in the system keyring", "You can close this page"):
        assert line in shown, shown
    assert token not in shown and kept not in shown and token not in terminal and kept not in terminal
    assert "The token you pasted is revoked" in terminal
    assert kept != token and hub.api("GET", "/user", token=token)[0] == 403
    _assert_the_proxys_own_token(hub, kept)


def test_a_wrong_paste_on_the_page_says_why_and_the_next_paste_is_taken(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path) -> None:
    """The page says what the terminal says: why a paste was refused, then, for a token that may not make
    tokens, what it lacks; that token is kept as it is."""
    token = hub.make_token("alice", scopes=["access:servers!user=alice"])
    login = _login_without_a_terminal(first_run_env)
    login.expect(_PAGE_LINE)
    url = login.match.group(1)
    status, shown = _page_submit(url, "not-a-token")
    assert status == 200 and "The hub does not accept this token" in shown and 'name="token"' in shown
    login.expect("The hub does not accept this token")
    status, shown = _page_submit(url, token)
    login.expect(pexpect.EOF)
    assert login.wait() == 0
    assert "It lacks read:servers!user=alice" in shown
    assert "This token may not make tokens, so the proxy keeps it as it is" in shown and token not in shown
    assert json.loads((tmp_path / "keyring.json").read_text())[f"jupyter-dev-proxy|alice on {hub.address}"] == token


def test_after_three_wrong_pastes_on_the_page_it_says_the_proxy_stopped_asking(
        hub: Hub, first_run_env: dict[str, str]) -> None:
    login = _login_without_a_terminal(first_run_env)
    login.expect(_PAGE_LINE)
    url = login.match.group(1)
    answers = [_page_submit(url, f"not-a-token-{attempt}") for attempt in range(3)]
    login.expect(pexpect.EOF)
    assert login.wait() != 0
    assert all("The hub does not accept this token" in shown for _, shown in answers)
    assert 'name="token"' in answers[1][1] and 'name="token"' not in answers[2][1]
    assert "The proxy stopped asking" in answers[2][1] and "jupyter-dev-proxy login" in answers[2][1]


@pytest.mark.parametrize("ending", ["page", "ctrl-c"])
def test_the_terminal_shows_what_is_typed_again_after_login_ends(
        hub: Hub, first_run_env: dict[str, str], ending: str) -> None:
    """The prompt hides what is typed; after ``login`` ends (the page won, or Ctrl-C at the prompt) the terminal
    echoes again: ``stty -a`` run next on the same terminal says ``echo``, not ``-echo``."""
    token = hub.make_token("alice", scopes=["access:servers!user=alice"])
    # The shell's trap is a handler, not an ignore: the proxy is started with Ctrl-C's default, and the shell
    # survives Ctrl-C to run stty.
    script = f"trap 'true' INT; {sys.executable} {PROXY} login; stty -a"
    terminal = pexpect.spawn("/bin/sh", ["-c", script], env=first_run_env, encoding="utf-8", timeout=60,
                             cwd=str(Path(first_run_env["TEST_KEYRING_FILE"]).parent))
    try:
        terminal.expect(_PAGE_LINE)
        url = terminal.match.group(1)
        terminal.expect("Paste the token here")
        terminal.send("half-typ")  # a paste begun on the terminal, then left for the page or cut short
        if ending == "page":
            assert _page_submit(url, token)[0] == 200
            terminal.expect("Kept in the system keyring")
        else:
            terminal.send("\x03")
        terminal.expect(pexpect.EOF)
        settings = terminal.before
    finally:
        terminal.close()
    assert re.search(r"(^|[\s;])echo([\s;]|$)", settings) and not re.search(r"(^|[\s;])-echo([\s;]|$)", settings), \
        settings
    assert "half-typ" not in settings  # neither shown nor left to the shell


def test_not_on_a_terminal_a_missing_token_is_one_sentence(hub: Hub, first_run_env: dict[str, str]) -> None:
    message = failed_start(first_run_env)
    assert "JUPYTER_USERNAME" in message and "JUPYTERHUB_API_TOKEN" in message


# -- a token that changes --------------------------------------------------------------------------------------------

async def test_a_token_replaced_in_its_file_is_used_from_then_on_without_a_failed_request(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    old, new = hub.make_token_model("alice"), hub.make_token_model("alice")
    token_file = tmp_path / "hub-token"
    token_file.write_text(old["token"])
    proxy = run_proxy(proxies, token_env(hub, JUPYTERHUB_API_TOKEN_FILE=str(token_file)))
    url, local = proxy.wait_for_banner()
    statuses = []
    async with ide_session(url, local) as ide:
        for round_ in range(40):
            if round_ == 5:
                token_file.write_text(new["token"] + "\n")
            async with ide.get("/api/contents") as response:
                statuses.append(response.status)
            if "A new hub token from JUPYTERHUB_API_TOKEN_FILE" in proxy.output and round_ > 10:
                break
            await _sleep(0.25)
    assert set(statuses) == {200}
    proxy.wait_for(r"A new hub token from JUPYTERHUB_API_TOKEN_FILE \(.*\) is in use \(its file changed\)")
    async with ide_session(url, local) as ide:
        async with ide.get("/api/kernels") as response:
            assert response.status == 200
    model = hub.token_model("alice", new["id"])
    assert model is not None and model["last_activity"] is not None  # the hub saw the new token used
    assert new["token"] not in proxy.output and old["token"] not in proxy.output


async def _sleep(seconds: float) -> None:
    import asyncio
    await asyncio.sleep(seconds)


async def test_a_revoked_token_is_said_in_jupyters_json_and_a_new_one_recovers_by_itself(
        hub: Hub, tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    old, new = hub.make_token_model("alice"), hub.make_token_model("alice")
    token_file = tmp_path / "hub-token"
    token_file.write_text(old["token"])
    proxy = run_proxy(proxies, token_env(hub, JUPYTERHUB_API_TOKEN_FILE=str(token_file)))
    url, local = proxy.wait_for_banner()
    assert hub.api("DELETE", f"/users/alice/tokens/{old['id']}")[0] == 204  # revoked; the server never saw it
    async with ide_session(url, local) as ide:
        for _ in range(2):
            async with ide.get("/api/contents", allow_redirects=False) as response:
                body = await response.json()
                assert response.status == 401, body
        assert body["reason"] == "hub-token-rejected" and "expired or was revoked" in body["message"]
        assert f"{hub.address}/hub/token" in body["message"] and str(token_file) in body["message"]
        assert len([line for line in proxy.lines if "no longer accepts the proxy's token" in line]) == 1
        token_file.write_text(new["token"])  # the user puts a new token in place
        proxy.wait_for("A new hub token from JUPYTERHUB_API_TOKEN_FILE")
        async with ide.get("/api/contents") as response:
            assert response.status == 200


def test_sighup_rereads_the_token_from_the_keyring(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    keyring_file = tmp_path / "keyring.json"
    first, second = hub.make_token("alice"), hub.make_token("alice")
    keyring_file.write_text(json.dumps({f"jupyter-dev-proxy|alice on {hub.address}": first,
                                        f"jupyter-dev-proxy|user on {hub.address}": "alice"}))
    proxy = run_proxy(proxies, first_run_env)
    proxy.wait_for_banner()
    keyring_file.write_text(json.dumps({f"jupyter-dev-proxy|alice on {hub.address}": second,
                                        f"jupyter-dev-proxy|user on {hub.address}": "alice"}))
    proxy.process.send_signal(signal.SIGHUP)
    proxy.wait_for(r"A new hub token from the system keyring is in use \(SIGHUP\)", timeout=10)
    assert proxy.get("/api/status")[0] == 200


# -- expiry said ahead ------------------------------------------------------------------------------------------------

def test_the_tokens_expiry_is_in_the_banner_and_warned_of_a_day_and_an_hour_ahead(
        hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice", expires_in=3600 + 8)  # an hour and 8 s: the hour's warning comes in 8 s
    proxy = run_proxy(proxies, token_env(hub, JUPYTERHUB_API_TOKEN=token))
    proxy.wait_for_banner()
    assert "Token: alice's, from JUPYTERHUB_API_TOKEN, expires in 1 hour, on " in proxy.output
    started = time.monotonic()
    warnings = proxy.wait_for(r"WARNING The hub token expires in 1 hour, on .*: make a new one at .*/hub/token")
    assert warnings  # less than a day left: said at once
    proxy.wait_for(r"WARNING The hub token expires in (59 minutes|1 hour).*(\n.*)*WARNING The hub token expires in "
                   r"(59 minutes|1 hour)", timeout=30)
    assert time.monotonic() - started > 5  # the second warning came when an hour was left, not at once


def test_a_token_that_may_not_read_its_expiry_says_nothing_of_it(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_running("alice")
    token = hub.make_token("alice", scopes=["access:servers!user=alice", "read:servers!user=alice"])
    proxy = run_proxy(proxies, token_env(hub, JUPYTERHUB_API_TOKEN=token))
    proxy.wait_for_banner()
    assert "Token: alice's, from JUPYTERHUB_API_TOKEN." in proxy.output
    assert "expire" not in proxy.output


# -- the right server -------------------------------------------------------------------------------------------------

def test_spawn_options_reach_the_spawner_in_the_shape_the_hub_expects(hub: Hub, proxies: list[ProxyProcess]) -> None:
    hub.ensure_stopped("alice")
    before = len(hub.spawn_options())
    proxy = run_proxy(proxies, token_env(hub, JUPYTERHUB_API_TOKEN=hub.make_token("alice"),
                                         JUPYTERHUB_SERVER_OPTIONS='{"profile": "gpu"}'))
    proxy.wait_for_banner()
    assert hub.spawn_options()[before:] == [{"server": "", "user_options": {"profile": "gpu"}}]


def test_unknown_spawn_options_are_the_hubs_sentence(hub: Hub) -> None:
    hub.ensure_stopped("alice")
    message = failed_start(token_env(hub, JUPYTERHUB_API_TOKEN=hub.make_token("alice"),
                                     JUPYTERHUB_SERVER_OPTIONS='{"profile": "huge"}'), after_log=True)
    assert "The hub could not start your default server" in message
    assert "unknown profile 'huge'" in message



def test_a_pasted_token_is_not_revoked_when_the_proxys_own_cannot_be_kept(
        hub: Hub, first_run_env: dict[str, str], tmp_path: Path) -> None:
    """The token store fails (here: its file is a symbolic link, which the proxy refuses to write through): the
    pasted token must still work, or the user is left with no token at all."""
    env = {**first_run_env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    (tmp_path / "config" / "jupyter-dev-proxy").mkdir(parents=True)
    (tmp_path / "config" / "jupyter-dev-proxy" / "tokens.json").symlink_to(tmp_path / "elsewhere.json")
    token = hub.make_token("alice")
    _paste(env, token, "is a symbolic link", pexpect.EOF)
    assert hub.api("GET", "/user", token=token)[0] == 200


@pytest.mark.parametrize(("args", "prompt", "answer"), [
    (("login", "--password"), "Your user name on the hub: ", "\x04"),
    (("login", "--password"), "Your user name on the hub: ", "\x03"),
    (("login",), "Paste the token here", "\x04"),
], ids=["password-ctrl-d", "password-ctrl-c", "paste-ctrl-d"])
def test_login_ends_quietly_when_the_prompt_is_left(
        hub: Hub, first_run_env: dict[str, str], args: tuple[str, ...], prompt: str, answer: str) -> None:
    """Ctrl-D or Ctrl-C at a prompt of ``login``: the command ends, without a traceback."""
    terminal = _first_run(first_run_env, *args)
    try:
        terminal.expect(prompt)
        terminal.send(answer)
        terminal.expect(pexpect.EOF)
        output = terminal.before
    finally:
        terminal.close()
    assert "Traceback" not in output, output
    assert terminal.exitstatus != 0 or terminal.signalstatus is not None



def test_login_with_a_password_and_a_user_name_the_hub_spells_otherwise_does_not_blame_the_password(
        hub: Hub, first_run_env: dict[str, str]) -> None:
    """The hub signs 'Alice' in as 'alice' (it normalizes names) but has no user 'Alice' to make a token for: the
    password was right, so saying it was wrong sends the user the wrong way."""
    output, _ = _password_login(first_run_env, "Alice", hub.user_password)
    assert "did not accept that user name and password" not in output
    assert "'Alice'" in output
