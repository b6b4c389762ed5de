"""Connections that Redis closed while they sat in the server's pool (as a restart does): the
first call on each is tried again on a new connection, not answered as an outage."""

import pytest
import redis

pytestmark = pytest.mark.faults


def test_healthz_is_ok_at_once_after_redis_closed_the_pooled_connections(fault):
    assert fault.health()["redis"]["ok"] is True  # the server's pool now holds a connection
    client = redis.Redis.from_url(fault.redis.url)
    try:
        assert client.client_kill_filter(_type="normal", skipme=True) > 0
    finally:
        client.close()
    health = fault.health()
    assert health["redis"]["ok"] is True, health
