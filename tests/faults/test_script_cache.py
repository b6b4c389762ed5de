"""The registry's pipelined writes after Redis lost its Lua scripts (Redis 7 restarts without
them): the script is loaded again and the pipeline's refused part runs again, reads included."""

import pytest
import redis

from pulse.record.registry import Registry

pytestmark = pytest.mark.faults


def test_a_pipeline_refused_for_its_script_is_run_again(faulty):
    client = redis.Redis.from_url(faulty.redis.url)
    registry = Registry(client, prefix="noscript-test:")
    try:
        pipe = registry.pipeline()
        registry.write("t1", "scheduled", fields={"name": "tasks.demo.count"}, client=pipe)
        registry.execute(pipe)  # the script is loaded now, and known to be
        client.script_flush()

        pipe = registry.pipeline()
        registry.write("t1", "running", fields={"state": "STARTED"}, point=(1.0, 3), client=pipe)
        registry.read_into(pipe, ["t1"])  # read in the same round trip: it must see the write
        record = registry.records(["t1"], registry.execute(pipe))[0]
        assert (record["status"], record["state"]) == ("running", "STARTED")
        assert record["name"] == "tasks.demo.count"
        assert record["history"] == [[1.0, 3.0]]  # written once, not once per attempt
    finally:
        keys = list(client.scan_iter("noscript-test:*"))
        if keys:
            client.delete(*keys)
        client.close()
