"""In-process app fixtures (threading mode, no background tasks) against the real Redis."""

import uuid

import pytest
import redis

from pulse.record.registry import Registry
from tests.conftest import demo_server

from ..conftest import TOKEN, log_in


@pytest.fixture
def redis_url(redis_url):
    """The session Redis, but database 1: no worker consumes what unit tests enqueue."""
    return redis_url.rsplit("/", 1)[0] + "/1"


@pytest.fixture
def registry(redis_url):
    """A registry under a prefix of its own, its keys deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"r{uuid.uuid4().hex[:8]}:"
    yield Registry(client, prefix=prefix)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


@pytest.fixture
def app(redis_url):
    # A registry of its own per test: the unit database is shared by every unit test.
    return demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "PULSE_ASYNC_MODE": "threading",
                        # Tests send wrong credentials on purpose; the throttle's own tests lower it.
                        "PULSE_AUTH_ATTEMPTS": "100000",
                       "PULSE_REGISTRY_PREFIX": f"u{uuid.uuid4().hex[:10]}:"})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth_headers():
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def logged_in(client):
    """A test client with an operator session; returns (client, csrf token)."""
    response = log_in(client, TOKEN)
    assert response.status_code == 302
    with client.session_transaction() as session:
        return client, session["csrf"]
