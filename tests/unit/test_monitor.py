"""The event monitor, fed synthetic Celery events (its backend reads go to a real Redis)."""

import itertools
import threading
import time

import pytest

from pulse import devstack
from pulse.monitor import Monitor
from tasks.celery import make_celery

from ..conftest import wait_until

_clock = itertools.count()


def event(kind: str, uuid: str = "t1", **fields) -> dict:
    now = time.time()
    return {"type": kind, "uuid": uuid, "hostname": "w1@host", "timestamp": now,
            "local_received": now, "clock": next(_clock), **fields}


def progress(current, total=10, message=None, uuid="t1") -> dict:
    percent = None if total is None else current * 100.0 / total
    return event("task-progress", uuid, current=current, total=total, percent=percent, message=message)


@pytest.fixture
def seen():
    return []


@pytest.fixture
def monitor(redis_url, seen):
    return Monitor(make_celery({"REDIS_URL": redis_url}), on_task=seen.append)


def test_a_task_story_from_sent_to_success(monitor, seen):
    for e in [event("task-sent", name="tasks.demo.count"), event("task-received", name="tasks.demo.count"),
              event("task-started"), progress(1), progress(5, message="half"), progress(9),
              event("task-succeeded", result="10", runtime=0.5)]:
        monitor.handle(e)
    assert [d["status"] for d in seen] == ["scheduled", "scheduled", "running", "running", "running",
                                           "running", "finished"]
    assert [d["progress"]["percent"] for d in seen[3:]] == [10.0, 50.0, 90.0, 100.0]
    final = seen[-1]
    assert final["state"] == "SUCCESS" and final["name"] == "tasks.demo.count"
    assert final["progress"] == {"current": 10, "total": 10, "percent": 100.0, "message": None}
    assert final["worker"] == "w1@host" and final["runtime"] == 0.5


@pytest.mark.parametrize("late", [progress(3, message="late"), event("task-started"),
                                  event("task-received"), event("task-retried")])
def test_a_late_event_never_moves_a_finished_task(monitor, seen, late):
    monitor.handle(progress(9, message="last"))
    monitor.handle(event("task-succeeded", result="1"))
    monitor.handle(late)
    assert seen[-1]["state"] == "SUCCESS"
    assert seen[-1]["progress"] == {"current": 10, "total": 10, "percent": 100.0, "message": "last"}


def test_late_failure_details_stay_after_late_progress(monitor, seen):
    monitor.handle(event("task-failed", exception="ValueError('x')", exc_type="ValueError",
                         exc_message=["x"], details={"step": 2}, traceback="tb"))
    monitor.handle(progress(1))
    assert seen[-1]["state"] == "FAILURE"
    assert seen[-1]["failure"]["details"] == {"step": 2}
    assert seen[-1]["progress"] is None


def test_progress_before_started_is_not_undone_by_started(monitor, seen):
    # The pool child (progress) and the main process (started) publish independently.
    monitor.handle(progress(2))
    monitor.handle(event("task-started"))
    assert seen[-1]["state"] == "PROGRESS" and seen[-1]["progress"]["current"] == 2


def test_retry_then_a_new_run(monitor, seen):
    for e in [event("task-started"), event("task-retried", exception="Retry"), event("task-started"),
              event("task-succeeded", result="ok")]:
        monitor.handle(e)
    assert [d["status"] for d in seen] == ["running", "retrying", "running", "finished"]


def test_unknown_total_has_no_percent(monitor, seen):
    monitor.handle(progress(7, total=None, message="rows"))
    assert seen[-1]["progress"] == {"current": 7, "total": None, "percent": None, "message": "rows"}


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


def test_record_sent_makes_a_fresh_task_known(monitor):
    monitor.record_sent("fresh-1", "tasks.demo.count")
    data = monitor.describe("fresh-1")
    assert data["status"] == "scheduled" and data["name"] == "tasks.demo.count"


def test_describe_reads_the_backend_for_tasks_it_never_saw(monitor):
    monitor.celery.backend.store_result("seen-by-backend-only", {"current": 1, "total": 4}, "PROGRESS")
    assert monitor.describe("seen-by-backend-only")["status"] == "running"
    assert monitor.describe("never-seen")["status"] == "unknown"


def test_recent_is_newest_first_and_limited(monitor):
    for number in range(5):
        monitor.handle(event("task-started", uuid=f"r{number}"))
    assert [d["id"] for d in monitor.recent(3)] == ["r4", "r3", "r2"]


def test_final_events_read_the_real_result_from_the_backend(monitor, seen):
    monitor.celery.backend.store_result("t1", {"rows": 3}, "SUCCESS")
    monitor.handle(event("task-succeeded", result="{'rows': 3}"))
    assert seen[-1]["result"] == {"rows": 3}


def test_monitor_reconnects_after_redis_restarts(tmp_path):
    """A real Redis goes away and comes back on the same port: the monitor carries on."""
    port = devstack.free_port()
    redis = devstack.start_redis(port, tmp_path)
    app = make_celery({"REDIS_URL": f"redis://127.0.0.1:{port}/0", "PULSE_REDIS_TIMEOUT": "1"})
    statuses, seen = [], []
    monitor = Monitor(app, on_task=seen.append, on_status=statuses.append, idle_timeout=2)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: monitor.connected, 10, what="first connection")
        devstack.stop(redis)
        wait_until(lambda: not monitor.connected, 15, what="the outage to be noticed")
        redis = devstack.start_redis(port, tmp_path)
        wait_until(lambda: monitor.connected, 30, what="the reconnection")

        def deliver():
            with app.events.default_dispatcher(hostname="w@h") as dispatcher:
                dispatcher.send("task-started", uuid="after-restart")
            return any(d["id"] == "after-restart" for d in seen)

        wait_until(deliver, 15, 0.5, what="an event after the restart")
        assert statuses[:3] == [True, False, True]
    finally:
        monitor.stop()
        devstack.stop(redis)
        thread.join(15)
    assert not thread.is_alive()
