"""The security findings of the December 2026 review, each pinned by the behaviour that closes it: no token in
a browser cookie, only proxy traffic keeps the hub warm, the token file written safely, no credentials in the hub
URL, no cross-origin request relayed, a BOM-prefixed token file read, and security settings of a stray .env refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_dev_proxy.config import ConfigError, Settings, load_settings, setting_origins

# The least a user must set: where the hub is and who they are.
MINIMAL_ENV = {"JUPYTER_SERVER_IP_OR_NAME": "10.0.0.5", "JUPYTER_USERNAME": "alice"}


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """An empty working directory: no .env unless a test writes one."""
    directory = tmp_path / "cwd"
    directory.mkdir()
    return directory


def load(cwd: Path, *argv: str, **environ: str) -> Settings:
    return load_settings(list(argv), {**MINIMAL_ENV, **environ}, cwd)


def load_error(cwd: Path, *argv: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(cwd, *argv, **environ)
    return str(caught.value)


# --- S2: a token file saved with a byte-order mark -------------------------------------------------------------

@pytest.mark.parametrize("content", ["\ufeffthe-hub-token\r\n", "\ufeff  the-hub-token  \n"])
def test_a_token_file_with_a_utf8_byte_order_mark_gives_the_token_without_it(
        cwd: Path, tmp_path: Path, content: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(content.encode("utf-8"))  # as PowerShell 5's Out-File -Encoding utf8 writes it
    assert load(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file)).hub_token == "the-hub-token"


def test_a_token_file_holding_only_a_byte_order_mark_is_empty(cwd: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes("\ufeff\n".encode("utf-8"))
    assert "is empty" in load_error(cwd, JUPYTERHUB_API_TOKEN_FILE=str(token_file))


# --- #11: credentials in the hub URL ---------------------------------------------------------------------------

_HUB_PASSWORD = "gw-password-123"


@pytest.mark.parametrize("hub_url", [f"https://alice:{_HUB_PASSWORD}@hub.invalid/",
                                     f"https://alice:{_HUB_PASSWORD}@example.edu/jupyter/",
                                     "https://alice@hub.invalid/"])
def test_a_hub_url_with_a_user_or_password_is_refused_without_echoing_it(cwd: Path, hub_url: str) -> None:
    for how in ({"environ": {"JUPYTERHUB_URL": hub_url}}, {"argv": ["--hub-url", hub_url]}):
        with pytest.raises(ConfigError) as caught:
            load_settings(how.get("argv", []), {"JUPYTER_USERNAME": "alice", **how.get("environ", {})}, cwd)
        message = str(caught.value)
        assert "JUPYTERHUB_URL" in message and "user name or password" in message
        assert _HUB_PASSWORD not in message and "alice@" not in message and "alice:" not in message
        assert "\n" not in message and message.endswith(".")


def test_a_hub_url_the_proxy_cannot_read_is_quoted_without_its_password(cwd: Path) -> None:
    message = load_error(cwd, JUPYTERHUB_URL=f"ftp://alice:{_HUB_PASSWORD}@hub.invalid/",
                         JUPYTER_SERVER_IP_OR_NAME="")
    assert "is not a hub address" in message and _HUB_PASSWORD not in message


def test_the_settings_doctor_shows_mask_the_hub_urls_credentials(cwd: Path) -> None:
    origins = setting_origins([], {"JUPYTERHUB_URL": f"https://alice:{_HUB_PASSWORD}@hub.invalid/x/"}, cwd)
    assert ("JUPYTERHUB_URL", "environment", "https://***@hub.invalid/x/") in origins
    assert _HUB_PASSWORD not in repr(origins)


def test_a_hub_name_with_credentials_is_quoted_without_them(cwd: Path) -> None:
    message = load_error(cwd, JUPYTER_SERVER_IP_OR_NAME=f"alice:{_HUB_PASSWORD}@hub.invalid")
    assert "JUPYTER_SERVER_IP_OR_NAME" in message and _HUB_PASSWORD not in message
