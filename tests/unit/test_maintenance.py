"""Registry upkeep: lost tasks, reconciliation, expiry, pruning (real Redis, synthetic heartbeats)."""

import time
import uuid

import pytest

from pulse.server.upkeep.maintenance import ENDED_UNSEEN, WORKER_GONE, Maintenance

from .test_monitor import make_monitor


@pytest.fixture
def monitor(redis_url):
    monitor = make_monitor(redis_url)
    monitor.connected, monitor.connected_since = True, time.time() - 600
    return monitor


@pytest.fixture
def upkeep(monitor):
    changed = []
    maintenance = Maintenance(monitor.store, monitor, on_task=changed.append, lost_after=30)
    maintenance.changed = changed
    return maintenance


def heartbeat(monitor, hostname, at):
    monitor.handle({"type": "worker-heartbeat", "hostname": hostname, "timestamp": at,
                    "local_received": at, "freq": 2.0})


def running(monitor, task_id, worker):
    monitor.store.registry.write(task_id, "running", fields={"state": "STARTED", "worker": worker})


def status(monitor, task_id):
    return monitor.store.get_json(task_id)["status"]


def test_tasks_of_silent_or_unknown_workers_become_lost(monitor, upkeep):
    now = time.time()
    heartbeat(monitor, "alive@h", now - 5)
    heartbeat(monitor, "silent@h", now - 60)
    running(monitor, "on-alive", "alive@h")
    running(monitor, "on-silent", "silent@h")
    running(monitor, "on-unknown", "never-heard@h")
    upkeep.tick(now)
    assert status(monitor, "on-alive") == "running"
    assert status(monitor, "on-silent") == "lost"
    assert status(monitor, "on-unknown") == "lost"
    assert {d["id"] for d in upkeep.changed} >= {"on-silent", "on-unknown"}
    lost = monitor.store.get_json("on-silent")
    assert lost["can_replay"] is False and lost["can_skip"] is True and lost["is_resolved"] is False
    assert lost["lost_reason"] == WORKER_GONE


def test_a_running_bulk_action_is_never_lost(monitor, upkeep):
    # No worker runs a bulk action's record (a server does, under a lease): it has no heartbeat.
    monitor.store.registry.write("bulk-00000000000000aa", "running", fields={"state": "PROGRESS",
                                                                            "bulk_job": True})
    upkeep.tick(time.time())
    assert status(monitor, "bulk-00000000000000aa") == "running"


def test_a_worker_going_offline_loses_its_running_tasks(monitor, upkeep):
    now = time.time()
    heartbeat(monitor, "leaving@h", now)
    running(monitor, "was-running", "leaving@h")
    monitor.handle({"type": "worker-offline", "hostname": "leaving@h", "timestamp": now,
                    "local_received": now})
    upkeep.tick(now)
    assert status(monitor, "was-running") == "lost"


def test_nothing_is_lost_before_the_monitor_listened_long_enough(monitor, upkeep):
    monitor.connected_since = time.time() - 5
    running(monitor, "maybe", "never-heard@h")
    upkeep.tick()
    assert status(monitor, "maybe") == "running"
    monitor.connected = False
    monitor.connected_since = None
    upkeep.tick()
    assert status(monitor, "maybe") == "running"


def test_reconcile_after_a_reconnection_reads_the_backend(monitor, upkeep):
    running(monitor, "done-meanwhile", "alive@h")
    heartbeat(monitor, "alive@h", time.time())
    monitor.celery.backend.store_result("done-meanwhile", 42, "SUCCESS")
    upkeep.tick()
    data = monitor.store.get_json("done-meanwhile")
    assert data["status"] == "finished" and data["result"] == 42


def test_results_celery_dropped_become_expired(monitor, upkeep):
    registry = monitor.store.registry
    registry.write("kept", "finished", fields={"state": "SUCCESS", "has_result": True})
    monitor.celery.backend.store_result("kept", 1, "SUCCESS")
    registry.write("dropped", "finished", fields={"state": "SUCCESS", "has_result": True})
    registry.write("no-result", "finished", fields={"state": "SUCCESS", "has_result": False})
    upkeep.tick()
    assert status(monitor, "kept") == "finished"
    assert status(monitor, "dropped") == "expired"
    assert status(monitor, "no-result") == "finished"  # ignore_result tasks never had one to lose
    assert monitor.store.get_json("dropped")["state"] == "SUCCESS"  # the story stays


def test_describe_notices_an_expired_result_at_once(monitor):
    monitor.store.registry.write("gone", "failed", fields={"state": "FAILURE", "has_result": True})
    assert monitor.store.describe("gone")["status"] == "expired"


def test_describe_adopts_what_only_the_backend_knows(monitor):
    monitor.celery.backend.store_result("backend-only", {"current": 1, "total": 4}, "PROGRESS")
    assert monitor.store.describe("backend-only")["status"] == "running"
    assert monitor.store.registry.get("backend-only")["status"] == "running"


def test_upkeep_prunes_the_registry(monitor, upkeep):
    registry = monitor.store.registry
    registry.retention = 10
    registry.write("ancient", "finished", now=time.time() - 100)
    upkeep.tick()
    assert registry.get("ancient") is None


def answering(upkeep, active: dict[str, set[str]]) -> None:
    """The workers' replies to the next "which tasks do you run" broadcasts."""
    upkeep.read_active = lambda: active


def test_a_running_task_its_worker_no_longer_runs_ends_unseen_after_two_rounds(monitor, upkeep):
    task_id = f"unseen-{uuid.uuid4().hex[:8]}"
    running(monitor, task_id, "alive@h")
    running(monitor, "listed", "alive@h")
    running(monitor, "on-mute", "mute@h")  # its worker did not answer: nothing is known of it
    answering(upkeep, {"alive@h": {"listed"}, "other@h": set()})
    assert upkeep.mark_ended_unseen(time.time()) == []
    assert status(monitor, task_id) == "running"  # one round: it may have just ended, normally
    changed = upkeep.mark_ended_unseen(time.time())
    assert [data["id"] for data in changed] == [task_id]
    lost = monitor.store.get_json(task_id)
    assert lost["status"] == "lost" and lost["lost_reason"] == ENDED_UNSEEN
    assert status(monitor, "listed") == "running" and status(monitor, "on-mute") == "running"
    assert upkeep.mark_ended_unseen(time.time()) == []  # said once


def test_a_task_listed_again_starts_counting_anew(monitor, upkeep):
    running(monitor, "flicker", "alive@h")
    for listed in (set(), {"flicker"}, set()):
        answering(upkeep, {"alive@h": listed})
        upkeep.mark_ended_unseen(time.time())
    assert status(monitor, "flicker") == "running"


def test_an_end_the_backend_has_wins_over_lost(monitor, upkeep):
    task_id = f"stored-{uuid.uuid4().hex[:8]}"
    running(monitor, task_id, "alive@h")
    monitor.celery.backend.store_result(task_id, 7, "SUCCESS")
    answering(upkeep, {"alive@h": set()})
    upkeep.mark_ended_unseen(time.time())
    changed = upkeep.mark_ended_unseen(time.time())
    data = monitor.store.get_json(task_id)
    assert [d["id"] for d in changed] == [task_id] and data["status"] == "finished" and data["result"] == 7
    assert data["lost_reason"] is None


def test_a_lost_task_whose_end_comes_later_drops_its_lost_reason(monitor, upkeep):
    running(monitor, "late-end", "alive@h")
    answering(upkeep, {"alive@h": set()})
    upkeep.mark_ended_unseen(time.time())
    upkeep.mark_ended_unseen(time.time())
    assert monitor.store.get_json("late-end")["lost_reason"] == ENDED_UNSEEN
    monitor.store.registry.write("late-end", "finished", fields={"state": "SUCCESS"})
    data = monitor.store.get_json("late-end")
    assert data["status"] == "finished" and data["lost_reason"] is None
