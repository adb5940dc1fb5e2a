"""Where the paths of a forwarded app's local port go on the hub, and how its answers are mapped back: pure rules,
every case (test_web_apps.py runs them against a real hub with jupyter-server-proxy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from jupyter_dev_proxy.config import ConfigError, ForwardedPort
from jupyter_dev_proxy.errors import ProxyError
from jupyter_dev_proxy.routing import Route, app_not_listening, app_path_for, client_response_headers, upstream_url_for
from tests.kit.settings import load, make_settings

WITH_A_TOKEN = {"JUPYTERHUB_API_TOKEN": "8f14e45fceea167a5a36dedd4bea2543"}
SETTINGS = make_settings("https://hub.example.org/jupyter/", None, None)
TENSORBOARD = Route.to_app(SETTINGS, ForwardedPort(6006, 16006))
ABSOLUTE = Route.to_app(SETTINGS, ForwardedPort(5000, 5000, absolute=True))


def test_the_app_is_at_the_root_of_its_port() -> None:
    assert TENSORBOARD.prefix == "/jupyter/user/alice/proxy/6006/"
    assert app_path_for(TENSORBOARD, "/") == "/jupyter/user/alice/proxy/6006/"
    assert app_path_for(TENSORBOARD, "/data/plugin?x") == "/jupyter/user/alice/proxy/6006/data/plugin?x"
    # Every path is the app's: the server's and the hub's paths are not special on an app's port.
    assert app_path_for(TENSORBOARD, "/hub/home") == "/jupyter/user/alice/proxy/6006/hub/home"
    assert app_path_for(TENSORBOARD, "/user/bob/") == "/jupyter/user/alice/proxy/6006/user/bob/"
    url = upstream_url_for(SETTINGS, "/api/echo?token=local&x=1", TENSORBOARD)
    assert str(url) == "https://hub.example.org/jupyter/user/alice/proxy/6006/api/echo?x=1"


def test_an_app_that_knows_its_whole_path_keeps_it() -> None:
    assert ABSOLUTE.prefix == "/jupyter/user/alice/proxy/absolute/5000/"
    assert app_path_for(ABSOLUTE, "/x") == "/jupyter/user/alice/proxy/absolute/5000/x"
    assert app_path_for(ABSOLUTE, "/jupyter/user/alice/proxy/absolute/5000/x") == ABSOLUTE.prefix + "x"
    assert app_path_for(ABSOLUTE, "/jupyter/user/al%69ce/proxy/absolute/5000/x") == ABSOLUTE.prefix + "x"


@given(st.sampled_from(["..", "%2e%2e", "%252e%252e", "."]), st.sampled_from([TENSORBOARD, ABSOLUTE]))
def test_no_path_on_an_app_port_climbs_out_of_the_app(segment: str, route: Route) -> None:
    with pytest.raises(ProxyError) as refused:
        app_path_for(route, f"/static/{segment}/{segment}/lab")
    assert refused.value.status == 400


def headers(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def test_the_apps_redirects_and_cookies_come_back_to_its_port() -> None:
    out = client_response_headers(SETTINGS, headers(
        ("Location", "/jupyter/user/alice/proxy/6006/login?next=runs"),
        ("Set-Cookie", "session=1; Path=/jupyter/user/alice/proxy/6006/"),
        ("Set-Cookie", "server=2; Path=/jupyter/user/alice/")), route=TENSORBOARD)
    assert out["Location"] == "/login?next=runs"
    assert out.getall("Set-Cookie") == ["session=1; Path=/"]  # the server's own cookie is not the app's
    with pytest.raises(ProxyError):  # to the hub's login: the token did not reach the server
        client_response_headers(SETTINGS, headers(("Location", "/jupyter/hub/login?next=x")), route=TENSORBOARD)


def test_only_jupyter_servers_own_500_means_nothing_listens() -> None:
    page = b"<title>Jupyter Server</title>\n<h1>500 : Internal Server Error</h1>"
    refusal = app_not_listening(TENSORBOARD, 500, page)
    assert refusal is not None and refusal.status == 502 and "port 6006" in refusal.message
    assert app_not_listening(TENSORBOARD, 500, b"[Errno 111] Connection refused") is not None  # when it streams
    assert app_not_listening(TENSORBOARD, 500, b"Traceback: the app's own error") is None
    assert app_not_listening(TENSORBOARD, 500, b"<p>database: [Errno 111] Connection refused</p>") is None
    assert app_not_listening(TENSORBOARD, 200, page) is None
    assert app_not_listening(Route.to_server(SETTINGS), 500, page) is None  # the server's own page is passed on


def test_forwards_are_read_as_users_write_them(tmp_path: Path) -> None:
    settings = load(tmp_path, JUPYTER_PROXY_FORWARD=" 6006, 8050:18050 ,5000/absolute,", JUPYTER_PROXY_PORT="8000",
                    **WITH_A_TOKEN)
    assert settings.forwards == (ForwardedPort(6006, 6006), ForwardedPort(8050, 18050),
                                 ForwardedPort(5000, 5000, absolute=True))
    assert load(tmp_path, "--forward", "6006:0", **WITH_A_TOKEN).forwards == (ForwardedPort(6006, 0),)
    assert load(tmp_path).forwards == ()


@pytest.mark.parametrize(("value", "says"), [
    ("tensorboard", "not a port number"), ("6006:99999", "not a port number"), ("6006/abs", "/absolute after it"),
    ("8000", "the proxy's own"), ("6006,7007:6006", "twice"), ("0", "not a port number"),
])
def test_forwards_that_cannot_work_are_refused_with_the_fix(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(tmp_path, JUPYTER_PROXY_FORWARD=value, JUPYTER_PROXY_PORT="8000", **WITH_A_TOKEN)


def test_forwards_without_a_hub_token_are_refused(tmp_path: Path) -> None:
    """The IDE's own token would go to the hub, and a browser opening an app would carry it in every address."""
    with pytest.raises(ConfigError, match="needs a hub token"):
        load(tmp_path, JUPYTER_PROXY_FORWARD="6006")
