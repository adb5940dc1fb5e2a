"""Shared fixtures: a real TLS Jupyter server, a TLS echo upstream, and the proxy in front of either, in the test's
event loop or as a process."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from yarl import URL

from jupyter_dev_proxy.app import ProxyRunner
from jupyter_dev_proxy.config import Settings
from jupyter_dev_proxy.demo import DemoServer, start_demo_server
from tests.kit.fakehubs import SEEN, CountingUpstream, echo_app
from tests.kit.process import ProxyProcess
from tests.kit.settings import HUB_TOKEN, LOCAL_TOKEN, Proxy, make_settings

# The user's own configuration directory (a profiles file, kept tokens) is never what a test reads: every proxy the
# suite starts, in this process or as a child, sees an empty one unless its test gives it another.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="jupyter-dev-proxy-test-config-")


class EventLoop(str, enum.Enum):
    """The event loops the in-process tests can run on: the CLI runs uvloop when it is installed."""

    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--event-loop", choices=[loop.value for loop in EventLoop], default=EventLoop.ASYNCIO.value,
                     help="the event loop every in-process async test and fixture runs on (default: asyncio; the "
                          "proxy's CLI runs uvloop)")


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio's hook: one loop factory, the one ``--event-loop`` names, so test ids stay as they are."""
    loop = EventLoop(config.getoption("event_loop"))
    if loop is EventLoop.UVLOOP:
        try:
            import uvloop
        except ImportError as missing:
            raise pytest.UsageError("--event-loop uvloop needs uvloop (pip install uvloop; not on Windows)") \
                from missing
        return {loop.value: uvloop.new_event_loop}
    return {loop.value: asyncio.new_event_loop}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``, as ``make test`` runs): the tests of a module that share a
    module-scoped fixture (a real hub, tinyproxy, nginx) go to one worker, which starts it once; every other test
    goes wherever a worker is free."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures the test uses
        if fixtures is not None and any(definitions[-1].scope == "module"
                                        for definitions in fixtures.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    # Tests marked ``waits`` are handed out first: their seconds of waiting then overlap the CPU-bound rest
    # instead of trailing after it. (A stable sort: every module keeps its order.)
    items.sort(key=lambda item: item.get_closest_marker("waits") is None)


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test: whatever the proxy logged (access log included) never holds either token."""
    caplog.set_level(logging.DEBUG)
    yield
    leaked = [r.getMessage() for r in caplog.records if LOCAL_TOKEN in r.getMessage() or HUB_TOKEN in r.getMessage()]
    assert leaked == []


@pytest.fixture(scope="session")
def jupyter_upstream() -> Iterator[DemoServer]:
    """A real jupyter_server + ipykernel at https://127.0.0.1:<port>/user/alice/ (cert for 'jupyterhub')."""
    server = start_demo_server("alice")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture
async def echo_upstream(aiohttp_server: Callable[..., Awaitable[Any]],
                        tls_ca: tuple[trustme.CA, Path]) -> web.Application:
    """The echo upstream (tests/kit/fakehubs.py) over TLS, with a certificate for 'jupyterhub'."""
    ca, _ = tls_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("jupyterhub", "127.0.0.1").configure_cert(context)
    return await aiohttp_server(echo_app(), ssl=context)


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[[Settings], Awaitable[Proxy]]]:
    """Start the proxy in this event loop, with the runner options the CLI uses (not aiohttp's test
    server, which cancels handlers when a client disconnects and so behaves differently)."""
    runners: list[ProxyRunner] = []

    async def start(settings: Settings) -> Proxy:
        runner = ProxyRunner(settings)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return Proxy(url=URL(f"http://127.0.0.1:{runner.addresses[0][1]}"), settings=settings)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def jupyter_proxy(jupyter_upstream: DemoServer, start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> Proxy:
    """The proxy in front of the real Jupyter server, as a user would configure it."""
    return await start_proxy(make_settings(jupyter_upstream.url, jupyter_upstream.ca_file,
                                           jupyter_upstream.tls_name, hub_token=jupyter_upstream.token))


@pytest.fixture
async def echo_proxy(echo_upstream: Any, tls_ca: tuple[trustme.CA, Path],
                     start_proxy: Callable[[Settings], Awaitable[Proxy]]) -> Proxy:
    """The proxy in front of the echo upstream; ``echo_proxy.settings`` has the upstream's address."""
    return await start_proxy(make_settings(f"https://127.0.0.1:{echo_upstream.port}", tls_ca[1], "jupyterhub"))


@pytest.fixture
def echo_seen(echo_upstream: Any) -> list[web.Request]:
    """Every request that reached the echo upstream."""
    return echo_upstream.app[SEEN]


@pytest.fixture
def proxies() -> Iterator[list[ProxyProcess]]:
    """Proxy processes a test starts (``tests.kit.process.run_proxy``); all stopped at its end."""
    started: list[ProxyProcess] = []
    yield started
    for proxy in started:
        proxy.stop()


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """An empty working directory: no .env unless a test writes one."""
    directory = tmp_path / "cwd"
    directory.mkdir()
    return directory


@pytest.fixture
async def counting_hub() -> AsyncIterator[CountingUpstream]:
    """A raw hub that records which connection each request came on (tests/kit/fakehubs.py)."""
    hub = CountingUpstream()
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()
