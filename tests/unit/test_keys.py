"""Key names: their exact spelling (existing data and the Lua scripts depend on it), and their one owner."""

import re
from pathlib import Path

import redis

from pulse.record.keys import Keys
from pulse.record.registry import Registry

PULSE = Path(__file__).resolve().parents[2] / "pulse"
# kombu's fanout prefix for the event channel (a pub/sub channel, not a Pulse key): the one
# ``prefix}`` outside pulse/record, allowed as this exact line so that a key built beside it still fails.
NOT_KEYS = {("agent/wire.py",
             'return f"{prefix}{exchange}/{routing_key}" if patterns else f"{prefix}{exchange}"')}


def test_every_family_is_spelled_as_stored():
    keys = Keys("p:")
    assert keys.task("abc") == "p:t:abc"
    assert keys.history("abc") == "p:h:abc"
    assert keys.children("abc") == "p:c:abc"
    assert keys.index("status", "running") == "p:i:status:running"
    assert keys.index("group", "g1") == "p:i:group:g1"
    assert keys.all == "p:i:all"
    assert keys.updated == "p:i:updated"
    assert keys.ended == "p:i:ended"
    assert keys.names == "p:names"
    assert keys.queues == "p:queues"
    assert keys.chord_body("g1") == "p:chord:g1"
    assert keys.unit_max("g1") == "p:unitmax:g1"
    assert keys.goal("nightly") == "p:goal:nightly"
    assert keys.goal_lock("nightly") == "p:goal-lock:nightly"
    assert keys.token_revocation("abc") == "p:tokrev:abc"
    assert keys.auth_failures("10.0.0.1", 28000000) == "p:auth-failures:10.0.0.1:28000000"
    assert keys.session("abc") == "p:session:abc"
    assert keys.throughput(28000000) == "p:tp:28000000"
    assert keys.audit == "p:audit"
    assert keys.temporary("f00") == "p:tmp:f00"


def test_the_default_prefix_is_pulse():
    assert Keys().task("abc") == "pulse:t:abc"


def test_a_registry_names_its_keys_by_its_prefix():
    registry = Registry(redis.Redis(), prefix="p:")
    assert registry.keys.prefix == "p:" and registry.key("abc") == "p:t:abc"
    registry.prefix = "q:"  # tests give a built registry a prefix of their own
    assert registry.keys.all == "q:i:all" and registry.key("abc") == "q:t:abc"


def test_the_write_script_spells_the_keys_as_keys_does(registry):
    registry.write("parent", "running")
    registry.write("child", "finished", fields={"name": "job", "queue": "celery", "group_id": "g1"},
                   point=(100.0, 1.0), parent="parent", now=6000.0)
    keys, client = registry.keys, registry.client
    for key in (keys.task("child"), keys.history("child"), keys.children("parent"),
                keys.index("name", "job"), keys.index("status", "finished"), keys.index("group", "g1"),
                keys.all, keys.updated, keys.ended, keys.names, keys.queues, keys.throughput(100)):
        assert client.exists(key), key


def test_no_module_outside_the_record_builds_a_key_from_a_prefix():
    found = [(str(path.relative_to(PULSE)), line.strip())
             for path in sorted(PULSE.rglob("*.py")) if PULSE / "record" not in path.parents
             for line in path.read_text().splitlines() if re.search(r"prefix\}", line)]
    assert [hit for hit in found if hit not in NOT_KEYS] == []
