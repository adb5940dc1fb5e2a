"""Where things are on the hub: names escaped as the hub escapes them, the default server by default."""

from __future__ import annotations

import pytest
from yarl import URL

from tests.kit.settings import make_settings


@pytest.mark.parametrize("user,server,prefix", [
    ("alice", "", "/user/alice/"),
    ("alice", "dev", "/user/alice/dev/"),
    ("alice smith", "my server", "/user/alice%20smith/my%20server/"),
    ("al@ce~", "gpu~1", "/user/al@ce~/gpu~1/"),
    ("émile", "été", "/user/%C3%A9mile/%C3%A9t%C3%A9/"),
])
def test_a_named_server_prefix_is_escaped_like_the_hub_escapes_it(user: str, server: str, prefix: str) -> None:
    settings = make_settings("https://hub", None, "hub", user=user, server=server)
    assert settings.hub.server_prefix == prefix


def test_settings_built_by_tests_still_default_to_the_default_server() -> None:
    settings = make_settings("https://hub", None, "hub")
    assert (settings.hub.server, settings.hub.server_label, settings.hub.origin) == ("", "default server", URL("https://hub"))
