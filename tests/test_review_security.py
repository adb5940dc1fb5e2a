"""The security findings of the December 2026 review, each pinned by the behaviour that closes it: no token in
a browser cookie, only proxy traffic keeps the hub warm, the token file written safely, no credentials in the hub
URL, no cross-origin request relayed, a BOM-prefixed token file read, and security settings of a stray .env refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_dev_proxy.config import ConfigError, Settings, load_settings

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
