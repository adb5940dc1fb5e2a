"""The profiles file: its location, its checks (names, keys, secrets, syntax), each profile built as flags and the
environment build settings, and the precedence flags > environment > profile > [defaults] > built-in defaults.

Pure tests: every file lives under pytest's tmp_path, and the environment is a dict given as an argument.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from yarl import URL

from jupyter_dev_proxy.config import ConfigError, TokenKind, load_settings, profiles_file, setting_origins
from jupyter_dev_proxy.profiles import demo_wanted, every_profile, load_profiles, read_profiles, selected_settings

TWO_PROFILES = '''
[defaults]
hub-url = "https://hub.example.org"
username = "alice"
start-server = "never"

[profiles.main]
hub-token-file = "{token_file}"

[profiles.gpu]
named-server = "gpu"
server-options = {{ profile = "gpu", cpu = 2 }}
hub-token-file = "{token_file}"
listen-port = 8001
trace = true
forward = [6006, "8050:18050"]
'''


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "hub-token"
    path.write_text("token-of-the-example-hub\n")
    return path


def write_profiles(tmp_path: Path, text: str, token_file: Path | None = None) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text.format(token_file=token_file or tmp_path / "no-token"))
    return path


def profiles_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read_profiles(path, named=True)
    return str(caught.value)


def settings_error(path: Path, *argv: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        selected_settings(["--config", str(path), *argv], environ, path.parent)
    return str(caught.value)


# --- where the file is ----------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG_CONFIG_HOME is where Linux keeps settings")
def test_the_file_is_config_flag_then_variable_then_the_users_configuration_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert profiles_file(["--config", "a.toml"], {"JUPYTER_DEV_PROXY_CONFIG": "b.toml"}) == (Path("a.toml"), True)
    assert profiles_file([], {"JUPYTER_DEV_PROXY_CONFIG": "b.toml"}) == (Path("b.toml"), True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # the kept tokens' directory, read from os.environ
    assert profiles_file([], {}) == (tmp_path / "xdg" / "jupyter-dev-proxy" / "config.toml", False)


def test_a_missing_file_at_the_default_place_has_no_profiles_but_one_named_is_an_error(tmp_path: Path) -> None:
    assert read_profiles(tmp_path / "config.toml", named=False).profiles == {}
    message = profiles_error(tmp_path / "config.toml")
    assert str(tmp_path / "config.toml") in message and "does not exist" in message and "--config" in message


# --- what a profile holds -------------------------------------------------------------------------------


def test_each_profile_is_built_as_the_environment_builds_settings_with_its_defaults(
        tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    profiles = load_profiles(path, {})
    assert list(profiles) == ["main", "gpu"]  # the file's order
    main, gpu = profiles["main"], profiles["gpu"]
    assert main.hub.origin == URL("https://hub.example.org") and main.hub.user == "alice" and main.hub.server == ""
    assert main.start_server == gpu.start_server == "never"  # from [defaults]
    assert main.hub_token == gpu.hub_token == "token-of-the-example-hub"
    assert main.token_source.kind is TokenKind.FILE and main.profile == "main"
    assert gpu.hub.server_prefix == "/user/alice/gpu/" and gpu.listen_port == 8001 and gpu.trace
    assert [str(app) for app in gpu.forwards] == ["6006:6006", "8050:18050"]
    # The table gives exactly what the variable gives: the same canonical JSON.
    from_variable = load_settings([], {"JUPYTERHUB_URL": "https://hub.example.org", "JUPYTER_USERNAME": "alice",
                                       "JUPYTERHUB_SERVER_OPTIONS": '{"profile": "gpu", "cpu": 2}'}, tmp_path)
    assert gpu.server_options == from_variable.server_options == '{"cpu": 2, "profile": "gpu"}'


def test_a_value_in_a_profile_is_checked_with_the_same_sentence_as_in_the_environment(
        tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES.replace("listen-port = 8001", 'listen-port = "eighty"'), token_file)
    with pytest.raises(ConfigError) as from_environment:
        load_settings([], {"JUPYTERHUB_URL": "https://hub.example.org", "JUPYTER_USERNAME": "alice",
                           "JUPYTER_PROXY_PORT": "eighty"}, tmp_path)
    assert settings_error(path, "--profile", "gpu") == str(from_environment.value)


def test_flags_then_environment_then_profile_then_defaults(tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    argv = ["--config", str(path), "--profile", "gpu"]
    assert selected_settings(argv, {}, tmp_path).listen_port == 8001  # the profile's
    assert selected_settings(argv, {"JUPYTER_PROXY_PORT": "8002"}, tmp_path).listen_port == 8002
    assert selected_settings([*argv, "--listen-port", "8003"], {"JUPYTER_PROXY_PORT": "8002"},
                             tmp_path).listen_port == 8003
    assert selected_settings(argv, {"JUPYTER_PROXY_START_SERVER": "always"}, tmp_path).start_server == "always"
    assert selected_settings(argv, {}, tmp_path).log_level == "info"  # the built-in default
    # The profile comes from the variable when no flag names one.
    chosen = selected_settings(["--config", str(path)], {"JUPYTER_DEV_PROXY_PROFILE": "main"}, tmp_path)
    assert chosen.profile == "main" and chosen.hub.server == ""


def test_without_a_profile_the_environment_alone_is_used_even_with_a_file(tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    settings = selected_settings(["--config", str(path)], {"JUPYTERHUB_URL": "https://other.example.org",
                                                           "JUPYTER_USERNAME": "bob"}, tmp_path)
    assert settings.profile is None and settings.hub.origin == URL("https://other.example.org")
    assert settings.start_server == "at-startup" and settings.hub_token is None


def test_load_profiles_takes_no_setting_of_the_one_server_environment(tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    profiles = load_profiles(path, {"JUPYTER_USERNAME": "bob", "JUPYTERHUB_NAMED_SERVER": "other"})
    assert [(s.hub.user, s.hub.server) for s in profiles.values()] == [("alice", ""), ("alice", "gpu")]


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path, token_file: Path) -> None:
    message = settings_error(write_profiles(tmp_path, TWO_PROFILES, token_file), "--profile", "gpus")
    assert "There is no profile 'gpus'" in message and "(main, gpu)" in message


def test_profiles_in_the_file_and_no_hub_set_serve_every_profile_instead_of_the_demo(
        tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    assert demo_wanted(["--config", str(path)], {}, tmp_path) is False
    every = every_profile(["--config", str(path)], {}, tmp_path)
    assert every is not None and list(every.profiles) == ["main", "gpu"]
    assert every_profile(["--config", str(path), "--profile", "gpu"], {}, tmp_path) is None
    assert every_profile(["--config", str(path)], {"JUPYTERHUB_URL": "https://h.org"}, tmp_path) is None
    assert every_profile(["--config", str(path), "--demo"], {}, tmp_path) is None
    assert demo_wanted(["--config", str(path), "--demo"], {}, tmp_path) is True
    assert demo_wanted(["--config", str(path), "--profile", "gpu"], {}, tmp_path) is False
    assert demo_wanted(["--config", str(tmp_path / "config.toml")], {"JUPYTERHUB_URL": "https://h.org"},
                       tmp_path) is False
    (tmp_path / "empty.toml").write_text("")
    assert demo_wanted([], {"JUPYTER_DEV_PROXY_CONFIG": str(tmp_path / "empty.toml")}, tmp_path) is True


# --- the file's errors ----------------------------------------------------------------------------------


def test_an_unknown_key_names_file_profile_key_and_the_closest_setting(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, '[profiles.gpu]\nhub-ur = "https://hub.example.org"\n')
    message = profiles_error(path)
    assert message.startswith(f"{path}: [profiles.gpu] has 'hub-ur'") and "did you mean 'hub-url'?" in message
    message = profiles_error(write_profiles(tmp_path, '[defaults]\nnamed_server = "gpu"\n'))
    assert "[defaults] has 'named_server'" in message and "did you mean 'named-server'?" in message


@pytest.mark.parametrize("name", ["GPU", "1gpu", "gpu_2", "g" * 31, "jupyter-dev-proxy", "gpu.2"])
def test_a_profile_name_that_cannot_be_a_url_segment_is_refused(tmp_path: Path, name: str) -> None:
    message = profiles_error(write_profiles(tmp_path, f'[profiles."{name}"]\nhub-url = "https://h.org"\n'))
    assert message.startswith(f"{tmp_path / 'config.toml'}: the profile name '{name}'"), message
    assert ("1 to 30 lower-case letters" in message) != (name == "jupyter-dev-proxy")


def test_a_name_of_30_characters_is_a_profile(tmp_path: Path) -> None:
    name = "g" + "-0" * 14 + "z"
    assert list(read_profiles(write_profiles(tmp_path, f"[profiles.{name}]\n"), named=True).profiles) == [name]


@pytest.mark.parametrize("key", ["hub-token", "oauth-client-secret", "hub-headers", "local-token"])
def test_a_secret_in_the_file_is_refused_saying_where_it_goes_instead(tmp_path: Path, key: str) -> None:
    message = profiles_error(write_profiles(tmp_path, f'[profiles.work]\n{key} = "s3cret-value"\n'))
    assert f"[profiles.work] holds {key}, a secret" in message and "shared and committed" in message
    assert "s3cret-value" not in message
    if key == "hub-token":
        assert "hub-token-file" in message and "jupyter-dev-proxy login --profile work" in message


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    message = profiles_error(write_profiles(tmp_path, '[profiles.gpu]\nhub-url = "https://h.org"\nusername = alice\n'))
    assert f"The profiles file {tmp_path / 'config.toml'} is not valid TOML at line 3" in message


def test_a_value_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    table = profiles_error(write_profiles(tmp_path, "[profiles.a]\nserver-options = 2026-12-03\n"))
    assert "write it as a table" in table
    dated = profiles_error(write_profiles(tmp_path, "[profiles.a]\nserver-options = {{ since = 2026-12-03 }}\n"))
    assert "server-options = {'since': datetime.date(2026, 12, 3)} cannot be used: write it as a table of" in dated
    assert "write it as true or false" in profiles_error(write_profiles(tmp_path, "[profiles.a]\ntrace = 2026-12-03\n"))
    assert "write it as text or a number" in profiles_error(write_profiles(tmp_path, "[profiles.a]\nusername = true\n"))


def test_a_hub_token_in_defaults_is_refused(tmp_path: Path) -> None:
    message = profiles_error(write_profiles(tmp_path, '[defaults]\nhub-token-file = "t"\n[profiles.a]\n'))
    assert "[defaults] holds hub-token-file, but a hub token belongs to one hub" in message


# --- tokens: never the environment's ----------------------------------------------------------------------


def test_the_environments_hub_token_is_never_used_for_a_profile(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, '[profiles.work]\nhub-url = "https://work.example.org"\nusername = "alice"\n')
    message = settings_error(path, "--profile", "work", JUPYTERHUB_API_TOKEN="token-for-another-hub",
                             JUPYTERHUB_API_TOKEN_FILE=str(tmp_path / "also-another-hubs"))
    assert "The profile 'work' has no hub token: add hub-token-file (or hub-token-env)" in message
    assert "jupyter-dev-proxy login --profile work" in message and "token-for-another-hub" not in message


def test_a_token_kept_for_the_profiles_hub_is_used(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, '[profiles.work]\nhub-url = "https://work.example.org"\n')
    kept = {"https://work.example.org": ("alice", "kept-token")}

    def stored(hub: object, user: str) -> tuple[str, str, object] | None:
        found = kept.get(str(hub))
        return (*found, "the system keyring") if found else None  # type: ignore[return-value]
    settings = selected_settings(["--config", str(path), "--profile", "work"], {}, tmp_path, stored=stored)
    assert settings.hub_token == "kept-token" and settings.hub.user == "alice"


def test_hub_token_env_names_the_variable_that_holds_this_hubs_token(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, '[profiles.work]\nhub-url = "https://work.example.org"\nusername = "alice"\n'
                                    'hub-token-env = "WORK_HUB_TOKEN"\n')
    settings = selected_settings(["--config", str(path), "--profile", "work"], {"WORK_HUB_TOKEN": "w"}, tmp_path)
    assert settings.hub_token == "w" and settings.hub_token_setting == "WORK_HUB_TOKEN"
    message = settings_error(path, "--profile", "work")
    assert "takes its hub token from the variable WORK_HUB_TOKEN (hub-token-env" in message and "not set" in message


def test_hub_token_env_may_not_name_the_proxys_own_variables(tmp_path: Path) -> None:
    message = profiles_error(write_profiles(tmp_path, '[profiles.work]\nhub-token-env = "JUPYTERHUB_API_TOKEN"\n'))
    assert "hub-token-env names JUPYTERHUB_API_TOKEN, one of the proxy's own settings" in message


@pytest.mark.parametrize("moved", [("--hub-url", "https://elsewhere.org"), ("JUPYTERHUB_URL", "https://elsewhere.org"),
                                   ("JUPYTER_SERVER_IP_OR_NAME", "10.0.0.9")])
def test_a_flag_or_variable_may_not_move_a_profile_to_another_hub(
        tmp_path: Path, token_file: Path, moved: tuple[str, str]) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    setting, value = moved
    argv, environ = ([setting, value], {}) if setting.startswith("--") else ([], {setting: value})
    message = settings_error(path, "--profile", "gpu", *argv, **environ)
    assert re.match(rf"{setting} is set \((flag|environment)\) with the profile 'gpu'", message), message
    assert "a profile's token goes to its own hub only" in message


def test_a_profile_without_a_hub_says_to_add_hub_url(tmp_path: Path) -> None:
    message = settings_error(write_profiles(tmp_path, '[profiles.work]\nusername = "alice"\n'), "--profile", "work")
    assert "The profile 'work' in" in message and "names no hub: add hub-url" in message


def test_doctor_shows_a_profiles_settings_as_coming_from_the_profile_and_not_the_environments_token(
        tmp_path: Path, token_file: Path) -> None:
    path = write_profiles(tmp_path, TWO_PROFILES, token_file)
    profile = read_profiles(path, named=True).profile("gpu")
    environ = {"JUPYTERHUB_API_TOKEN": "another-hubs", "JUPYTER_PROXY_TRACE": "0"}
    origins = setting_origins(["--profile", "gpu"], environ, tmp_path, profile)
    assert ("JUPYTERHUB_URL", "profile", "https://hub.example.org") in origins
    assert ("JUPYTERHUB_NAMED_SERVER", "profile", "gpu") in origins
    assert ("JUPYTER_PROXY_TRACE", "environment", "0") in origins
    assert not [origin for origin in origins if origin[0] == "JUPYTERHUB_API_TOKEN"]


def test_a_relative_file_in_the_profiles_file_is_beside_it_not_where_the_proxy_starts(tmp_path: Path) -> None:
    (tmp_path / "work-token").write_text("work-token-value")
    path = write_profiles(tmp_path, '[profiles.work]\nhub-url = "https://work.example.org"\nusername = "alice"\n'
                                    'hub-token-file = "work-token"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = read_profiles(path, named=True).settings("work", [], {}, elsewhere)
    assert settings.hub_token == "work-token-value" and settings.token_source.path == tmp_path / "work-token"
