"""The durable task registry through the real server: statuses, actions, listing, upkeep, metrics.

Tests on the session ``stack`` (Redis database 0, the session worker) share it with the other
integration tests, so they only compare what they launched themselves. Tests that need a server
of their own (no worker, special settings, a registry filled by hand) run it on a Redis database
of their own and stop it by PID.
"""

import json
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tasks.celery import make_celery

from ..conftest import ROOT, Stack, db_url, flush_db, own_server, wait_until

pytestmark = pytest.mark.integration

IDLE_DB, PAGING_DB, PRUNE_DB = 3, 4, 5
MISSING_ID = "0b4d5c1e-2f7a-4c43-9a8e-000000000000"





def get(stack: Stack, task_id: str, **params) -> requests.Response:
    return stack.api("GET", f"/api/tasks/{task_id}", params=params)


def timed_get(stack: Stack, path: str, timeout: float = 60.0) -> tuple[float, requests.Response]:
    """A GET that may be held by the server longer than ``Stack.api``'s 10 s timeout."""
    started = time.monotonic()
    response = requests.get(stack.base_url + path, timeout=timeout,
                            headers={"Authorization": f"Bearer {stack.token}"})
    return time.monotonic() - started, response


def audit_of(stack: Stack, task_id: str) -> list[dict]:
    response = stack.api("GET", "/api/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [entry for entry in response.json()["entries"] if entry["task"] == task_id]


def assert_audited(stack: Stack, task_id: str, action: str) -> dict:
    entries = [entry for entry in audit_of(stack, task_id) if entry["action"] == action]
    assert len(entries) == 1, audit_of(stack, task_id)
    entry = entries[0]
    assert entry["who"].startswith("operator (token)")
    assert abs(time.time() - entry["at"]) < 300
    return entry


# --- A server on a Redis database no worker consumes ------------------------------------------------


@dataclass
class HeldWait:
    """A ``?wait=45`` request on a task that never runs, left in flight across the module."""

    task_id: str
    thread: threading.Thread | None = None
    outcome: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def idle_stack(redis_url) -> Iterator[Stack]:
    url = db_url(redis_url, IDLE_DB)
    flush_db(url)
    with own_server(url, "web-registry-idle") as (_proc, stack):
        yield stack


@pytest.fixture(scope="module")
def held_wait(idle_stack) -> Iterator[HeldWait]:
    """Started early so the 30 s cap is checked by the module's last test without a 30 s sleep."""
    task_id = idle_stack.launch("tasks.demo.count", total=2, delay=0.01)
    held = HeldWait(task_id)

    def wait() -> None:
        elapsed, response = timed_get(idle_stack, f"/api/tasks/{task_id}?wait=45", timeout=90)
        held.outcome.update(elapsed=elapsed, status_code=response.status_code, body=response.json())

    held.thread = threading.Thread(target=wait, daemon=True)
    held.thread.start()
    yield held
    held.thread.join(90)


def test_launched_and_produced_tasks_are_scheduled_at_once_and_unseen_ids_unknown(idle_stack, held_wait):
    stack = idle_stack
    response = stack.api("POST", "/api/tasks", json={"name": "tasks.demo.count", "kwargs": {"total": 5}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "scheduled" and body["started"] is True
    assert response.headers["Location"] == body["url"] == f"/api/tasks/{body['id']}"

    data = get(stack, body["id"]).json()
    assert data["status"] == "scheduled" and data["state"] == "PENDING"
    assert data["name"] == "tasks.demo.count" and data["kwargs"] == "{'total': 5}"
    assert data["sent_at"] is not None and data["started_at"] is None and data["worker"] is None
    assert data["can_revoke"] is True and data["can_replay"] is False and data["is_resolved"] is False

    # A plain producer (no web server involved) records the task before publishing it.
    sent = stack.celery.send_task("tasks.demo.crash")
    produced = get(stack, sent.id)
    assert produced.status_code == 200
    assert produced.json()["status"] == "scheduled" and produced.json()["state"] == "PENDING"
    assert produced.json()["name"] == "tasks.demo.crash"

    unseen = get(stack, str(uuid.uuid4()))
    assert unseen.status_code == 404
    assert unseen.json()["status"] == "unknown" and unseen.json()["state"] is None

    client = stack.socket()
    try:
        ack = client.call("subscribe", {"task": sent.id}, timeout=10)
    finally:
        client.disconnect()
    assert ack["task"]["status"] == "scheduled"

    # The module's held ?wait=45 request is still waiting on its never-started task.
    assert held_wait.thread.is_alive() and "status_code" not in held_wait.outcome


# --- Operator actions on the session stack ----------------------------------------------------------


def test_replay_of_a_failed_task_links_both_ways_and_only_once(stack):
    failed = stack.launch("tasks.demo.crash")
    stack.wait_for(failed, "failed")
    response = stack.api("POST", f"/api/tasks/{failed}/replay")
    assert response.status_code == 200, response.text
    old = response.json()
    assert old["status"] == "replayed" and old["is_resolved"] is True
    assert old["can_replay"] is False and old["can_skip"] is False
    new_id = old["replayed_by"]
    assert new_id and new_id != failed

    new = stack.wait_for(new_id, "failed")  # the same crash again, run as a new task
    assert new["replay_of"] == failed and new["name"] == "tasks.demo.crash"
    assert new["failure"]["exc_message"] == "demo crash: something went wrong"
    assert get(stack, failed).json()["replayed_by"] == new_id

    again = stack.api("POST", f"/api/tasks/{failed}/replay")
    assert again.status_code == 409 and "error" in again.json()
    assert stack.api("POST", f"/api/tasks/{failed}/skip").status_code == 409
    assert get(stack, failed).json()["status"] == "replayed"
    assert assert_audited(stack, failed, "replay")["detail"]["new_task"] == new_id


def test_skip_resolves_a_failed_task_once(stack):
    failed = stack.launch("tasks.demo.crash")
    stack.wait_for(failed, "failed")
    response = stack.api("POST", f"/api/tasks/{failed}/skip")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "skipped" and response.json()["is_resolved"] is True
    data = get(stack, failed).json()
    assert data["status"] == "skipped" and data["state"] == "FAILURE" and data["can_skip"] is False
    assert data["failure"]["exc_type"] == "ValueError"  # the failure is kept

    assert stack.api("POST", f"/api/tasks/{failed}/skip").status_code == 409
    assert stack.api("POST", f"/api/tasks/{failed}/replay").status_code == 409
    assert_audited(stack, failed, "skip")


def test_revoke_with_terminate_stops_a_running_task(stack):
    task_id = stack.launch("tasks.demo.count", total=300, delay=0.1)
    wait_until(lambda: (get(stack, task_id).json()["progress"] or {}).get("current", 0) >= 3, 20, 0.1,
               "the count to report progress")
    bad = stack.api("POST", f"/api/tasks/{task_id}/revoke", json={"terminate": "yes"})
    assert bad.status_code == 400
    response = stack.api("POST", f"/api/tasks/{task_id}/revoke", json={"terminate": True})
    assert response.status_code == 200, response.text
    assert response.json()["revoke_requested_at"] is not None

    data = stack.wait_for(task_id, "revoked", timeout=20)
    assert data["state"] == "REVOKED" and data["revoke_reason"] == "terminated"
    assert data["is_resolved"] is True and data["can_revoke"] is False
    assert data["progress"]["current"] < 300
    again = stack.api("POST", f"/api/tasks/{task_id}/revoke", json={"terminate": True})
    assert again.status_code == 409 and "error" in again.json()
    entry = assert_audited(stack, task_id, "revoke")
    assert entry["detail"] == {"terminate": True, "signal": "SIGTERM"}


def test_a_finished_task_cannot_be_revoked_replayed_or_skipped(stack):
    task_id = stack.launch("tasks.demo.count", total=2, delay=0.01)
    stack.wait_for(task_id, "finished")
    for verb in ("revoke", "replay", "skip"):
        response = stack.api("POST", f"/api/tasks/{task_id}/{verb}")
        assert response.status_code == 409, (verb, response.text)
        assert "error" in response.json()
    assert get(stack, task_id).json()["status"] == "finished"


def test_forget_keeps_the_record_as_expired_and_purge_removes_it(stack):
    running = stack.launch("tasks.demo.count", total=30, delay=0.1)
    stack.wait_for(running, "running")
    refused = stack.api("DELETE", f"/api/tasks/{running}")
    assert refused.status_code == 409 and "error" in refused.json()

    task_id = stack.launch("tasks.demo.count", total=2, delay=0.01)
    stack.wait_for(task_id, "finished")
    assert stack.celery.AsyncResult(task_id).state == "SUCCESS"
    assert stack.api("DELETE", f"/api/tasks/{task_id}", params={"purge": "maybe"}).status_code == 400

    response = stack.api("DELETE", f"/api/tasks/{task_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "expired"
    assert stack.celery.AsyncResult(task_id).state == "PENDING"  # Celery's result is gone
    kept = get(stack, task_id)
    assert kept.status_code == 200
    data = kept.json()
    assert data["status"] == "expired" and data["name"] == "tasks.demo.count"
    assert data["state"] == "SUCCESS" and data["result"] == 2 and data["is_resolved"] is False
    assert_audited(stack, task_id, "forget")

    purged = stack.api("DELETE", f"/api/tasks/{task_id}", params={"purge": "true"})
    assert purged.status_code == 200, purged.text
    assert purged.json()["purged"] is True
    gone = get(stack, task_id)
    assert gone.status_code == 404 and gone.json()["status"] == "unknown"
    assert_audited(stack, task_id, "purge")
    stack.wait_for(running, "finished")


def test_actions_refuse_unknown_malformed_and_anonymous_calls(stack):
    calls = [("POST", "/api/tasks/{}/revoke"), ("POST", "/api/tasks/{}/replay"),
             ("POST", "/api/tasks/{}/skip"), ("DELETE", "/api/tasks/{}")]
    for method, path in calls:
        unknown = stack.api(method, path.format(MISSING_ID))
        assert unknown.status_code == 404, (path, unknown.text)
        assert "error" in unknown.json()
        for bad in ("bad id", "x;y", "-leading-dash"):
            malformed = stack.api(method, path.format(bad))
            assert malformed.status_code == 400, (path, bad, malformed.text)
            assert "malformed" in malformed.json()["error"]
        anonymous = stack.api(method, path.format(MISSING_ID), token=None)
        assert anonymous.status_code == 401
        forged = stack.api(method, path.format(MISSING_ID), token="forged-token-0123456789")
        assert forged.status_code == 401
    assert audit_of(stack, MISSING_ID) == []
    assert stack.api("GET", "/api/audit", token=None).status_code == 401


def test_the_audit_log_lists_actions_newest_first(stack):
    task_id = stack.launch("tasks.demo.count", total=2, delay=0.01)
    stack.wait_for(task_id, "finished")
    assert stack.api("DELETE", f"/api/tasks/{task_id}").status_code == 200
    assert stack.api("DELETE", f"/api/tasks/{task_id}?purge=true").status_code == 200
    entries = audit_of(stack, task_id)
    assert [entry["action"] for entry in entries] == ["purge", "forget", "launch"]
    assert entries[0]["at"] >= entries[1]["at"] >= entries[2]["at"]
    assert entries[2]["detail"]["name"] == "tasks.demo.count"
    everything = stack.api("GET", "/api/audit", params={"limit": 1000}).json()["entries"]
    actions = {entry["action"] for entry in everything}
    assert {"launch", "forget", "purge"} <= actions
    # Every action is one the API documents (other tests' actions are in the same log).
    spec = json.loads((ROOT / "pulse/server/http/openapi.json").read_text())
    assert actions <= set(spec["components"]["schemas"]["AuditEntry"]["properties"]["action"]["enum"])
    assert len(stack.api("GET", "/api/audit", params={"limit": 2}).json()["entries"]) == 2
    for bad in ("0", "1001", "many"):
        assert stack.api("GET", "/api/audit", params={"limit": bad}).status_code == 400


# --- ?wait= -------------------------------------------------------------------------------------------


def test_wait_returns_when_the_task_ends_or_when_the_wait_is_over(stack):
    quick = stack.launch("tasks.demo.count", total=10, delay=0.1)
    elapsed, response = timed_get(stack, f"/api/tasks/{quick}?wait=10")
    assert response.status_code == 200
    assert response.json()["status"] == "finished" and response.json()["result"] == 10
    assert elapsed < 8

    slow = stack.launch("tasks.demo.count", total=60, delay=0.1)
    stack.wait_for(slow, "running")
    elapsed, response = timed_get(stack, f"/api/tasks/{slow}?wait=1")
    assert response.status_code == 200 and response.json()["status"] == "running"
    assert 0.9 <= elapsed < 6

    for bad in ("abc", "-1", "nan", "inf"):
        refused = stack.api("GET", f"/api/tasks/{slow}", params={"wait": bad})
        assert refused.status_code == 400, bad
        assert "wait" in refused.json()["error"]
    # An ended task answers at once, however long the wait asked for.
    elapsed, response = timed_get(stack, f"/api/tasks/{quick}?wait=1000")
    assert response.status_code == 200 and response.json()["status"] == "finished" and elapsed < 5
    assert stack.api("POST", f"/api/tasks/{slow}/revoke", json={"terminate": True}).status_code == 200
    stack.wait_for(slow, "revoked", timeout=20)


# --- Goals --------------------------------------------------------------------------------------------


def launch_goal(stack: Stack, goal: str, name: str = "tasks.demo.count", **extra) -> requests.Response:
    body = {"name": name, "goal": goal, **extra}
    if name == "tasks.demo.count":
        body["kwargs"] = {"total": 10, "delay": 0.1}
    return stack.api("POST", "/api/tasks", json=body)


def test_goals_dedupe_launches_until_forced_or_failed(stack):
    goal = f"g1-{uuid.uuid4().hex[:8]}"
    first = launch_goal(stack, goal)
    assert first.status_code == 202, first.text
    assert first.json()["started"] is True and first.json()["goal"] == goal
    task_id = first.json()["id"]

    same = launch_goal(stack, goal)
    assert same.status_code == 200 and same.json()["started"] is False
    assert same.json()["id"] == task_id and same.json()["status"] in ("scheduled", "running")
    assert same.headers["Location"] == f"/api/tasks/{task_id}"

    stack.wait_for(task_id, "finished")
    done = launch_goal(stack, goal)
    assert done.status_code == 200 and done.json()["id"] == task_id and done.json()["status"] == "finished"

    forced = launch_goal(stack, goal, force=True)
    assert forced.status_code == 202 and forced.json()["started"] is True
    forced_id = forced.json()["id"]
    assert forced_id != task_id
    current = stack.api("GET", f"/api/goals/{goal}")
    assert current.status_code == 200
    assert current.json()["goal"] == goal and current.json()["task"]["id"] == forced_id
    assert current.json()["status"] == current.json()["task"]["status"]
    assert get(stack, forced_id).json()["goal"] == goal
    entry = [e for e in audit_of(stack, forced_id) if e["action"] == "launch"][0]
    assert entry["detail"]["goal"] == goal and entry["detail"]["previous"] == task_id

    crash_goal = f"g2-{uuid.uuid4().hex[:8]}"
    crashed = launch_goal(stack, crash_goal, name="tasks.demo.crash")
    assert crashed.status_code == 202
    stack.wait_for(crashed.json()["id"], "failed")
    rerun = launch_goal(stack, crash_goal, name="tasks.demo.crash")
    assert rerun.status_code == 202 and rerun.json()["started"] is True
    assert rerun.json()["id"] != crashed.json()["id"]
    assert stack.api("GET", f"/api/goals/{crash_goal}").json()["task"]["id"] == rerun.json()["id"]

    missing = stack.api("GET", f"/api/goals/never-{uuid.uuid4().hex[:8]}")
    assert missing.status_code == 404 and "error" in missing.json()
    for bad in ({"goal": ""}, {"goal": 7}, {"goal": "x" * 201}, {"goal": goal, "force": "yes"}):
        response = stack.api("POST", "/api/tasks", json={"name": "tasks.demo.count", **bad})
        assert response.status_code == 400, bad
    stack.wait_for(forced_id, "finished")
    stack.wait_for(rerun.json()["id"], "failed")


# --- /metrics and /api/workers ----------------------------------------------------------------------


def scrape(stack: Stack) -> dict[tuple[str, tuple], float]:
    response = stack.api("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_what_happened(stack):
    assert stack.api("GET", "/metrics", token=None).status_code == 401
    client = stack.socket()
    try:
        ids = [stack.launch("tasks.demo.count", total=3, delay=0.2)]
        client.call("subscribe", {"task": ids[0]}, timeout=10)  # its room gets `task` pushes
        ids += [stack.launch("tasks.demo.count", total=3, delay=0.01) for _ in range(2)]
        for task_id in ids:
            stack.wait_for(task_id, "finished")
        counts = stack.api("GET", "/api/tasks/counts").json()
        succeeded = ("pulse_events_received_total", (("type", "task-succeeded"),))
        online = ("pulse_workers_online", ())

        def counted():
            # A finished record is written at the source, by the worker: its task-succeeded
            # event, and a heartbeat to a server started moments ago, may reach the monitor later.
            samples = scrape(stack)
            return samples if samples.get(succeeded, 0) >= len(ids) and samples.get(online, 0) >= 1 else None

        samples = wait_until(counted, 15, 0.2, "the monitor to count the finished tasks and the worker")
    finally:
        client.disconnect()

    assert samples[("pulse_events_received_total", (("type", "task-succeeded"),))] >= len(ids)
    assert samples[("pulse_events_received_total", (("type", "task-sent"),))] >= len(ids)
    assert samples[("pulse_tasks", (("status", "finished"),))] >= counts["by_status"]["finished"] >= len(ids)
    assert samples[("pulse_registry_records", ())] >= counts["total"]
    assert samples[("pulse_workers_online", ())] >= 1
    lag = samples[("pulse_monitor_lag_seconds", ())]
    assert math.isfinite(lag) and lag < 60
    assert samples[("pulse_monitor_connected", ())] == 1
    assert samples[("pulse_pushes_sent_total", (("event", "task"),))] > 0
    assert samples[("pulse_connected_clients", ())] >= 1


def test_workers_lists_the_session_worker_with_its_running_task(stack):
    task_id = stack.launch("tasks.demo.count", total=30, delay=0.1)
    hostname = stack.wait_for(task_id, "running")["worker"]
    assert hostname.startswith("worker@")
    response = stack.api("GET", "/api/workers")
    assert response.status_code == 200
    workers = {worker["hostname"]: worker for worker in response.json()["workers"]}
    worker = workers[hostname]
    assert worker["online"] is True
    assert abs(time.time() - worker["last_heartbeat"]) < 30
    assert isinstance(worker["processed"], int) and worker["processed"] >= 0
    assert isinstance(worker["loadavg"], list) and len(worker["loadavg"]) == 3
    assert task_id in [task["id"] for task in worker["active_tasks"]]
    assert all(task["status"] == "running" for task in worker["active_tasks"])
    assert stack.api("GET", "/api/workers", token=None).status_code == 401

    stack.wait_for(task_id, "finished")
    after = {w["hostname"]: w for w in stack.api("GET", "/api/workers").json()["workers"]}[hostname]
    assert task_id not in [task["id"] for task in after["active_tasks"]]


# --- Listing over 10,000+ records -------------------------------------------------------------------

NAMES = ("app.reports.build", "app.mail.send", "app.images.resize", "app.billing.Charge")
WORKERS = ("alpha@h1", "beta@h2", "gamma@h3")
STATES = {"finished": "SUCCESS", "failed": "FAILURE", "running": "PROGRESS", "scheduled": "PENDING",
          "revoked": "REVOKED", "retrying": "RETRY"}


@dataclass
class Rec:
    id: str
    created: float
    status: str
    name: str
    worker: str | None

    @property
    def state(self) -> str:
        return STATES[self.status]


class Book:
    """Records written straight into a server's registry, and the truth to compare listings with."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.registry = make_celery(stack.env).pulse.registry
        self.records: dict[str, Rec] = {}
        self.rng = random.Random(20261121)

    def write(self, records: list[Rec]) -> None:
        pipe = self.registry.client.pipeline(transaction=False)
        for number, rec in enumerate(records, 1):
            fields = {"state": rec.state, "name": rec.name, "worker": rec.worker}
            self.registry.write(rec.id, rec.status, fields=fields, now=rec.created, client=pipe)
            self.records[rec.id] = rec
            if number % 2000 == 0:
                pipe.execute()
        pipe.execute()

    def make(self, prefix: str, count: int, start: float) -> list[Rec]:
        out = []
        for number in range(count):
            status = self.rng.choice(list(STATES))
            worker = None if status == "scheduled" else self.rng.choice(WORKERS)
            # Two records per half second: ties on the score that the cursor must get right.
            out.append(Rec(f"{prefix}{number:05d}-{uuid.uuid4().hex[:6]}", start + (number // 2) * 0.5,
                           status, self.rng.choice(NAMES), worker))
        return out

    def update_status(self, task_id: str, status: str) -> None:
        rec = self.records[task_id]
        self.registry.write(task_id, status, fields={"state": STATES[status]})
        rec.status = status

    def expected(self, keep=lambda rec: True) -> list[str]:
        chosen = [rec for rec in self.records.values() if keep(rec)]
        return [rec.id for rec in sorted(chosen, key=lambda rec: (rec.created, rec.id), reverse=True)]

    def walk(self, limit: int = 500, between=None, **params) -> list[str]:
        ids, cursor, pages = [], None, 0
        while True:
            query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
            response = self.stack.api("GET", "/api/tasks", params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            ids += [task["id"] for task in body["tasks"]]
            cursor, pages = body["next_cursor"], pages + 1
            if cursor is None:
                return ids
            assert pages < 200, "the cursor does not progress"
            if between is not None:
                between(pages)


@pytest.fixture(scope="module")
def book(redis_url) -> Iterator[Book]:
    url = db_url(redis_url, PAGING_DB)
    flush_db(url)
    # No worker here: the "running" records must not turn lost while the tests read them.
    with own_server(url, "web-registry-paging", PULSE_LOST_AFTER="3600") as (_proc, stack):
        book = Book(stack)
        book.start = float(int(time.time()) - 20_000)
        book.write(book.make("pg", 10_200, book.start))
        yield book


def test_pages_of_10000_records_cover_each_once_newest_first_while_records_arrive(book):
    expected = book.expected()
    assert len(expected) == 10_200
    order = list(expected)  # the listing's order is the records' creation order, newest first
    newer: list[Rec] = []

    def meanwhile(page: int) -> None:
        # New records (newer than any listed) and status changes, listed or not yet listed.
        batch = book.make(f"new{page:02d}-", 40, float(int(time.time())) - 1000 + page)
        newer.extend(batch)
        book.write(batch)
        for task_id in (order[page * 500 - 3], order[page * 500 + 7], order[-1 - page]):
            rec = book.records[task_id]
            if rec.status == "scheduled":
                book.update_status(task_id, "running")
            elif rec.status == "running":
                book.update_status(task_id, "finished")

    seen = book.walk(500, between=meanwhile)
    assert len(seen) == len(set(seen))
    assert seen == order
    assert newer and not {rec.id for rec in newer} & set(seen)

    # The newcomers are at the top of a fresh listing.
    top = book.stack.api("GET", "/api/tasks", params={"limit": 5}).json()
    assert [task["id"] for task in top["tasks"]] == book.expected()[:5]
    first = top["tasks"][0]
    rec = book.records[first["id"]]
    assert (first["status"], first["state"], first["name"], first["worker"]) == (
        rec.status, rec.state, rec.name, rec.worker)


def test_filters_and_counts_match_the_records(book):
    records = list(book.records.values())
    assert len(records) > 10_000
    middle = sorted(rec.created for rec in records)[len(records) // 2]
    since, until = middle - 600, middle + 300
    rec0 = records[1234]
    id_needle = rec0.id[:6]  # e.g. "pg0123": ten ids
    iso_since = datetime.fromtimestamp(since, UTC).isoformat()
    cases = [
        ({"status": "failed"}, lambda r: r.status == "failed"),
        ({"status": "failed,revoked"}, lambda r: r.status in ("failed", "revoked")),
        ({"status": "running"}, lambda r: r.status == "running"),
        ({"name": "app.mail.send"}, lambda r: r.name == "app.mail.send"),
        ({"worker": "beta@h2"}, lambda r: r.worker == "beta@h2"),
        ({"state": "PROGRESS"}, lambda r: r.state == "PROGRESS"),
        ({"since": since, "until": until}, lambda r: since <= r.created <= until),
        ({"since": iso_since}, lambda r: r.created >= since),
        ({"until": since}, lambda r: r.created <= since),
        ({"q": id_needle}, lambda r: id_needle in r.id),
        ({"q": "MAIL"}, lambda r: r.name == "app.mail.send"),
        ({"q": "billing.charge"}, lambda r: r.name == "app.billing.Charge"),
        ({"status": "finished", "name": "app.reports.build", "worker": "alpha@h1"},
         lambda r: (r.status, r.name, r.worker) == ("finished", "app.reports.build", "alpha@h1")),
        ({"status": "failed,finished", "worker": "gamma@h3", "since": since, "until": until},
         lambda r: r.status in ("failed", "finished") and r.worker == "gamma@h3"
         and since <= r.created <= until),
        ({"q": "pg012", "status": "scheduled"}, lambda r: "pg012" in r.id and r.status == "scheduled"),
        ({"q": "no-such-thing"}, lambda r: False),
        ({"name": "app.nothing"}, lambda r: False),
        ({"status": "lost"}, lambda r: False),
    ]
    for params, keep in cases:
        expected = book.expected(keep)
        assert book.walk(limit=500 if len(expected) > 1000 else 37, **params) == expected, params
    assert len(book.expected(lambda r: id_needle in r.id)) == 10

    counts = book.stack.api("GET", "/api/tasks/counts")
    assert counts.status_code == 200
    body = counts.json()
    assert body["total"] == len(records)
    by_status = Counter(rec.status for rec in records)
    assert {status: n for status, n in body["by_status"].items() if n} == dict(by_status)


@pytest.mark.parametrize("params", [
    {"cursor": "!!!"}, {"cursor": "abc"}, {"cursor": "bm90LWEtY3Vyc29y"},
    {"limit": "0"}, {"limit": "501"}, {"limit": "ten"}, {"limit": "1.5"},
    {"status": "bogus"}, {"status": "finished,bogus"},
    {"since": "yesterday"}, {"until": "2026-13-45"},
])
def test_malformed_listing_queries_are_refused(book, params):
    response = book.stack.api("GET", "/api/tasks", params=params)
    assert response.status_code == 400, (params, response.text)
    assert response.json()["error"]


# --- Retention and cap --------------------------------------------------------------------------------


def test_upkeep_prunes_to_the_retention_and_the_cap_oldest_finished_first(redis_url):
    url = db_url(redis_url, PRUNE_DB)
    flush_db(url)
    # Maintenance prunes on its first tick, then every 60 s (not a setting): the records are
    # written before the server starts, and the retention outlasts the server's start-up.
    env = {"REDIS_URL": url, "PULSE_RETENTION": "2m", "PULSE_REGISTRY_CAP": "50"}
    registry = make_celery(env).pulse.registry
    now = time.time()
    old = [f"old-{n:03d}" for n in range(40)]
    finished = [f"fin-{n:03d}" for n in range(100)]
    scheduled = [f"sch-{n:03d}" for n in range(20)]
    running = [f"run-{n:03d}" for n in range(10)]
    pipe = registry.client.pipeline(transaction=False)
    for n, task_id in enumerate(old):
        registry.write(task_id, "finished", fields={"state": "SUCCESS", "name": "job"}, now=now - 3600 + n,
                       client=pipe)
    for n, task_id in enumerate(finished):
        registry.write(task_id, "finished", fields={"state": "SUCCESS", "name": "job"},
                       now=now - 20 + n * 0.1, client=pipe)
    for n, task_id in enumerate(scheduled):
        registry.write(task_id, "scheduled", fields={"state": "PENDING", "name": "job"}, now=now - 30 + n,
                       client=pipe)
    for n, task_id in enumerate(running):
        # Created long ago, but updated just now: the retention counts from the last update.
        registry.write(task_id, "scheduled", fields={"state": "PENDING", "name": "job"}, now=now - 3600,
                       client=pipe)
        registry.write(task_id, "running", fields={"state": "STARTED", "worker": "w@h"}, now=now - 10 + n,
                       client=pipe)
    pipe.execute()
    assert registry.size() == 170

    with own_server(url, "web-registry-prune", PULSE_RETENTION="2m", PULSE_REGISTRY_CAP="50",
                    PULSE_MAINTENANCE_INTERVAL="0.5", PULSE_LOST_AFTER="3600") as (_proc, stack):
        wait_until(lambda: stack.api("GET", "/api/tasks/counts").json()["total"] <= 50, 20, 0.2,
                   "the first upkeep to prune")
        page = stack.api("GET", "/api/tasks", params={"limit": 500}).json()
        listed = [task["id"] for task in page["tasks"]]
        assert page["next_cursor"] is None
        survivors = set(finished[-20:]) | set(scheduled) | set(running)
        assert set(listed) == survivors
        assert registry.size() == 50
        for task_id in (old[0], old[-1], finished[0], finished[79]):
            response = get(stack, task_id)
            assert response.status_code == 404 and response.json()["status"] == "unknown", task_id
        assert get(stack, finished[80]).json()["status"] == "finished"
        assert get(stack, running[0]).json()["status"] == "running"
        counts = stack.api("GET", "/api/tasks/counts").json()
        assert counts["by_status"]["running"] == 10 and counts["by_status"]["scheduled"] == 20

    # The same prune, called directly: over the cap, the oldest ended records go first again.
    extra = [f"late-{n:03d}" for n in range(15)]
    later = time.time()
    for n, task_id in enumerate(extra):
        registry.write(task_id, "failed", fields={"state": "FAILURE", "name": "job"}, now=later + n * 0.1)
    assert registry.size() == 65
    assert registry.prune() == 15
    remaining = {task_id.decode() for task_id in registry.client.zrange(f"{registry.prefix}i:all", 0, -1)}
    assert remaining == set(finished[95:]) | set(scheduled) | set(running) | set(extra)
    assert registry.get(finished[94]) is None and registry.get(extra[0])["status"] == "failed"
    # Past the retention, even unfinished records go.
    assert registry.prune(now=time.time() + 3600) == 50
    assert registry.size() == 0


def test_wait_is_capped_at_30_seconds(held_wait):
    held_wait.thread.join(60)
    assert not held_wait.thread.is_alive()
    outcome = held_wait.outcome
    assert outcome["status_code"] == 200
    assert outcome["body"]["id"] == held_wait.task_id and outcome["body"]["status"] == "scheduled"
    assert 29 <= outcome["elapsed"] < 40
