"""The producer's record before publishing, and chain steps, through a real Celery app and Redis."""

import uuid

import pytest
from celery import chain, group

from pulse.agent.lifecycle import CALL_LIMIT
from pulse.server.model.results import use_lookup_only_backend
from tasks.celery import make_celery


@pytest.fixture
def app(redis_url):
    app = make_celery({"REDIS_URL": redis_url, "PULSE_REGISTRY_PREFIX": f"p{uuid.uuid4().hex[:8]}:"})
    app.conf.task_default_queue = f"nobody-{uuid.uuid4().hex[:6]}"  # no worker consumes it
    use_lookup_only_backend(app)  # nothing here waits on results: no per-send subscription
    return app


def test_a_sent_task_is_scheduled_before_anyone_sees_it(app):
    result = app.send_task("tasks.demo.count", args=[3], kwargs={"delay": 0.5})
    record = app.pulse.registry.get(result.id)
    assert record["status"] == "scheduled" and record["state"] == "PENDING"
    assert record["name"] == "tasks.demo.count" and record["queue"] == app.conf.task_default_queue
    assert record["args"] == "[3]" and record["kwargs"] == "{'delay': 0.5}"
    assert record["call"] == {"args": [3], "kwargs": {"delay": 0.5}}
    assert record["sent_at"] > 0 and record["retries"] == 0


def test_huge_or_non_json_arguments_are_not_kept_for_replay(app):
    huge = app.send_task("tasks.demo.count", args=["x" * (CALL_LIMIT + 1)])
    assert app.pulse.registry.get(huge.id).get("call") is None
    assert len(app.pulse.registry.get(huge.id)["args"]) <= 2048


def test_a_chain_records_its_later_steps_as_unstarted(app):
    count = app.signature("tasks.demo.count")
    result = chain(count.clone(kwargs={"total": 1}), count.clone(kwargs={"total": 2}),
                   count.clone(kwargs={"total": 3})).apply_async()
    last = result.id
    second = result.parent.id
    first = result.parent.parent.id
    registry = app.pulse.registry
    assert registry.get(first)["status"] == "scheduled"
    assert registry.get(first)["chain"] == [second, last]
    for step, total in ((second, 2), (last, 3)):
        record = registry.get(step)
        assert record["status"] == "unstarted" and record["chain_of"] == first
        assert record["call"] == {"args": [], "kwargs": {"total": total}}


def test_a_child_is_listed_on_its_parent(app):
    registry = app.pulse.registry
    parent = str(uuid.uuid4())
    child = app.send_task("tasks.demo.count", parent_id=parent, root_id=parent)
    assert registry.get(child.id)["parent_id"] == parent
    assert registry.client.smembers(f"{registry.prefix}c:{parent}") == {child.id.encode()}


def test_group_members_carry_their_group_id(app):
    count = app.signature("tasks.demo.count")
    result = group(count.clone(kwargs={"total": 1}), count.clone(kwargs={"total": 2})).apply_async()
    records = [app.pulse.registry.get(child.id) for child in result.results]
    assert {r["group_id"] for r in records} == {result.id}
    assert [r["status"] for r in records] == ["scheduled", "scheduled"]


def test_a_periodic_tasks_mark_is_kept_in_its_record(app):
    registry = app.pulse.registry
    named = app.send_task("tasks.demo.count", headers={"periodic_task_name": "nightly"})
    by_beat = app.send_task("tasks.demo.count", headers={"celery_beat_task": True})
    plain = app.send_task("tasks.demo.count", headers={"other": "x"})
    assert registry.get(named.id)["periodic_entry"] == "nightly"
    assert registry.get(by_beat.id)["periodic_entry"] is True
    assert "periodic_entry" not in registry.get(plain.id)


def test_what_this_celerys_beat_sends_is_recorded_as_sent_by_beat(app):
    # Celery's own scheduler, in process: its apply_async is what `celery beat` calls for a due entry.
    from celery.beat import ScheduleEntry, Scheduler

    entry = ScheduleEntry(name="every-minute", task="tasks.demo.count", schedule=60,
                          kwargs={"total": 2}, app=app)
    result = Scheduler(app, lazy=True).apply_async(entry, advance=False)
    record = app.pulse.registry.get(result.id)
    # celery 5.7 marks the message (celery_beat_task) but does not name the entry.
    assert record["periodic_entry"] is True
    assert record["call"] == {"args": [], "kwargs": {"total": 2}}
