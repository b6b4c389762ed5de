"""Tasks outlive the processes around them: a restarted web server and workers that die or stop.

Each test runs its own server and workers on a Redis database of its own (the session worker on
database 0 must not take their tasks), with unique worker names, and stops them all by PID.
"""

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from pulse import devstack

from ..conftest import Stack, db_url, flush_db, own_server, own_worker, wait_until

pytestmark = pytest.mark.integration

RESTART_DB, LOST_DB = 6, 7
LOST_AFTER = 4.0


def workers_by_prefix(stack: Stack, name: str) -> list[dict]:
    workers = stack.api("GET", "/api/workers").json()["workers"]
    return [worker for worker in workers if worker["hostname"].startswith(f"{name}@")]


def get(stack: Stack, task_id: str) -> dict:
    return stack.api("GET", f"/api/tasks/{task_id}").json()


def progressed(stack: Stack, task_id: str, at_least: float) -> dict:
    """Wait until the task has reported progress up to ``at_least``; returns its JSON."""

    def check() -> dict | None:
        data = get(stack, task_id)
        return data if (data["progress"] or {}).get("current", 0) >= at_least else None

    return wait_until(check, 20, 0.1, f"task {task_id} to report progress")


def test_tasks_that_ran_while_the_server_was_down_show_their_final_status(redis_url):
    url = db_url(redis_url, RESTART_DB)
    flush_db(url)
    with own_worker(url, "restartworker"):
        with own_server(url, "web-restart-a") as (proc_a, first):
            seen = first.launch("tasks.demo.count", total=2, delay=0.01)
            first.wait_for(seen, "finished")
            devstack.stop(proc_a)
            assert proc_a.poll() is not None

            # The server is down: a plain producer sends, the worker runs, nobody watches events.
            counted = first.celery.send_task("tasks.demo.count", kwargs={"total": 4, "delay": 0.01})
            crashed = first.celery.send_task("tasks.demo.crash")
            failing = first.celery.send_task("tasks.demo.fail_with_details",
                                             kwargs={"step": 1, "delay": 0.01})
            wait_until(lambda: counted.ready() and crashed.ready() and failing.ready(), 30, 0.1,
                       "the tasks to run without a server")

        with own_server(url, "web-restart-b") as (_proc_b, second):
            ok = second.api("GET", f"/api/tasks/{counted.id}")
            assert ok.status_code == 200, ok.text
            data = ok.json()
            assert data["status"] == "finished" and data["state"] == "SUCCESS" and data["result"] == 4
            assert data["progress"]["percent"] == 100.0 and data["worker"].startswith("restartworker@")
            assert data["started_at"] is not None and data["finished_at"] is not None

            crash = get(second, crashed.id)
            assert crash["status"] == "failed" and crash["state"] == "FAILURE"
            assert crash["failure"]["exc_type"] == "ValueError"
            assert crash["failure"]["exc_message"] == "demo crash: something went wrong"
            assert 'raise ValueError("demo crash' in crash["failure"]["traceback"]
            assert crash["can_replay"] is True and crash["can_skip"] is True

            structured = get(second, failing.id)
            assert structured["status"] == "failed"
            assert structured["failure"]["exc_message"] == "record 1 could not be parsed"
            assert structured["failure"]["details"]["hint"] == "check the CSV export settings"

            client = second.socket()
            try:
                snapshot = client.call("subscribe", {"dashboard": True}, timeout=10)["tasks"]
            finally:
                client.disconnect()
            statuses = {task["id"]: task["status"] for task in snapshot}
            assert statuses[counted.id] == "finished"
            assert statuses[crashed.id] == "failed" and statuses[failing.id] == "failed"
            assert statuses[seen] == "finished"
            ids = [task["id"] for task in snapshot]
            assert ids.index(failing.id) < ids.index(counted.id) < ids.index(seen)  # newest first


@pytest.fixture(scope="module")
def lost_stack(redis_url) -> Iterator[Stack]:
    url = db_url(redis_url, LOST_DB)
    flush_db(url)
    with own_server(url, "web-lost", PULSE_LOST_AFTER=str(LOST_AFTER), PULSE_MAINTENANCE_INTERVAL="0.5",
                    PULSE_WORKER_CHECK_INTERVAL="1") as (_proc, stack):
        yield stack


def test_the_tasks_of_a_killed_worker_become_lost_and_a_replay_runs(lost_stack):
    stack = lost_stack
    pushes: list[dict] = []
    lock = threading.Lock()
    client = stack.socket()

    def record(data: dict) -> None:
        with lock:
            pushes.append(data)

    client.on("task", record)
    try:
        with own_worker(stack.redis_url, "lostworker", concurrency=2) as doomed:
            wait_until(lambda: any(w["online"] for w in workers_by_prefix(stack, "lostworker")), 20, 0.2,
                       "the server to hear the worker")
            # Both pool processes busy: every running task of the worker must turn lost.
            task_id, sibling = (stack.launch("tasks.demo.count", total=40, delay=0.1) for _ in range(2))
            for running_id in (task_id, sibling):
                client.call("subscribe", {"task": running_id}, timeout=10)
                running = progressed(stack, running_id, 2)
                assert running["status"] == "running" and running["worker"].startswith("lostworker@")
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(10)

        for lost_id in (task_id, sibling):
            lost = stack.wait_for(lost_id, "lost", timeout=LOST_AFTER + 10)
            assert lost["can_replay"] is True and lost["can_skip"] is True
            assert lost["can_revoke"] is False and lost["is_resolved"] is False
            assert lost["progress"] is not None and lost["progress"]["current"] < 40
        wait_until(lambda: {t["id"] for t in list(pushes) if t["status"] == "lost"} == {task_id, sibling},
                   5, 0.1, "the lost pushes")
        wait_until(lambda: [w["online"] for w in workers_by_prefix(stack, "lostworker")] == [False], 10, 0.2,
                   "the killed worker to be seen offline")

        with own_worker(stack.redis_url, "freshworker"):
            response = stack.api("POST", f"/api/tasks/{task_id}/replay")
            assert response.status_code == 200, response.text
            old = response.json()
            assert old["status"] == "replayed" and old["is_resolved"] is True
            new_id = old["replayed_by"]
            new = stack.wait_for(new_id, "finished", timeout=30)
            assert new["replay_of"] == task_id and new["result"] == 40
            assert new["worker"].startswith("freshworker@")
            again = get(stack, task_id)
            assert again["status"] == "replayed" and again["replayed_by"] == new_id
            assert stack.api("POST", f"/api/tasks/{task_id}/replay").status_code == 409
    finally:
        client.disconnect()


def test_a_task_whose_end_was_never_recorded_becomes_lost_not_running_forever(lost_stack):
    """Its worker is alive and heartbeating, but no longer runs it (its end was written nowhere, as
    when Redis was down just then): the server asks the worker, and marks it lost."""
    stack = lost_stack
    client = stack.socket()
    pushes: list[dict] = []
    client.on("task", pushes.append)
    try:
        with own_worker(stack.redis_url, "unseenworker", concurrency=2):
            online = wait_until(lambda: [w for w in workers_by_prefix(stack, "unseenworker")
                                         if w["online"]], 20, 0.2, "the server to hear the worker")
            hostname = online[0]["hostname"]
            # Really running, for 15 s: two rounds of the worker check (1 s apart here) and a
            # slow machine fit in it.
            busy = stack.launch("tasks.demo.count", total=150, delay=0.1)
            progressed(stack, busy, 2)
            unseen = f"unseen-{uuid.uuid4().hex[:10]}"
            stack.celery.pulse.registry.write(unseen, "running", fields={
                "name": "tasks.demo.count", "state": "STARTED", "worker": hostname,
                "started_at": time.time()})
            client.call("subscribe", {"task": unseen}, timeout=10)
            lost = stack.wait_for(unseen, "lost", timeout=10)
            assert lost["lost_reason"] == "its worker no longer runs it and its end was never recorded"
            assert get(stack, busy)["status"] == "running"  # the one it does run is left alone
            wait_until(lambda: [t for t in list(pushes) if t["id"] == unseen and t["status"] == "lost"],
                       5, 0.1, "the lost push")
            assert stack.wait_for(busy, "finished", timeout=30)["lost_reason"] is None
    finally:
        client.disconnect()


def test_a_cleanly_stopped_worker_leaves_nothing_lost(lost_stack):
    stack = lost_stack
    with own_worker(stack.redis_url, "quietworker", concurrency=2) as proc:
        wait_until(lambda: any(w["online"] for w in workers_by_prefix(stack, "quietworker")), 20, 0.2,
                   "the server to hear the worker")
        done = [stack.launch("tasks.demo.count", total=3, delay=0.01) for _ in range(2)]
        for task_id in done:
            assert stack.wait_for(task_id, "finished")["worker"].startswith("quietworker@")
        # Mid-task warm shutdown: SIGTERM to the main process only waits for the task to end.
        busy = stack.launch("tasks.demo.count", total=15, delay=0.1)
        stack.wait_for(busy, "running")
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
    # Then idle, stopped the way the fixtures stop a worker (SIGTERM to its group): nothing ran.
    with own_worker(stack.redis_url, "idleworker") as idle:
        wait_until(lambda: any(w["online"] for w in workers_by_prefix(stack, "idleworker")), 20, 0.2,
                   "the server to hear the idle worker")
        devstack.stop(idle)
        assert idle.returncode is not None

    wait_until(lambda: [w["online"] for w in workers_by_prefix(stack, "quietworker")] == [False]
               and [w["online"] for w in workers_by_prefix(stack, "idleworker")] == [False], 15, 0.2,
               "both workers to be seen offline")
    assert get(stack, busy)["status"] == "finished" and get(stack, busy)["result"] == 15
    time.sleep(LOST_AFTER + 2)  # past the window in which a running task of theirs would turn lost
    for task_id in [*done, busy]:
        assert get(stack, task_id)["status"] == "finished"
    for name, ran in (("quietworker", {*done, busy}), ("idleworker", set())):
        hostname = workers_by_prefix(stack, name)[0]["hostname"]
        listed = stack.api("GET", "/api/tasks", params={"worker": hostname}).json()["tasks"]
        assert {task["id"]: task["status"] for task in listed} == dict.fromkeys(ran, "finished")
    lost = stack.api("GET", "/api/tasks", params={"status": "lost"}).json()["tasks"]
    on_purpose = ("lostworker@", "unseenworker@")  # the other tests' lost tasks
    assert [task["id"] for task in lost if not task["worker"].startswith(on_purpose)] == []
