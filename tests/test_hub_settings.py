"""The settings that concern the hub: the username left to the hub, named servers, the start policy, which token
setting advice names."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_dev_proxy.config import ConfigError, Settings, load_settings


def _load(tmp_path: Path, *argv: str, **environ: str) -> Settings:
    return load_settings(list(argv), {"JUPYTERHUB_URL": "https://hub.example.org", **environ}, tmp_path)


def test_with_a_hub_token_the_username_may_be_left_to_the_hub(tmp_path: Path) -> None:
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN="t").hub.user == ""


def test_without_a_hub_token_the_username_is_still_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JUPYTER_USERNAME"):
        _load(tmp_path)


def test_the_named_server_and_start_policy_are_read_from_flags_and_environment(tmp_path: Path) -> None:
    settings = _load(tmp_path, "--named-server", "dev", JUPYTERHUB_API_TOKEN="t", JUPYTER_PROXY_START_SERVER="Always")
    assert (settings.hub.server, settings.start_server) == ("dev", "always")
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN="t").start_server == "at-startup"


def test_start_server_always_needs_a_hub_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JUPYTER_PROXY_START_SERVER=always needs a hub token"):
        _load(tmp_path, "--start-server", "always", JUPYTER_USERNAME="alice")


@pytest.mark.parametrize("value", ["sometimes", "yes"])
def test_an_unknown_start_policy_is_a_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="at-startup, always, never"):
        _load(tmp_path, "--start-server", value, JUPYTERHUB_API_TOKEN="t")


@pytest.mark.parametrize("name", ["a/b", "..", "/"])
def test_a_named_server_with_a_slash_or_dots_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="JUPYTERHUB_NAMED_SERVER"):
        _load(tmp_path, JUPYTERHUB_API_TOKEN="t", JUPYTERHUB_NAMED_SERVER=name)


def test_the_token_setting_named_in_advice_is_the_one_used(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t\n")
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN_FILE=str(token_file)).hub_token_setting == "JUPYTERHUB_API_TOKEN_FILE"
    assert _load(tmp_path, JUPYTERHUB_API_TOKEN="t").hub_token_setting == "JUPYTERHUB_API_TOKEN"
