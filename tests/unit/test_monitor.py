"""The event monitor, fed synthetic Celery events, writing into a real Redis registry."""

import itertools
import threading
import time
import uuid

import pytest
import redis

from pulse import devstack
from pulse.agent import wire
from pulse.server.ingest.monitor import Monitor
from pulse.server.ingest.stream import UNDECODABLE
from pulse.server.model.store import TaskStore
from tasks.celery import make_celery

from ..conftest import wait_until

_clock = itertools.count()


def event(kind: str, task: str = "t1", **fields) -> dict:
    now = time.time()
    return {"type": kind, "uuid": task, "hostname": "w1@host", "timestamp": now,
            "local_received": now, "clock": next(_clock), **fields}


def make_monitor(redis_url, **kwargs) -> Monitor:
    app = make_celery({"REDIS_URL": redis_url})
    app.pulse.registry.prefix = f"m{uuid.uuid4().hex[:8]}:"  # a registry of this test's own
    return Monitor(app, TaskStore(app.pulse.registry, app), **kwargs)


@pytest.fixture
def seen():
    return []


@pytest.fixture
def monitor(redis_url, seen):
    return make_monitor(redis_url, on_task=seen.append)


def progress(monitor, current, total=10, message=None, task="t1") -> dict:
    """What the worker's report_progress writes at the source, then its live event."""
    fields = {"current": current, "total": total, "percent": current * 100.0 / total, "message": message}
    monitor.store.registry.write(task, "running", fields={"state": "PROGRESS", "progress": fields},
                                 point=(time.time(), current))
    return event("task-progress", task, **fields)


def test_a_task_story_from_sent_to_success(monitor, seen):
    monitor.handle(event("task-sent", name="tasks.demo.count", args="()", kwargs="{}"))
    monitor.handle(event("task-received", name="tasks.demo.count"))
    monitor.handle(event("task-started"))
    for step in (1, 5, 9):
        monitor.handle(progress(monitor, step, message=f"at {step}"))
    monitor.handle(event("task-succeeded", result="10", runtime=0.5))
    assert [d["status"] for d in seen] == ["scheduled", "scheduled", "running", "running", "running",
                                           "running", "finished"]
    assert [d["progress"]["percent"] for d in seen[3:]] == [10.0, 50.0, 90.0, 100.0]
    final = seen[-1]
    assert final["state"] == "SUCCESS" and final["name"] == "tasks.demo.count"
    assert final["progress"]["current"] == 10 and final["progress"]["message"] == "at 9"
    assert final["worker"] == "w1@host" and final["runtime"] == 0.5
    assert len(final["history"]) == 3


@pytest.mark.parametrize("late", ["task-started", "task-received", "task-retried", "task-sent"])
def test_a_late_event_never_moves_a_finished_task(monitor, seen, late):
    monitor.handle(event("task-succeeded", result="1"))
    monitor.handle(event(late, name="x"))
    assert seen[-1]["state"] == "SUCCESS" and seen[-1]["status"] == "finished"
    assert monitor.store.registry.get("t1")["status"] == "finished"


def test_structured_failure_details_from_the_event(monitor, seen):
    monitor.handle(event("task-failed", exception="ValueError('x')", exc_type="ValueError",
                         exc_message=["x"], details={"step": 2}, traceback="tb"))
    assert seen[-1]["failure"] == {"exc_type": "ValueError", "exc_message": "x", "traceback": "tb",
                                   "details": {"step": 2}}


def test_the_first_failure_report_wins(monitor, seen):
    # The worker's signal writes the full story first; the event's repr must not replace it.
    monitor.store.registry.write("t1", "failed", fields={"state": "FAILURE", "failure": {
        "exc_type": "ValueError", "exc_message": "full", "traceback": "tb", "details": {"k": 1}}})
    monitor.handle(event("task-failed", exception="ValueError('short')", traceback="tb"))
    assert seen[-1]["failure"]["exc_message"] == "full" and seen[-1]["failure"]["details"] == {"k": 1}


def test_progress_before_started_is_not_undone_by_started(monitor, seen):
    # The pool child (progress) and the main process (started) publish independently.
    monitor.handle(progress(monitor, 2))
    monitor.handle(event("task-started"))
    assert seen[-1]["status"] == "running" and seen[-1]["progress"]["current"] == 2


def test_a_batch_writes_every_event_and_pushes_each_task_once(monitor, seen):
    story = [event("task-sent", name="tasks.demo.count", args="()", kwargs="{}", queue="celery"),
             event("task-received", name="tasks.demo.count"), event("task-started"),
             progress(monitor, 5), event("task-started", task="t2"), progress(monitor, 9),
             event("task-succeeded", result="10", runtime=0.5), {"type": "task-started", "uuid": "<bad>"},
             event("task-progress", current=2)]  # late: never undoes the finish
    monitor.handle_batch(story)
    assert [(d["id"], d["status"]) for d in seen] == [("t2", "running"), ("t1", "finished")]
    record = monitor.store.registry.get("t1")
    assert (record["state"], record["queue"], record["runtime"]) == ("SUCCESS", "celery", 0.5)
    assert {"sent_at", "received_at", "started_at", "finished_at"} <= set(record)
    assert monitor.events_seen == 8  # the malformed one is skipped
    assert monitor.state.tasks == {}  # tasks live in the registry only


def test_retry_then_a_new_run(monitor, seen):
    for e in [event("task-started"), event("task-retried", exception="Retry"), event("task-started"),
              event("task-succeeded", result="ok")]:
        monitor.handle(e)
    assert [d["status"] for d in seen] == ["running", "retrying", "running", "finished"]


def test_malformed_events_are_skipped(monitor, seen):
    monitor.handle({"type": "task-started"})  # no uuid, hostname or timestamp
    monitor.handle({"no": "type"})
    monitor.handle(event("task-started"))
    assert [d["status"] for d in seen] == ["running"]


def test_worker_events_update_the_workers(monitor, seen):
    monitor.handle({"type": "worker-heartbeat", "hostname": "w2@host", "timestamp": time.time(),
                    "local_received": time.time(), "freq": 2.0, "active": 1, "processed": 3})
    assert monitor.state.workers["w2@host"].alive
    assert seen == []


def test_final_events_take_the_real_result_from_the_backend(monitor, seen):
    monitor.celery.backend.store_result("t1", {"rows": 3}, "SUCCESS")
    monitor.handle(event("task-succeeded", result="{'rows': 3}"))
    assert seen[-1]["result"] == {"rows": 3}


def test_monitor_reconnects_after_redis_restarts(tmp_path):
    """A real Redis goes away and comes back on the same port: the monitor carries on."""
    port = devstack.free_port()
    redis = devstack.start_redis(port, tmp_path)
    statuses, seen = [], []
    monitor = make_monitor(f"redis://127.0.0.1:{port}/0", on_task=seen.append, on_status=statuses.append,
                           idle_timeout=2)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: monitor.connected, 10, what="first connection")
        devstack.stop(redis)
        wait_until(lambda: not monitor.connected, 15, what="the outage to be noticed")
        redis = devstack.start_redis(port, tmp_path)
        wait_until(lambda: monitor.connected, 30, what="the reconnection")

        def deliver():
            with monitor.celery.events.default_dispatcher(hostname="w@h") as dispatcher:
                dispatcher.send("task-started", uuid="after-restart")
            return any(d["id"] == "after-restart" for d in seen)

        wait_until(deliver, 15, 0.5, what="an event after the restart")
        assert statuses[:3] == [True, False, True]
    finally:
        monitor.stop()
        devstack.stop(redis)
        thread.join(15)
    assert not thread.is_alive()


def test_a_cleanly_stopped_worker_keeps_its_last_sighting(monitor):
    from pulse.server.model.listing import Listing
    from pulse.server.model.workers import worker_json

    now = time.time()
    monitor.handle({"type": "worker-heartbeat", "hostname": "bye@h", "timestamp": now - 3,
                    "local_received": now - 3, "freq": 2.0})
    monitor.handle({"type": "worker-offline", "hostname": "bye@h", "timestamp": now, "local_received": now})
    data = worker_json(monitor, monitor.store, Listing(monitor.store.registry), "bye@h")
    assert data["online"] is False and data["expires_at"] is None
    assert data["last_heartbeat"] == pytest.approx(now)


def test_spawned_writes_keep_the_stream_in_order(redis_url):
    """The run loop hands each batch's writes to another thread while it reads the next."""

    def spawn(target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        return thread

    seen = []
    monitor = make_monitor(redis_url, on_task=seen.append, spawn=spawn, max_batch=7)
    runner = threading.Thread(target=monitor.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: monitor.connected, 10, what="the connection")
        time.sleep(0.3)  # subscribed
        with monitor.celery.events.default_dispatcher(hostname="w@h") as dispatcher:
            dispatcher.send("task-started", uuid="ordered")
            for number in range(1, 61):
                monitor.store.registry.write("ordered", "running", fields={"progress": {"current": number}})
                dispatcher.send("task-progress", uuid="ordered", current=number)
            dispatcher.send("task-succeeded", uuid="ordered", runtime=1.0)
        wait_until(lambda: seen and seen[-1]["status"] == "finished", 15, what="the finish")
    finally:
        monitor.stop()
        runner.join(15)
    assert monitor.events_seen >= 62
    statuses = [d["status"] for d in seen]
    assert statuses[-1] == "finished" and "finished" not in statuses[:-1]  # never out of order


def test_messages_that_are_no_event_are_counted(redis_url):
    """A stray publisher on the event channel: each message counted as undecodable, none fatal."""
    counted: list[dict] = []
    monitor = make_monitor(redis_url, on_events=counted.append)
    runner = threading.Thread(target=monitor.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: monitor.connected, 10, what="the connection")
        time.sleep(0.3)  # subscribed
        prefix, patterns = wire.topic_prefix(monitor.celery)
        stray = wire.topic(prefix, patterns, monitor.celery.conf.event_exchange, "task.progress")
        publisher = redis.Redis.from_url(redis_url)
        for _ in range(3):
            publisher.publish(stray, b"not an event")
        with monitor.celery.events.default_dispatcher(hostname="w@h") as dispatcher:
            dispatcher.send("task-started", uuid="after-the-stray-ones")
        wait_until(lambda: sum(kinds.get("task-started", 0) for kinds in counted), 10, what="the real event")
    finally:
        monitor.stop()
        runner.join(15)
    assert sum(kinds.get(UNDECODABLE, 0) for kinds in counted) == 3
