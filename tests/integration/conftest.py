"""A real Redis for integration tests: ``redis-server`` on a free loopback port, no persistence.

``redis_server`` is session-scoped (any fixture may use it) and yields a
:class:`helpers.redis_server.RedisServer` with ``url``/``port`` and
``stop()``/``start()``/``pause()``/``resume()``/``flush()``/``client()`` to simulate outages;
``kill_redis`` hands a test the kill and restarts the server afterwards, so the next test finds
it running. Without ``redis-server`` the tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from helpers.redis_server import RedisServer
from integration.upstream_server import FakeUpstream

# Re-exported for type hints in tests; the class lives in helpers.redis_server.
__all__ = ["RedisServer"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running Redis for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kill_redis(redis_server: RedisServer) -> Iterator[Callable[[], None]]:
    """``kill_redis()`` kills the server now; it is restarted (empty) after the test."""
    yield redis_server.stop
    redis_server.resume()
    redis_server.start()
    redis_server.flush()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    """A fake edge and a fake cloud OpenAI upstream on loopback, one pair per test module."""
    edge, cloud = FakeUpstream("edge").start(), FakeUpstream("cloud").start()
    yield edge, cloud
    edge.stop()
    cloud.stop()
