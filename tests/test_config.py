"""Settings: flags > environment > .env file > defaults, validation messages, --help, and the user's prefix.

Pure tests: ``load_settings`` gets its argv, environment and working directory as arguments, and every file
it reads lives under pytest's tmp_path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from pathlib import Path
from urllib.parse import quote

import pytest
from yarl import URL

from jupyter_dev_proxy import __version__
from jupyter_dev_proxy.config import ConfigError, Settings, Upstream, load_settings, wants_demo
from tests.kit.settings import MINIMAL_ENV, load



def load_error(cwd: Path, *argv: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(cwd, *argv, **environ)
    return str(caught.value)


def write_env_file(path: Path, **values: str) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def assert_one_sentence_naming(message: str, setting: str) -> None:
    """A ConfigError message is one line, one sentence, and names what to fix."""
    assert setting in message, message
    assert "\n" not in message
    assert message.endswith("."), message
    # A second sentence would start after ". " with a capital letter.
    assert not re.search(r"\.\s+[A-Z]", message), message


# --- defaults -------------------------------------------------------------------------------------------


def test_defaults_listen_on_localhost_8000_and_reach_the_hub_on_port_8000(cwd: Path) -> None:
    settings = load(cwd)
    assert settings.listen_host == "localhost"
    assert settings.listen_port == 8000
    assert settings.hub.origin == URL("https://10.0.0.5:8000")
    assert settings.hub.user == "alice"
    assert settings.ca_file is None
    assert settings.hub_token is None
    assert settings.log_level == "info"
    assert settings.hub.server_prefix == "/user/alice/"


def test_settings_are_frozen(cwd: Path) -> None:
    settings = load(cwd)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.hub.user = "bob"  # type: ignore[misc]


# --- each environment variable and each flag reaches its setting ------------------------------------------


def test_every_environment_variable_of_the_original_tool_is_read(cwd: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    settings = load_settings([], {
        "JUPYTER_PROXY_IP_OR_NAME": "127.0.0.2",
        "JUPYTER_PROXY_PORT": "8123",
        "JUPYTER_SERVER_IP_OR_NAME": "hub.example.org",
        "JUPYTER_SERVER_PORT": "8443",
        "JUPYTER_SERVER_NAME": "cert-name",
        "JUPYTER_USERNAME": "carol",
        "JUPYTER_CLUSTER_CA_CERT": str(ca),
    }, cwd)
    assert settings.listen_host == "127.0.0.2"
    assert settings.listen_port == 8123
    assert settings.hub.origin == URL("https://hub.example.org:8443")
    assert settings.tls_name == "cert-name"
    assert settings.hub.user == "carol"
    assert settings.ca_file == ca


def test_the_new_environment_variables_are_read(cwd: Path, tmp_path: Path) -> None:
    settings = load_settings([], {
        "JUPYTERHUB_URL": "https://hub.example.org:9443",
        "JUPYTER_USERNAME": "alice",
        "JUPYTERHUB_API_TOKEN": "hub-secret",
        "JUPYTER_PROXY_TOKEN": "local-secret",
        "JUPYTER_PROXY_LOG_LEVEL": "debug",
    }, cwd)
    assert settings.hub.origin == URL("https://hub.example.org:9443")
    assert settings.hub_token == "hub-secret"
    assert settings.forwards_ide_token is False
    assert settings.local_token == "local-secret"
    assert settings.log_level == "debug"


def test_the_hub_token_file_variable_is_read(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    assert load(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file)).hub_token == "from-file"


def test_every_flag_reaches_its_setting(cwd: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    token_file = tmp_path / "token"
    token_file.write_text("flag-file-token")
    settings = load_settings([
        "--listen-host", "127.0.0.3", "--listen-port", "8124", "--server", "hub.example.org",
        "--server-port", "8444", "--tls-name", "flag-cert", "--username", "dave", "--ca-cert", str(ca),
        "--hub-token-file", str(token_file), "--log-level", "warning",
    ], {}, cwd)
    assert settings.listen_host == "127.0.0.3"
    assert settings.listen_port == 8124
    assert settings.hub.origin == URL("https://hub.example.org:8444")
    assert settings.tls_name == "flag-cert"
    assert settings.hub.user == "dave"
    assert settings.ca_file == ca
    assert settings.hub_token == "flag-file-token"
    assert settings.log_level == "warning"


def test_hub_url_flag_sets_the_hub(cwd: Path) -> None:
    settings = load_settings(["--hub-url", "https://hub.example.org", "--username", "alice"], {}, cwd)
    assert settings.hub.origin == URL("https://hub.example.org")
    assert settings.tls_name == "hub.example.org"


# --- precedence: flags > environment > .env file > defaults ----------------------------------------------

# (flag, environment variable, value for the flag, the environment, the .env file, the default, how to read it)
PRECEDENCE_CASES = [
    pytest.param("--listen-host", "JUPYTER_PROXY_IP_OR_NAME", "127.0.0.11", "127.0.0.12", "127.0.0.13", "localhost",
                 lambda s: s.listen_host, id="listen-host"),
    pytest.param("--listen-port", "JUPYTER_PROXY_PORT", "1111", "2222", "3333", 8000,
                 lambda s: s.listen_port, id="listen-port"),
    pytest.param("--server-port", "JUPYTER_SERVER_PORT", "1111", "2222", "3333", 8000,
                 lambda s: s.hub.origin.port, id="server-port"),
    pytest.param("--tls-name", "JUPYTER_SERVER_NAME", "flag-name", "env-name", "dotenv-name", "jupyterhub",
                 lambda s: s.tls_name, id="tls-name"),
    pytest.param("--log-level", "JUPYTER_PROXY_LOG_LEVEL", "error", "warning", "debug", "info",
                 lambda s: s.log_level, id="log-level"),
    pytest.param("--server", "JUPYTER_SERVER_IP_OR_NAME", "flag.example", "env.example", "dotenv.example", None,
                 lambda s: s.hub.origin.host, id="server"),
    pytest.param("--username", "JUPYTER_USERNAME", "flaguser", "envuser", "dotenvuser", None,
                 lambda s: s.hub.user, id="username"),
    pytest.param("--named-server", "JUPYTERHUB_NAMED_SERVER", "flagsrv", "envsrv", "dotenvsrv", "",
                 lambda s: s.hub.server, id="named-server"),
    pytest.param("--start-server", "JUPYTER_PROXY_START_SERVER", "never", "at-startup", "never", "at-startup",
                 lambda s: s.start_server, id="start-server"),
]


def _load_with(cwd: Path, flag: str, env: str, sources: dict[str, str]) -> Settings:
    """Load with the option set in the given sources ('flag', 'env', 'dotenv'), the rest minimal."""
    environ = dict(MINIMAL_ENV)
    environ.pop(env, None)
    dotenv = {}
    if "env" in sources:
        environ[env] = sources["env"]
    if "dotenv" in sources:
        dotenv[env] = sources["dotenv"]
    write_env_file(cwd / ".env", **dotenv)
    argv = [flag, sources["flag"]] if "flag" in sources else []
    return load_settings(argv, environ, cwd)


@pytest.mark.parametrize(("flag", "env", "flag_value", "env_value", "dotenv_value", "default", "read"),
                         PRECEDENCE_CASES)
def test_flag_beats_environment_beats_dotenv_beats_default(cwd: Path, flag: str, env: str, flag_value: str,
                                                           env_value: str, dotenv_value: str, default: object,
                                                           read) -> None:
    expected = {flag_value: flag_value, env_value: env_value, dotenv_value: dotenv_value}
    if flag.endswith("port"):
        expected = {v: int(v) for v in expected}
    every = {"flag": flag_value, "env": env_value, "dotenv": dotenv_value}
    assert read(_load_with(cwd, flag, env, every)) == expected[flag_value]
    assert read(_load_with(cwd, flag, env, {"env": env_value, "dotenv": dotenv_value})) == expected[env_value]
    assert read(_load_with(cwd, flag, env, {"dotenv": dotenv_value})) == expected[dotenv_value]
    assert read(_load_with(cwd, flag, env, {"flag": flag_value, "dotenv": dotenv_value})) == expected[flag_value]
    if default is not None:
        assert read(_load_with(cwd, flag, env, {})) == default


@pytest.mark.parametrize(("flag", "env", "flag_value", "env_value", "dotenv_value", "default", "read"),
                         PRECEDENCE_CASES)
@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_value_counts_as_unset_in_every_source(cwd: Path, flag: str, env: str, flag_value: str,
                                                       env_value: str, dotenv_value: str, default: object,
                                                       read, empty: str) -> None:
    def expect(value: str) -> object:
        return int(value) if flag.endswith("port") else value

    # An empty flag falls through to the environment, an empty environment value to the .env file.
    assert read(_load_with(cwd, flag, env, {"flag": empty, "env": env_value})) == expect(env_value)
    assert read(_load_with(cwd, flag, env, {"env": empty, "dotenv": dotenv_value})) == expect(dotenv_value)
    if default is not None:
        # An empty .env value falls through to the default rather than blanking it.
        assert read(_load_with(cwd, flag, env, {"dotenv": empty})) == default


def test_token_in_the_environment_is_not_shadowed_by_the_dotenv_file(cwd: Path) -> None:
    write_env_file(cwd / ".env", JUPYTERHUB_API_TOKEN="dotenv-hub", JUPYTER_PROXY_TOKEN="dotenv-local")
    settings = load(cwd, JUPYTERHUB_API_TOKEN="env-hub", JUPYTER_PROXY_TOKEN="env-local")
    assert (settings.hub_token, settings.local_token) == ("env-hub", "env-local")


def test_tokens_from_the_dotenv_file_are_used_when_the_environment_has_none(cwd: Path) -> None:
    write_env_file(cwd / ".env", JUPYTERHUB_API_TOKEN="dotenv-hub", JUPYTER_PROXY_TOKEN="dotenv-local")
    settings = load(cwd)
    assert (settings.hub_token, settings.local_token) == ("dotenv-hub", "dotenv-local")


def test_dotenv_file_alone_configures_everything(cwd: Path) -> None:
    write_env_file(cwd / ".env", JUPYTERHUB_URL="https://hub.example.org", JUPYTER_USERNAME="erin")
    settings = load_settings([], {}, cwd)
    assert settings.hub.origin == URL("https://hub.example.org")
    assert settings.hub.user == "erin"


def test_dotenv_file_quotes_and_comments_are_understood(cwd: Path) -> None:
    (cwd / ".env").write_text('# my hub\nexport JUPYTER_USERNAME="alice smith"  # me\nJUPYTER_PROXY_PORT=\'9001\'\n')
    settings = load_settings([], {"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5"}, cwd)
    assert settings.hub.user == "alice smith"
    assert settings.listen_port == 9001


def test_env_file_flag_is_read_instead_of_the_dotenv_in_cwd(cwd: Path, tmp_path: Path) -> None:
    write_env_file(cwd / ".env", JUPYTER_USERNAME="from-cwd", JUPYTER_PROXY_PORT="1111")
    other = write_env_file(tmp_path / "other.env", JUPYTER_USERNAME="from-flag")
    settings = load_settings(["--env-file", str(other)], {"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5"}, cwd)
    assert settings.hub.user == "from-flag"
    assert settings.listen_port == 8000  # nothing from ./.env leaks in


def test_env_file_flag_is_still_below_the_environment(cwd: Path, tmp_path: Path) -> None:
    other = write_env_file(tmp_path / "other.env", JUPYTER_USERNAME="from-file")
    assert load(cwd, "--env-file", str(other), JUPYTER_USERNAME="from-env").hub.user == "from-env"


def test_relative_env_file_is_found_in_the_given_cwd(cwd: Path) -> None:
    write_env_file(cwd / "hub.env", JUPYTER_USERNAME="relative")
    assert load_settings(["--env-file", "hub.env"], {"JUPYTER_SERVER_IP_OR_NAME": "h"}, cwd).hub.user == "relative"


def test_dotenv_directory_named_dot_env_is_ignored(cwd: Path) -> None:
    (cwd / ".env").mkdir()
    assert load(cwd).hub.user == "alice"


def test_environ_passed_in_is_never_mutated(cwd: Path, tmp_path: Path) -> None:
    write_env_file(cwd / ".env", JUPYTER_PROXY_TOKEN="dotenv-local", JUPYTER_PROXY_PORT="9002")
    environ = {**MINIMAL_ENV, "JUPYTER_PROXY_LOG_LEVEL": "DEBUG"}
    before = dict(environ)
    load_settings(["--listen-host", "127.0.0.9"], environ, cwd)
    assert environ == before
    # A read-only mapping is enough: load_settings never writes to it.
    load_settings([], types.MappingProxyType(before), cwd)


def test_dotenv_file_never_touches_the_process_environment(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_PROXY_TOKEN", raising=False)
    write_env_file(cwd / ".env", JUPYTER_PROXY_TOKEN="dotenv-local")
    before = dict(os.environ)
    assert load(cwd).local_token == "dotenv-local"
    assert dict(os.environ) == before


def test_settings_are_not_read_from_the_process_environment(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PROXY_PORT", "4444")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "process-token")
    settings = load(cwd)
    assert settings.listen_port == 8000
    assert settings.hub_token is None


# --- TLS name ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5"}, id="ipv4-server"),
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "2001:db8::1"}, id="ipv6-server"),
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "::1"}, id="ipv6-loopback-server"),
    pytest.param({"JUPYTERHUB_URL": "https://10.0.0.5:8443"}, id="ipv4-url"),
    pytest.param({"JUPYTERHUB_URL": "https://[2001:db8::1]:8443"}, id="ipv6-url"),
])
def test_tls_name_is_jupyterhub_when_the_hub_is_an_ip_address(cwd: Path, environ: dict[str, str]) -> None:
    assert load_settings([], {"JUPYTER_USERNAME": "alice", **environ}, cwd).tls_name == "jupyterhub"


def test_ipv6_server_address_builds_a_bracketed_hub_url(cwd: Path) -> None:
    settings = load_settings([], {"JUPYTER_USERNAME": "alice", "JUPYTER_SERVER_IP_OR_NAME": "2001:db8::1",
                                  "JUPYTER_SERVER_PORT": "8443"}, cwd)
    assert str(settings.hub.origin) == "https://[2001:db8::1]:8443"


@pytest.mark.parametrize("environ", [
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "hub.example.org"}, id="server"),
    pytest.param({"JUPYTERHUB_URL": "https://hub.example.org"}, id="url"),
    pytest.param({"JUPYTERHUB_URL": "https://hub.example.org:8443/"}, id="url-with-port"),
])
def test_tls_name_is_the_hub_name_when_the_hub_is_a_name(cwd: Path, environ: dict[str, str]) -> None:
    assert load_settings([], {"JUPYTER_USERNAME": "alice", **environ}, cwd).tls_name == "hub.example.org"


@pytest.mark.parametrize("hub", [{"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5"},
                                 {"JUPYTER_SERVER_IP_OR_NAME": "hub.example.org"},
                                 {"JUPYTERHUB_URL": "https://[::1]:8443"}])
def test_explicit_tls_name_wins(cwd: Path, hub: dict[str, str]) -> None:
    environ = {"JUPYTER_USERNAME": "alice", "JUPYTER_SERVER_NAME": "cert.internal", **hub}
    assert load_settings([], environ, cwd).tls_name == "cert.internal"


@pytest.mark.parametrize("tls_name", [None, "cert.internal"])
def test_tls_name_is_none_for_an_http_hub(cwd: Path, tls_name: str | None) -> None:
    environ = {"JUPYTER_USERNAME": "alice", "JUPYTERHUB_URL": "http://hub.example.org:8000"}
    if tls_name:
        environ["JUPYTER_SERVER_NAME"] = tls_name
    settings = load_settings([], environ, cwd)
    assert settings.hub.origin == URL("http://hub.example.org:8000")
    assert settings.tls_name is None


# --- tokens --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--token", "--local-token", "--proxy-token", "--api-token",
                                  "--jupyterhub-api-token", "--hub-api-token"])
def test_tokens_cannot_be_passed_as_flags(cwd: Path, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load(cwd, flag, "secret-on-the-command-line")
    assert caught.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_hub_token_flag_is_rejected_not_taken_as_an_abbreviation(cwd: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        load(cwd, "--hub-token", "secret-on-the-command-line")
    assert caught.value.code == 2


def test_token_file_is_read_and_stripped(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  \n the-hub-token \n\n")
    settings = load(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file))
    assert settings.hub_token == "the-hub-token"
    assert settings.forwards_ide_token is False


def test_token_file_wins_over_a_token_in_the_same_source(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    settings = load(cwd, JUPYTERHUB_API_TOKEN="from-variable", JUPYTERHUB_API_TOKEN_FILE=str(token_file))
    assert settings.hub_token == "from-file"


def test_token_in_the_environment_beats_a_token_file_named_in_dotenv(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "old-token"
    token_file.write_text("stale-token-from-dotenv")
    write_env_file(cwd / ".env", JUPYTERHUB_API_TOKEN_FILE=str(token_file))
    assert load(cwd, JUPYTERHUB_API_TOKEN="fresh-token-from-env").hub_token == "fresh-token-from-env"


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_empty_token_file_is_a_config_error(cwd: Path, tmp_path: Path, content: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    message = load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file))
    assert str(token_file) in message
    assert "empty" in message


def test_empty_token_file_message_names_the_setting(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("")
    assert_one_sentence_naming(load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file)),
                               "JUPYTERHUB_API_TOKEN_FILE")


def test_missing_token_file_is_a_config_error_naming_the_setting(cwd: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    message = load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(missing))
    assert_one_sentence_naming(message, "JUPYTERHUB_API_TOKEN_FILE")
    assert str(missing) in message


def test_token_file_that_is_a_directory_is_a_config_error(cwd: Path, tmp_path: Path) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(tmp_path)), "JUPYTERHUB_API_TOKEN_FILE")


def test_token_file_that_is_not_text_is_a_config_error(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token.p12"
    token_file.write_bytes(b"\x30\x82\xff\xfe binary")
    assert_one_sentence_naming(load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file)),
                               "JUPYTERHUB_API_TOKEN_FILE")


def test_token_file_path_expands_home_like_the_ca_file(cwd: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".hub-token").write_text("home-token")
    assert load(cwd, JUPYTERHUB_API_TOKEN_FILE="~/.hub-token").hub_token == "home-token"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_without_a_hub_token_the_ide_token_is_forwarded(cwd: Path, value: str | None) -> None:
    environ = {} if value is None else {"JUPYTERHUB_API_TOKEN": value}
    settings = load(cwd, **environ)
    assert settings.hub_token is None
    assert settings.forwards_ide_token is True


def test_local_token_is_random_and_new_at_every_load(cwd: Path) -> None:
    tokens = {load(cwd).local_token for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        assert len(token) >= 32
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token  # safe to paste into ?token=


def test_local_token_from_the_environment_is_used_stripped(cwd: Path) -> None:
    assert load(cwd, JUPYTER_PROXY_TOKEN="  chosen-token\n").local_token == "chosen-token"


@pytest.mark.parametrize("token", ['my"tok</script>', "a+b/c=", "with space", "t&x=1", "ünï"])
def test_a_local_token_that_urls_and_pages_would_write_differently_is_refused(cwd: Path, token: str) -> None:
    """It goes into ?token= URLs and, for hub tokens that are not hex, into the server's pages (review finding)."""
    with pytest.raises(ConfigError, match="only letters, digits"):
        load(cwd, JUPYTER_PROXY_TOKEN=token)


def test_secrets_are_documented_as_environment_only(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--help"], {}, cwd)
    out = capsys.readouterr().out
    assert "JUPYTERHUB_API_TOKEN " in out
    assert "JUPYTER_PROXY_TOKEN" in out
    assert not re.search(r"--(hub-|local-|proxy-)?token\b(?!-file)", out)


# --- ports ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "8000", "65535", " 8080 "])
def test_valid_ports_are_accepted(cwd: Path, value: str) -> None:
    settings = load(cwd, JUPYTER_PROXY_PORT=value, JUPYTER_SERVER_PORT=value)
    assert settings.listen_port == int(value)
    assert settings.hub.origin.port == int(value)


def test_listen_port_zero_picks_a_free_port(cwd: Path) -> None:
    assert load(cwd, JUPYTER_PROXY_PORT="0").listen_port == 0
    assert load(cwd, "--listen-port", "0").listen_port == 0


@pytest.mark.parametrize("value", ["0", "-1", "65536", "99999", "http", "80.5", "8000x", "0x1f90"])
def test_bad_server_port_is_a_config_error_naming_the_setting(cwd: Path, value: str) -> None:
    message = load_error(cwd, JUPYTER_SERVER_PORT=value)
    assert_one_sentence_naming(message, "JUPYTER_SERVER_PORT")
    assert repr(value) in message


@pytest.mark.parametrize("value", ["-1", "65536", "http", "80.5"])
def test_bad_listen_port_is_a_config_error_naming_the_setting(cwd: Path, value: str) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTER_PROXY_PORT=value), "JUPYTER_PROXY_PORT")
    assert_one_sentence_naming(load_error(cwd, "--listen-port", value), "JUPYTER_PROXY_PORT")


def test_server_port_is_not_checked_when_the_hub_is_a_url(cwd: Path) -> None:
    settings = load_settings([], {"JUPYTERHUB_URL": "https://hub.example.org", "JUPYTER_USERNAME": "a",
                                  "JUPYTER_SERVER_PORT": "443"}, cwd)
    assert settings.hub.origin == URL("https://hub.example.org")


# --- the hub's address ---------------------------------------------------------------------------------


def test_missing_hub_is_a_config_error_naming_both_ways_to_set_it(cwd: Path) -> None:
    message = str(pytest.raises(ConfigError, load_settings, [], {"JUPYTER_USERNAME": "alice"}, cwd).value)
    assert_one_sentence_naming(message, "JUPYTER_SERVER_IP_OR_NAME")
    assert "JUPYTERHUB_URL" in message


def test_hub_url_and_server_together_are_a_config_error(cwd: Path) -> None:
    message = load_error(cwd, JUPYTERHUB_URL="https://hub.example.org")
    assert_one_sentence_naming(message, "JUPYTERHUB_URL")
    assert "JUPYTER_SERVER_IP_OR_NAME" in message


def test_hub_url_and_server_from_different_sources_are_still_a_config_error(cwd: Path) -> None:
    # Neither silently shadows the other: a leftover .env entry is reported, not ignored.
    write_env_file(cwd / ".env", JUPYTER_SERVER_IP_OR_NAME="10.0.0.5")
    with pytest.raises(ConfigError, match="JUPYTERHUB_URL"):
        load_settings(["--hub-url", "https://hub.example.org"], {"JUPYTER_USERNAME": "alice"}, cwd)


@pytest.mark.parametrize("url", ["ftp://hub.example.org", "hub.example.org", "https://", "file:///etc/hub",
                                 "wss://hub.example.org", "//hub.example.org"])
def test_hub_url_without_http_scheme_and_host_is_a_config_error(cwd: Path, url: str) -> None:
    message = str(pytest.raises(ConfigError, load_settings, [],
                                {"JUPYTERHUB_URL": url, "JUPYTER_USERNAME": "alice"}, cwd).value)
    assert_one_sentence_naming(message, "JUPYTERHUB_URL")


def test_hub_url_keeps_scheme_host_and_port_only(cwd: Path) -> None:
    settings = load_settings([], {"JUPYTERHUB_URL": "https://Hub.Example.org:8443/hub/home?x=1",
                                  "JUPYTER_USERNAME": "alice"}, cwd)
    assert settings.hub.origin == URL("https://hub.example.org:8443")


@pytest.mark.parametrize("environ", [
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "https://hub.example.org"}, id="scheme-in-server"),
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "hub example"}, id="space-in-server"),
    pytest.param({"JUPYTER_SERVER_IP_OR_NAME": "[2001:db8::1]"}, id="bracketed-ipv6-server"),
    pytest.param({"JUPYTERHUB_URL": "https://hub.example.org:99999"}, id="port-out-of-range-in-url"),
    pytest.param({"JUPYTERHUB_URL": "https://[2001:db8::1"}, id="unclosed-ipv6-url"),
])
def test_malformed_hub_address_is_a_config_error_not_a_traceback(cwd: Path, environ: dict[str, str]) -> None:
    try:
        settings = load_settings([], {"JUPYTER_USERNAME": "alice", **environ}, cwd)
    except ConfigError as exc:
        setting = next(iter(environ))
        assert_one_sentence_naming(str(exc), setting)
    else:  # accepting "[2001:db8::1]" as the IPv6 address it clearly is would be fine too
        assert settings.hub.origin.host == "2001:db8::1"


# --- the other validations -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "  "])
def test_missing_username_is_a_config_error_naming_the_setting(cwd: Path, value: str | None) -> None:
    environ = {"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5"}
    if value is not None:
        environ["JUPYTER_USERNAME"] = value
    message = str(pytest.raises(ConfigError, load_settings, [], environ, cwd).value)
    assert_one_sentence_naming(message, "JUPYTER_USERNAME")


def test_missing_ca_file_is_a_config_error_naming_the_setting(cwd: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    message = load_error(cwd, JUPYTER_CLUSTER_CA_CERT=str(missing))
    assert_one_sentence_naming(message, "JUPYTER_CLUSTER_CA_CERT")
    assert str(missing) in message


def test_ca_file_that_is_a_directory_is_a_config_error(cwd: Path, tmp_path: Path) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTER_CLUSTER_CA_CERT=str(tmp_path)), "JUPYTER_CLUSTER_CA_CERT")


def test_ca_file_path_expands_home(cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cluster-ca.pem").write_text("PEM")
    assert load(cwd, JUPYTER_CLUSTER_CA_CERT="~/cluster-ca.pem").ca_file == tmp_path / "cluster-ca.pem"


@pytest.mark.parametrize("value", ["verbose", "trace", "critical", "2", "info,debug"])
def test_bad_log_level_is_a_config_error_naming_the_setting(cwd: Path, value: str) -> None:
    message = load_error(cwd, JUPYTER_PROXY_LOG_LEVEL=value)
    assert_one_sentence_naming(message, "JUPYTER_PROXY_LOG_LEVEL")
    for level in ("debug", "info", "warning", "error"):
        assert level in message


@pytest.mark.parametrize(("value", "expected"), [("DEBUG", "debug"), ("Warning", "warning"), (" error ", "error")])
def test_log_level_is_case_insensitive(cwd: Path, value: str, expected: str) -> None:
    assert load(cwd, JUPYTER_PROXY_LOG_LEVEL=value).log_level == expected


def test_missing_env_file_is_a_config_error_naming_the_flag(cwd: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such.env"
    message = load_error(cwd, "--env-file", str(missing))
    assert_one_sentence_naming(message, "--env-file")
    assert str(missing) in message


# --- --help and --version ------------------------------------------------------------------------------

# What --help must say for each flag: its environment variable and its default, as the spec lists them.
HELP_TABLE = [
    ("--listen-host", "JUPYTER_PROXY_IP_OR_NAME", "localhost"),
    ("--listen-port", "JUPYTER_PROXY_PORT", "8000"),
    ("--hub-url", "JUPYTERHUB_URL", None),
    ("--server", "JUPYTER_SERVER_IP_OR_NAME", None),
    ("--server-port", "JUPYTER_SERVER_PORT", "8000"),
    ("--tls-name", "JUPYTER_SERVER_NAME", None),
    ("--username", "JUPYTER_USERNAME", None),
    ("--named-server", "JUPYTERHUB_NAMED_SERVER", None),
    ("--start-server", "JUPYTER_PROXY_START_SERVER", "at-startup"),
    ("--ca-cert", "JUPYTER_CLUSTER_CA_CERT", None),
    ("--hub-token-file", "JUPYTERHUB_API_TOKEN_FILE", None),
    ("--log-level", "JUPYTER_PROXY_LOG_LEVEL", "info"),
    ("--server-base-url", "JUPYTER_SERVER_BASE_URL", "/"),
    ("--client-cert", "JUPYTER_CLIENT_CERT", None),
    ("--client-key", "JUPYTER_CLIENT_KEY", None),
    ("--hub-proxy", "JUPYTER_HUB_PROXY", None),
    ("--allowed-hosts", "JUPYTER_PROXY_ALLOWED_HOSTS", None),
    ("--keep-warm-minutes", "JUPYTER_PROXY_KEEP_WARM_MINUTES", "30"),
    ("--reconnect-seconds", "JUPYTER_PROXY_RECONNECT_SECONDS", "60"),
]


@pytest.fixture
def help_text(cwd: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as caught:
        load_settings(["--help"], {}, cwd)
    assert caught.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping


@pytest.mark.parametrize(("flag", "env", "default"), HELP_TABLE)
def test_help_names_each_flags_environment_variable_and_default(help_text: str, flag: str, env: str,
                                                                default: str | None) -> None:
    options = help_text[help_text.index("options:"):]
    start = options.index(f" {flag} ")
    entry = options[start:options.index("]", start) + 1]
    assert entry.endswith(f"[env {env}; default: {default}]" if default else f"[env {env}; no default]"), entry


def test_help_explains_the_precedence_and_the_env_file_flag(help_text: str) -> None:
    assert "--env-file" in help_text
    assert "flags first, then the environment, then the .env file" in help_text


def test_version_flag_prints_the_version(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load_settings(["--version"], {}, cwd)
    assert caught.value.code == 0
    assert __version__ in capsys.readouterr().out


# --- the user's prefix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("username", "prefix"), [
    ("alice", "/user/alice/"),
    ("a b@c~d", "/user/a%20b@c~d/"),
    ("jösé", "/user/j%C3%B6s%C3%A9/"),
    ("名前", "/user/%E5%90%8D%E5%89%8D/"),
    ("first.last_x-y", "/user/first.last_x-y/"),
    ("a+b", "/user/a%2Bb/"),
    ("x/y", "/user/x%2Fy/"),
    ("100%", "/user/100%25/"),
    ("me?#", "/user/me%3F%23/"),
])
def test_server_prefix_escapes_the_username_like_jupyterhub(cwd: Path, username: str, prefix: str) -> None:
    settings = load(cwd, JUPYTER_USERNAME=username)
    assert settings.hub.server_prefix == prefix
    assert settings.hub.server_prefix == f"/user/{quote(username, safe='@~')}/"


def test_username_is_kept_unescaped_in_settings(cwd: Path) -> None:
    assert load(cwd, JUPYTER_USERNAME="a b@c~d").hub.user == "a b@c~d"


# --- named servers, starting the server, the username from the hub ---------------------------------------


def test_default_server_is_used_unless_a_named_server_is_set(cwd: Path) -> None:
    settings = load(cwd)
    assert settings.hub.server == ""
    assert settings.hub.server_prefix == "/user/alice/"
    assert settings.hub.server_label == "default server"


@pytest.mark.parametrize(("name", "prefix"), [
    ("dev", "/user/alice/dev/"),
    ("my lab@x~", "/user/alice/my%20lab@x~/"),
    ("gpü", "/user/alice/gp%C3%BC/"),
])
def test_named_server_prefix_is_escaped_like_jupyterhub(cwd: Path, name: str, prefix: str) -> None:
    settings = load(cwd, JUPYTERHUB_NAMED_SERVER=name)
    assert settings.hub.server_prefix == prefix
    assert settings.hub.server_label == f"named server '{name}'"


def test_named_server_flag_is_read(cwd: Path) -> None:
    assert load(cwd, "--named-server", "dev").hub.server_prefix == "/user/alice/dev/"


@pytest.mark.parametrize("name", ["a/b", "/dev", "dev/", ".", ".."])
def test_named_server_with_a_slash_or_dots_is_a_config_error(cwd: Path, name: str) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTERHUB_NAMED_SERVER=name), "JUPYTERHUB_NAMED_SERVER")


def test_named_server_is_not_the_tls_name(cwd: Path) -> None:
    settings = load(cwd, JUPYTER_SERVER_NAME="cert.internal")
    assert settings.hub.server == ""
    assert settings.hub.server_prefix == "/user/alice/"


@pytest.mark.parametrize(("value", "expected"), [("at-startup", "at-startup"), ("never", "never"),
                                                 ("NEVER", "never"), (" At-Startup ", "at-startup")])
def test_start_server_choices(cwd: Path, value: str, expected: str) -> None:
    assert load(cwd, JUPYTER_PROXY_START_SERVER=value).start_server == expected


def test_start_server_always_needs_a_hub_token(cwd: Path) -> None:
    message = load_error(cwd, JUPYTER_PROXY_START_SERVER="always")
    assert_one_sentence_naming(message, "JUPYTERHUB_API_TOKEN")
    assert "JUPYTER_PROXY_START_SERVER" in message
    assert load(cwd, JUPYTER_PROXY_START_SERVER="always", JUPYTERHUB_API_TOKEN="t").start_server == "always"


@pytest.mark.parametrize("value", ["yes", "true", "startup", "on-demand"])
def test_bad_start_server_is_a_config_error_naming_the_setting(cwd: Path, value: str) -> None:
    message = load_error(cwd, JUPYTER_PROXY_START_SERVER=value)
    assert_one_sentence_naming(message, "JUPYTER_PROXY_START_SERVER")
    for choice in ("at-startup", "always", "never"):
        assert choice in message


def test_username_is_optional_with_a_hub_token(cwd: Path) -> None:
    settings = load_settings([], {"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5", "JUPYTERHUB_API_TOKEN": "t"}, cwd)
    assert settings.hub.user == ""  # filled in once the hub says whose token it is


def test_hub_token_setting_names_where_the_token_came_from(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    assert load(cwd, JUPYTERHUB_API_TOKEN="t").hub_token_setting == "JUPYTERHUB_API_TOKEN"
    assert load(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file)).hub_token_setting == "JUPYTERHUB_API_TOKEN_FILE"


# --- --demo --------------------------------------------------------------------------------------------


def test_the_demo_runs_when_asked_or_when_no_hub_is_set_anywhere(cwd: Path) -> None:
    assert wants_demo(["--demo"], MINIMAL_ENV, cwd) is True
    assert wants_demo(["--listen-port", "0"], {}, cwd) is True
    assert wants_demo([], MINIMAL_ENV, cwd) is False
    assert wants_demo(["--hub-url", "https://hub.example.org"], {}, cwd) is False
    assert wants_demo([], {"JUPYTERHUB_URL": "https://hub.example.org"}, cwd) is False
    (cwd / ".env").write_text("JUPYTER_SERVER_IP_OR_NAME=10.0.0.5\n")
    assert wants_demo([], {}, cwd) is False


def test_demo_upstream_replaces_the_hub_settings(cwd: Path, tmp_path: Path) -> None:
    ca = tmp_path / "demo-ca.pem"
    ca.write_text("PEM")
    upstream = Upstream(url=URL("https://127.0.0.1:54321"), tls_name="jupyterhub", ca_file=ca, token="demo-token",
                        username="demo-user")
    environ = {"JUPYTERHUB_URL": "https://hub.example.org", "JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5",
               "JUPYTER_USERNAME": "alice", "JUPYTERHUB_API_TOKEN": "real-token",
               "JUPYTERHUB_NAMED_SERVER": "dev", "JUPYTER_PROXY_PORT": "9005"}
    settings = load_settings(["--demo"], environ, cwd, upstream)
    assert settings.hub.origin == URL("https://127.0.0.1:54321")
    assert (settings.tls_name, settings.ca_file, settings.hub_token) == ("jupyterhub", ca, "demo-token")
    assert settings.hub.server_prefix == "/user/demo-user/"
    assert settings.listen_port == 9005  # the local side is still the user's


@pytest.mark.parametrize("url,origin,base", [
    ("https://example.edu/jupyter/", "https://example.edu", "/jupyter/"),
    ("https://example.edu/jupyter", "https://example.edu", "/jupyter/"),
    ("https://example.edu/jupyter/hub/home", "https://example.edu", "/jupyter/"),
    ("https://example.edu/jupyter/user/alice/lab?reset", "https://example.edu", "/jupyter/"),
    ("https://example.edu/a/b/hub/token", "https://example.edu", "/a/b/"),
    ("https://example.edu:8443/hub/home", "https://example.edu:8443", "/"),
    ("https://example.edu/user/alice/tree", "https://example.edu", "/"),
    ("https://example.edu", "https://example.edu", "/"),
])
def test_a_hub_url_carries_the_hubs_base_path_as_pasted_from_the_browser(cwd: Path, url: str, origin: str,
                                                                         base: str) -> None:
    settings = load_settings([], {"JUPYTERHUB_URL": url, "JUPYTER_USERNAME": "alice"}, cwd)
    assert (str(settings.hub.origin), settings.hub.base) == (origin, base)
    assert settings.hub.server_prefix == f"{base}user/alice/"
    assert settings.hub.page("token") == f"{origin}{base}hub/token"


@pytest.mark.parametrize("value,base", [("/jupyter/", "/jupyter/"), ("jupyter", "/jupyter/"), ("/", "/"),
                                        ("/a/b", "/a/b/")])
def test_the_original_variables_take_the_base_path_from_jupyter_server_base_url(cwd: Path, value: str,
                                                                                base: str) -> None:
    settings = load(cwd, JUPYTER_SERVER_BASE_URL=value)
    assert settings.hub.base == base and settings.hub.api() == f"{base}hub/api"


def test_a_base_path_in_two_places_that_disagree_is_a_config_error(cwd: Path) -> None:
    message = str(pytest.raises(ConfigError, load_settings, [], {
        "JUPYTERHUB_URL": "https://example.edu/jupyter/", "JUPYTER_SERVER_BASE_URL": "/other/",
        "JUPYTER_USERNAME": "alice"}, cwd).value)
    assert_one_sentence_naming(message, "JUPYTER_SERVER_BASE_URL")


def test_the_listen_port_error_says_0_is_allowed(cwd: Path) -> None:
    with pytest.raises(ConfigError, match="from 0 to 65535"):
        load_settings([], {**MINIMAL_ENV, "JUPYTER_PROXY_PORT": "-1"}, cwd)


def test_the_event_loop_is_uvloop_when_installed_unless_turned_off(cwd: Path) -> None:
    assert load_settings([], MINIMAL_ENV, cwd).event_loop == "auto"
    assert load_settings(["--event-loop", "asyncio"], MINIMAL_ENV, cwd).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="JUPYTER_PROXY_EVENT_LOOP"):
        load_settings([], {**MINIMAL_ENV, "JUPYTER_PROXY_EVENT_LOOP": "trio"}, cwd)


# --- how the hub is reached: a company proxy, gateway headers, a client certificate, other host names ----------

@pytest.mark.parametrize("environ,expected", [
    ({"HTTPS_PROXY": "http://proxy.corp:3128"}, ("proxy.corp", 3128, "HTTPS_PROXY")),
    ({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, ("low", 1, "https_proxy")),
    ({"ALL_PROXY": "http://all:3"}, ("all", 3, "ALL_PROXY")),
    ({"HTTPS_PROXY": "proxy.corp"}, ("proxy.corp", 1080, "HTTPS_PROXY")),  # curl's default scheme and port
    ({"HTTP_PROXY": "http://ignored:1"}, None),  # an https hub never uses the http_proxy variables
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "hub.example.org"}, None),
    ({"HTTPS_PROXY": "http://p:1", "no_proxy": ".example.org"}, None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.org, example.org:443"}, ("p", 1, "HTTPS_PROXY")),
    ({"HTTPS_PROXY": "http://p:1", "JUPYTER_HUB_PROXY": "none"}, None),
    ({"HTTPS_PROXY": "http://p:1", "JUPYTER_HUB_PROXY": "http://own:9"}, ("own", 9, "JUPYTER_HUB_PROXY")),
    ({"JUPYTER_HUB_PROXY": "http://own:9", "NO_PROXY": "*"}, ("own", 9, "JUPYTER_HUB_PROXY")),
])
def test_the_company_proxy_is_found_as_curl_finds_it(cwd: Path, environ: dict[str, str],
                                                     expected: tuple[str, int, str] | None) -> None:
    settings = load_settings([], {"JUPYTERHUB_URL": "https://hub.example.org", "JUPYTER_USERNAME": "alice",
                                  **environ}, cwd)
    proxy = settings.forward_proxy
    assert (proxy and (proxy.host, proxy.port, proxy.setting)) == expected


@pytest.mark.parametrize("no_proxy,bypassed", [("10.0.0.0/8", True), ("10.0.0.5", True), ("10.0.0.6", False),
                                               ("192.168.0.0/16", False), ("", False)])
def test_no_proxy_matches_addresses_and_ranges(cwd: Path, no_proxy: str, bypassed: bool) -> None:
    settings = load(cwd, HTTPS_PROXY="http://p:1", NO_PROXY=no_proxy)
    assert (settings.forward_proxy is None) is bypassed


def test_proxy_credentials_are_read_and_masked(cwd: Path) -> None:
    settings = load(cwd, HTTPS_PROXY="http://ide%40corp:p%3Ass@proxy.corp:3128")
    proxy = settings.forward_proxy
    assert proxy is not None and (proxy.username, proxy.password) == ("ide@corp", "p:ss")
    assert str(proxy) == "http://ide@corp:***@proxy.corp:3128" and "p:ss" not in str(proxy)
    assert proxy.authorization == "Basic aWRlQGNvcnA6cDpzcw=="
    assert "p:ss" in settings.secrets and proxy.authorization in settings.secrets


@pytest.mark.parametrize("value", ["socks5://proxy:1080", "https://proxy:443", "http://proxy:3128/path", "http://"])
def test_a_proxy_the_proxy_cannot_use_is_a_config_error(cwd: Path, value: str) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTER_HUB_PROXY=value), "JUPYTER_HUB_PROXY")


def test_a_proxy_password_on_the_command_line_is_refused(cwd: Path) -> None:
    message = load_error(cwd, "--hub-proxy", "http://u:secret@proxy:3128")
    assert_one_sentence_naming(message, "JUPYTER_HUB_PROXY")
    assert "secret" not in message
    assert load(cwd, "--hub-proxy", "http://proxy:3128").forward_proxy is not None  # without one it is fine


def test_gateway_headers_are_read_as_json_and_kept_secret(cwd: Path) -> None:
    settings = load(cwd, JUPYTER_HUB_HEADERS='{"CF-Access-Client-Id": "id.access", "CF-Access-Client-Secret": "s3"}')
    assert settings.hub_headers == (("CF-Access-Client-Id", "id.access"), ("CF-Access-Client-Secret", "s3"))
    assert "s3" in settings.secrets and "id.access" in settings.secrets


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '{"X-A": 1}', '{"Bad Name": "x"}', '{"X-A": "a\\nb"}',
                                   '{"Authorization": "token x"}', '{"Host": "x"}', '{"Sec-WebSocket-Key": "x"}'])
def test_gateway_headers_that_cannot_be_sent_are_a_config_error(cwd: Path, value: str) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTER_HUB_HEADERS=value), "JUPYTER_HUB_HEADERS")


def test_gateway_headers_have_no_flag(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load(cwd, "--hub-headers", "{}")
    assert "unrecognized arguments" in capsys.readouterr().err


def test_client_certificate_files_must_exist(cwd: Path, tmp_path: Path) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTER_CLIENT_CERT=str(tmp_path / "missing.pem")),
                               "JUPYTER_CLIENT_CERT")
    (tmp_path / "cert.pem").write_text("PEM")
    assert_one_sentence_naming(load_error(cwd, JUPYTER_CLIENT_CERT=str(tmp_path / "cert.pem"),
                                          JUPYTER_CLIENT_KEY=str(tmp_path / "missing.key")), "JUPYTER_CLIENT_KEY")
    assert load(cwd, "--client-cert", str(tmp_path / "cert.pem")).client_cert == tmp_path / "cert.pem"


def test_allowed_hosts_add_names_to_localhost_and_the_listen_address(cwd: Path) -> None:
    settings = load(cwd, JUPYTER_PROXY_ALLOWED_HOSTS="DevBox.internal, [fd00::1]", JUPYTER_PROXY_IP_OR_NAME="10.1.2.3")
    assert settings.allowed_hosts == {"localhost", "10.1.2.3", "devbox.internal", "fd00::1"}


def test_a_client_key_without_its_certificate_is_a_config_error(cwd: Path, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("PEM")
    assert_one_sentence_naming(load_error(cwd, JUPYTER_CLIENT_KEY=str(tmp_path / "key.pem")), "JUPYTER_CLIENT_CERT")


@pytest.mark.parametrize("value,minutes", [("30", 30.0), ("0", 0.0), ("2.5", 2.5)])
def test_keep_warm_minutes_are_read(cwd: Path, value: str, minutes: float) -> None:
    assert load(cwd, JUPYTER_PROXY_KEEP_WARM_MINUTES=value).keep_warm_minutes == minutes


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_bad_keep_warm_minutes_are_a_config_error(cwd: Path, value: str) -> None:
    assert_one_sentence_naming(load_error(cwd, JUPYTER_PROXY_KEEP_WARM_MINUTES=value), "JUPYTER_PROXY_KEEP_WARM_MINUTES")


def test_spawn_options_are_a_json_object_kept_canonical(cwd: Path) -> None:
    settings = load(cwd, JUPYTERHUB_SERVER_OPTIONS='{"profile": "gpu", "cpu": 2}')
    assert settings.server_options == '{"cpu": 2, "profile": "gpu"}'
    hash(settings)  # still usable as a cache key
    assert_one_sentence_naming(load_error(cwd, JUPYTERHUB_SERVER_OPTIONS="gpu"), "JUPYTERHUB_SERVER_OPTIONS")
    assert_one_sentence_naming(load_error(cwd, JUPYTERHUB_SERVER_OPTIONS="[1]"), "JUPYTERHUB_SERVER_OPTIONS")


def test_a_kept_token_is_found_when_no_setting_names_one(cwd: Path) -> None:
    from jupyter_dev_proxy.config import TokenKind, TokenSource
    asked: list[tuple[str, str]] = []

    def stored(hub: object, user: str) -> tuple[str, str, TokenSource]:
        asked.append((str(hub), user))
        return "carol", "kept-token", TokenSource(TokenKind.KEYRING)
    settings = load_settings([], {"JUPYTERHUB_URL": "https://hub.example.org/jupyter/"}, cwd, stored=stored)
    assert (settings.hub_token, settings.hub.user, settings.hub_token_setting) == ("kept-token", "carol",
                                                                                   "the system keyring")
    assert asked == [("https://hub.example.org/jupyter", "")]
    assert load(cwd, JUPYTERHUB_API_TOKEN="env-token").hub_token == "env-token"  # a setting wins, unasked


# --- signing in with the hub's login (OAuth) ------------------------------------------------------------

_SIGN_IN = {"JUPYTERHUB_OAUTH_CLIENT_ID": "service-jupyter-dev-proxy", "JUPYTERHUB_OAUTH_CLIENT_SECRET": "s3cret-id"}


def test_a_sign_in_service_needs_no_username_and_calls_back_to_the_listen_address_by_default(cwd: Path) -> None:
    settings = load_settings([], {"JUPYTERHUB_URL": "https://hub.example.org", **_SIGN_IN}, cwd)
    assert settings.oauth is not None
    assert settings.oauth.client_id == "service-jupyter-dev-proxy"
    assert settings.oauth.callback_url == URL("http://localhost:8000/jupyter-dev-proxy/oauth/callback")
    assert settings.hub.user == ""
    assert not settings.forwards_ide_token  # the IDE's token is the proxy's, the hub's comes from the sign-in
    assert "s3cret-id" in settings.secrets  # so no log line shows it
    assert "s3cret-id" not in repr(settings)


def test_the_sign_in_secret_can_come_from_a_file_and_the_callback_from_the_admin(cwd: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    settings = load(cwd, "--listen-port", "8765", JUPYTERHUB_OAUTH_CLIENT_ID="service-x",
                    JUPYTERHUB_OAUTH_CLIENT_SECRET_FILE=str(secret),
                    JUPYTERHUB_OAUTH_CALLBACK_URL="http://127.0.0.1:8765/jupyter-dev-proxy/signed-in")
    assert settings.oauth is not None
    assert settings.oauth.client_secret == "from-a-file"
    assert settings.oauth.callback_url == URL("http://127.0.0.1:8765/jupyter-dev-proxy/signed-in")


@pytest.mark.parametrize(("environ", "names"), [
    ({"JUPYTERHUB_OAUTH_CLIENT_ID": "service-x"}, "JUPYTERHUB_OAUTH_CLIENT_SECRET"),
    ({"JUPYTERHUB_OAUTH_CLIENT_SECRET": "s"}, "JUPYTERHUB_OAUTH_CLIENT_ID"),
    ({**_SIGN_IN, "JUPYTERHUB_OAUTH_CLIENT_ID": "jupyter-dev-proxy"}, "JUPYTERHUB_OAUTH_CLIENT_ID"),
    ({**_SIGN_IN, "JUPYTER_PROXY_PORT": "0"}, "JUPYTER_PROXY_PORT"),
    ({**_SIGN_IN, "JUPYTERHUB_OAUTH_CALLBACK_URL": "http://localhost:9999/jupyter-dev-proxy/oauth/callback"},
     "JUPYTERHUB_OAUTH_CALLBACK_URL"),
    ({**_SIGN_IN, "JUPYTERHUB_OAUTH_CALLBACK_URL": "http://evil.example:8000/jupyter-dev-proxy/oauth/callback"},
     "JUPYTERHUB_OAUTH_CALLBACK_URL"),
    ({**_SIGN_IN, "JUPYTERHUB_OAUTH_CALLBACK_URL": "https://localhost:8000/jupyter-dev-proxy/oauth/callback"},
     "JUPYTERHUB_OAUTH_CALLBACK_URL"),
    ({**_SIGN_IN, "JUPYTERHUB_OAUTH_CALLBACK_URL": "http://localhost:8000/api/oauth_callback"},
     "JUPYTERHUB_OAUTH_CALLBACK_URL"),
    ({**_SIGN_IN, "JUPYTERHUB_OAUTH_CALLBACK_URL": "not a url at all"}, "JUPYTERHUB_OAUTH_CALLBACK_URL"),
], ids=["no-secret", "no-id", "not-a-service", "random-port", "other-port", "foreign-host", "https", "server-path",
        "garbage"])
def test_a_sign_in_setting_that_cannot_work_is_one_sentence_naming_it(cwd: Path, environ: dict[str, str],
                                                                        names: str) -> None:
    assert_one_sentence_naming(load_error(cwd, **environ), names)
