"""End to end against a real Redis, a real Celery worker and the real web server (eventlet)."""

import threading
import time

import pytest
import requests
import socketio

from pulse.agent.failure import TaskFailure  # noqa: F401 - imported so Celery can rebuild it
from pulse.server.model.results import read_meta

from ..conftest import wait_until

pytestmark = pytest.mark.integration


class Collector:
    """Records the pushes a Socket.IO client receives, with their arrival times."""

    def __init__(self, client: socketio.Client, *events: str) -> None:
        self.items: list[tuple[float, str, object]] = []
        self.lock = threading.Lock()
        for name in events:
            client.on(name, self._handler(name))

    def _handler(self, name):
        def handle(data):
            with self.lock:
                self.items.append((time.monotonic(), name, data))
        return handle

    def of(self, name: str) -> list:
        with self.lock:
            return [data for _, kind, data in self.items if kind == name]


def test_progress_events_arrive_in_order_and_end_in_success(stack):
    client = stack.socket()
    pushes = Collector(client, "task")
    try:
        task_id = stack.launch("tasks.demo.count", total=20, delay=0.1)
        ack = client.call("subscribe", {"task": task_id}, timeout=10)
        assert ack["task"]["id"] == task_id and ack["task"]["status"] in ("scheduled", "running")
        wait_until(lambda: any(t["status"] == "finished" for t in pushes.of("task")), 30,
                   what="the success push")
    finally:
        client.disconnect()
    updates = [t for t in pushes.of("task") if t["id"] == task_id]
    percents = [t["progress"]["percent"] for t in updates if t["progress"] and t["status"] == "running"]
    assert len(percents) >= 3, updates  # 2 s of work reported every 0.25 s: several live updates
    assert percents == sorted(percents)
    assert 0 < percents[0] < 100
    final = updates[-1]
    assert final["state"] == "SUCCESS" and final["result"] == 20
    assert final["progress"] == {"current": 20, "total": 20, "percent": 100.0, "message": "step 20 of 20",
                                 "rate": None, "eta_seconds": None}
    # Once a few reports are in, the bar knows its rate (~10 steps/s) and time left.
    late = [t["progress"] for t in updates
            if t["status"] == "running" and t["progress"] and t["progress"]["percent"] > 50]
    assert late and late[-1]["rate"] > 0 and late[-1]["eta_seconds"] is not None
    assert final["worker"].startswith("worker@")
    assert stack.api("GET", f"/api/tasks/{task_id}").json()["result"] == 20


def test_late_joiner_gets_the_final_snapshot(stack):
    task_id = stack.launch("tasks.demo.count", total=3, delay=0.01)
    stack.wait_for(task_id, "finished")
    client = stack.socket()
    try:
        ack = client.call("subscribe", {"task": task_id}, timeout=10)
    finally:
        client.disconnect()
    assert ack["task"]["status"] == "finished" and ack["task"]["progress"]["percent"] == 100.0


def test_structured_failure_is_readable_through_celery_and_the_api(stack):
    task_id = stack.launch("tasks.demo.fail_with_details", step=2, delay=0.3)
    data = stack.wait_for(task_id, "failed")
    assert data["state"] == "FAILURE"
    assert data["failure"]["exc_type"] == "ValueError"
    assert data["failure"]["exc_message"] == "record 2 could not be parsed"
    assert data["failure"]["details"] == {
        "step": 2, "input": "row-2: '12,abc'", "hint": "check the CSV export settings"}
    assert "fail_with_details" in data["failure"]["traceback"]
    assert data["progress"]["current"] == 2  # the last progress survives the failure
    result = stack.celery.AsyncResult(task_id)
    assert result.state == "FAILURE"
    assert isinstance(result.info, ValueError) and str(result.info) == "record 2 could not be parsed"
    assert "Traceback" in result.traceback
    assert read_meta(stack.celery, task_id)["result"]["input"] == "row-2: '12,abc'"


def test_a_crash_shows_its_exception(stack):
    task_id = stack.launch("tasks.demo.crash")
    failure = stack.wait_for(task_id, "failed")["failure"]
    assert failure["exc_type"] == "ValueError"
    assert failure["exc_message"] == "demo crash: something went wrong"
    assert 'raise ValueError("demo crash' in failure["traceback"]
    assert failure["details"] == {}


def test_unknown_and_malformed_ids(stack):
    response = stack.api("GET", "/api/tasks/0b4d5c1e-2f7a-4c43-9a8e-0f8b0a6f4d21")
    assert response.status_code == 404 and response.json()["status"] == "unknown"
    for bad in ["bad id", "a" * 300, "x;y"]:
        response = stack.api("GET", f"/api/tasks/{bad}")
        assert response.status_code == 400, bad
        assert "malformed" in response.json()["error"]


def test_auth_refusals(stack):
    assert stack.api("GET", "/api/tasks/abc", token=None).status_code == 401
    assert stack.api("GET", "/api/tasks/abc", token="forged-token-0123456789").status_code == 401
    response = stack.api("POST", "/api/tasks", token=None, json={"name": "tasks.demo.count"})
    assert response.status_code == 401
    assert requests.get(stack.base_url + "/", allow_redirects=False, timeout=5).status_code == 302
    for auth in ({}, {"token": "forged-token-0123456789"}):
        with pytest.raises(socketio.exceptions.ConnectionError):
            stack.socket(auth=auth)


def test_launch_refuses_tasks_outside_the_allow_list(stack):
    response = stack.api("POST", "/api/tasks", json={"name": "celery.backend_cleanup"})
    assert response.status_code == 403
    assert "allow-list" in response.json()["error"]


def test_dashboard_gets_coalesced_batches_at_most_10_per_second(stack):
    client = stack.socket()
    pushes = Collector(client, "tasks", "task")
    try:
        assert "tasks" in client.call("subscribe", {"dashboard": True}, timeout=10)
        ids = [stack.launch("tasks.demo.count", total=40, delay=0.02) for _ in range(6)]
        wait_until(lambda: all(stack.api("GET", f"/api/tasks/{i}").json()["status"] == "finished"
                               for i in ids), 60, 0.5, what="six count tasks")
        time.sleep(0.3)  # the last coalesced batch
    finally:
        client.disconnect()
    times = [at for at, kind, _ in pushes.items if kind == "tasks"]
    batches = pushes.of("tasks")
    assert pushes.of("task") == []  # not subscribed to any task room
    seen = {t["id"]: t for batch in batches for t in batch}
    assert all(seen[i]["status"] == "finished" for i in ids)
    assert any(len({t["id"] for t in batch}) > 1 for batch in batches)  # batched, not one by one
    # However fast tasks report, no one-second window holds more than 10 pushes (+1 at its edge).
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 11


def test_pushes_go_only_to_subscribed_rooms(stack):
    watcher, bystander = stack.socket(), stack.socket()
    watched, other = Collector(watcher, "task", "tasks"), Collector(bystander, "task", "tasks")
    try:
        first = stack.launch("tasks.demo.count", total=3, delay=0.01)
        second = stack.launch("tasks.demo.count", total=3, delay=0.01)
        watcher.call("subscribe", {"task": first}, timeout=10)
        stack.wait_for(first, "finished")
        stack.wait_for(second, "finished")
        time.sleep(0.3)
    finally:
        watcher.disconnect()
        bystander.disconnect()
    assert {t["id"] for t in watched.of("task")} == {first}
    assert watched.of("tasks") == []
    assert other.items == []


def test_healthz_reports_redis_and_the_monitor(stack):
    data = requests.get(stack.base_url + "/healthz", timeout=5).json()
    assert data["status"] == "ok"
    assert data["redis"]["ok"] is True and data["monitor"]["connected"] is True
    assert data["monitor"]["events"] > 0


def test_a_burst_of_subscriptions_is_answered_in_full(stack):
    """More requests in flight than the server has Redis connections: they queue, none fails."""
    task_id = stack.launch("tasks.demo.count", total=2, delay=0.01)
    stack.wait_for(task_id, "finished")
    client, acks, done = stack.socket(), [], threading.Event()

    def ack(answer):
        acks.append(answer)
        if len(acks) == 200:
            done.set()

    try:
        for _ in range(200):
            client.emit("subscribe", {"task": task_id}, callback=ack)
        assert done.wait(60), f"{len(acks)} of 200 subscriptions answered"
    finally:
        client.disconnect()
    assert all(answer["task"]["status"] == "finished" for answer in acks)
