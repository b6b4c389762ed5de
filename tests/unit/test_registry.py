"""The registry's Lua write and prune scripts against a real Redis."""

import uuid

import pytest
import redis

from pulse.record.registry import Registry, step


@pytest.fixture
def registry(redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield Registry(client, prefix=prefix, retention=100, cap=1000, history_size=5)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def index(registry, field, value):
    return {m.decode() for m in registry.client.zrange(f"{registry.prefix}i:{field}:{value}", 0, -1)}


def test_lifecycle_moves_forward_and_indexes_follow(registry):
    registry.write("a", "scheduled", fields={"name": "job", "state": "PENDING"})
    assert index(registry, "status", "scheduled") == {"a"}
    registry.write("a", "running", fields={"state": "STARTED", "worker": "w1"})
    code, record = registry.write("a", "finished", fields={"state": "SUCCESS", "result": 5})
    assert code == 1 and record["status"] == "finished" and record["result"] == 5
    assert index(registry, "status", "scheduled") == set() and index(registry, "status", "running") == set()
    assert index(registry, "status", "finished") == {"a"}
    assert index(registry, "name", "job") == {"a"} and index(registry, "worker", "w1") == {"a"}
    assert index(registry, "state", "SUCCESS") == {"a"}


STORY = [  # a task's life as the monitor writes it, with a late start and a duplicate finish
    ("scheduled", {"name": "job", "state": "PENDING"}, {"sent_at": 1}, None),
    ("running", {"state": "STARTED", "worker": "w1"}, {"started_at": 2}, (2.0, 1)),
    ("finished", {"state": "SUCCESS", "result": 5}, {"finished_at": 3}, (3.0, 10)),
    ("running", {"state": "STARTED", "worker": "w2"}, {"started_at": 9}, None),
    ("finished", {"state": "SUCCESS", "result": 6, "runtime": 1.5}, {}, None),
]


def test_several_steps_in_one_call_end_as_the_same_writes_one_by_one(registry):
    for status, fields, fill, point in STORY:
        registry.write("one", status, fields=fields, fill=fill, point=point, now=100.0)
    code, batched = registry.write_steps(
        "many", [step(status, fields, fill, point) for status, fields, fill, point in STORY], now=100.0)
    alone = registry.get("one")
    together = registry.get("many")
    assert code == 0  # the last step (a duplicate finish) only filled gaps
    assert {k: v for k, v in together.items() if k != "id"} == {k: v for k, v in alone.items() if k != "id"}
    assert together["status"] == "finished" and together["result"] == 5 and together["runtime"] == 1.5
    assert index(registry, "status", "finished") == {"one", "many"}
    assert index(registry, "status", "running") == index(registry, "status", "scheduled") == set()
    assert index(registry, "worker", "w1") == {"one", "many"} and index(registry, "worker", "w2") == set()
    bucket = registry.client.hgetall(f"{registry.prefix}tp:{int(100 // 60)}")
    assert bucket == {b"finished": b"2"}  # each record's finish counted once


def test_a_step_whose_expectation_fails_is_skipped(registry):
    registry.write("a", "running")
    code, record = registry.write_steps("a", [step("lost", expect=["scheduled"]), step("finished")])
    assert code == 1 and record["status"] == "finished"
    code, record = registry.write_steps("a", [step("expired", expect=["failed"])])
    assert code == -1 and record["status"] == "finished"


@pytest.mark.parametrize("late", ["scheduled", "running", "retrying", "unstarted", "failed", "lost"])
def test_a_late_write_never_moves_a_finished_record(registry, late):
    registry.write("a", "finished", fields={"state": "SUCCESS", "result": 1})
    code, record = registry.write("a", late, fields={"state": "STARTED", "result": 2, "extra": "x"})
    assert code == 0
    assert record["status"] == "finished" and record["state"] == "SUCCESS" and record["result"] == 1
    assert record["extra"] == "x"  # a missing field is still filled in


def test_a_duplicated_terminal_write_only_fills_gaps(registry):
    registry.write("a", "failed", fields={"failure": {"details": {"step": 3}}})
    code, record = registry.write("a", "failed", fields={"failure": {"details": {}}, "worker": "w"})
    assert code == 0
    assert record["failure"] == {"details": {"step": 3}} and record["worker"] == "w"


def test_scheduled_after_running_is_ignored_but_retrying_and_running_alternate(registry):
    registry.write("a", "running")
    assert registry.write("a", "scheduled")[1]["status"] == "running"
    assert registry.write("a", "retrying")[1]["status"] == "retrying"
    assert registry.write("a", "running")[1]["status"] == "running"


@pytest.mark.parametrize(("start", "to", "moves"), [
    ("failed", "replayed", True), ("failed", "skipped", True), ("lost", "finished", True),
    ("lost", "skipped", True), ("finished", "expired", True), ("finished", "replayed", False),
    ("revoked", "running", False), ("skipped", "failed", False), ("abandoned", "running", False),
    ("expired", "finished", False), ("unstarted", "abandoned", True), ("scheduled", "revoked", True),
])
def test_edges_out_of_ended_statuses(registry, start, to, moves):
    registry.write("a", start)
    assert (registry.write("a", to)[1]["status"] == to) is moves


def test_expect_is_checked_atomically(registry):
    registry.write("a", "finished")
    code, record = registry.write("a", "skipped", expect=["failed", "lost"])
    assert code == -1 and record["status"] == "finished"
    assert registry.write("new", "abandoned", expect=["unstarted", "none"])[0] == 1


def test_history_is_bounded_and_oldest_first(registry):
    for n in range(8):
        registry.write("a", "running", fields={"progress": {"current": n}}, point=(100.0 + n, n))
    assert registry.get("a")["history"] == [[100.0 + s, float(s)] for s in range(3, 8)]


def test_children_and_unknown_records(registry):
    registry.write("child-1", "scheduled", parent="parent")
    registry.write("child-2", "scheduled", parent="parent")
    registry.write("parent", "running")
    assert registry.get("parent")["children"] == ["child-1", "child-2"]
    assert registry.get("nope") is None
    assert registry.get_many(["parent", "nope"])[1] is None


def test_prune_by_retention(registry):
    registry.write("old", "finished", now=1000.0)
    registry.write("fresh", "running", now=1200.0)
    assert registry.prune(now=1150.0) == 1
    assert registry.get("old") is None and registry.get("fresh") is not None
    assert index(registry, "status", "finished") == set()
    assert registry.size() == 1


def test_prune_to_the_cap_removes_the_oldest_finished_first(registry):
    registry.cap = 3
    registry.retention = 0
    registry.write("run-1", "running", now=1.0)
    for number in range(4):
        registry.write(f"done-{number}", "finished", now=10.0 + number)
    assert registry.prune(now=100.0) == 2
    assert registry.size() == 3
    remaining = {m.decode() for m in registry.client.zrange(f"{registry.prefix}i:all", 0, -1)}
    assert remaining == {"run-1", "done-2", "done-3"}


def test_purge_removes_a_record_and_its_index_entries(registry):
    registry.write("a", "finished", fields={"name": "job"}, point=(1.0, 1))
    registry.prune(purge=["a"])
    assert registry.get("a") is None and index(registry, "name", "job") == set()
    assert not registry.client.exists(f"{registry.prefix}h:a")


def test_throughput_counts_each_finish_once_per_minute(registry):
    registry.write("a", "running", now=6000.0)
    registry.write("a", "finished", now=6001.0)
    registry.write("a", "finished", now=6002.0)  # a duplicate report counts nothing
    registry.write("a", "expired", now=6003.0)
    registry.write("b", "failed", now=6010.0)
    registry.write("c", "lost", now=6020.0)
    registry.write("c", "finished", now=6070.0)  # a lost task that finished after all
    bucket = registry.client.hgetall(f"{registry.prefix}tp:100")
    assert bucket == {b"finished": b"1", b"failed": b"1"}
    assert registry.client.hgetall(f"{registry.prefix}tp:101") == {b"finished": b"1"}
    assert 0 < registry.client.ttl(f"{registry.prefix}tp:100") <= 7200


def test_queues_are_remembered(registry):
    registry.write("a", "scheduled", fields={"queue": "reports"})
    registry.write("b", "scheduled", fields={"queue": "celery"})
    assert registry.client.smembers(f"{registry.prefix}queues") == {b"reports", b"celery"}


def test_get_many_can_read_only_the_newest_history_points(registry):
    for n in range(5):
        registry.write("p", "running", point=(100.0 + n, n))
    full, = registry.get_many(["p"])
    short, = registry.get_many(["p"], points=lambda task_id: 2)
    assert [c for _t, c in full["history"]] == [0, 1, 2, 3, 4]
    assert short["history"] == full["history"][-2:]  # still oldest first


def test_updated_at_never_goes_back_when_a_writer_clock_lags(registry):
    registry.write("skew", "running", now=2000.0)
    _code, record = registry.write("skew", "finished", now=1990.0)  # a machine 10 s behind
    assert record["status"] == "finished"
    assert float(record["updated_at"]) == 2000.0
