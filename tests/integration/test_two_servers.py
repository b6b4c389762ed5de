"""Two web servers on one Redis database and one worker: both live, no update twice, either stops alone.

Each server runs its own monitor and pushes only to its own clients; a change that no Celery
event carries (an operator action) reaches the other server's clients through a notice. The
servers, the worker and the database (12) are this module's own; everything is stopped by PID.
"""

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from subprocess import Popen

import pytest
import redis
import requests

from pulse import devstack

from ..conftest import Stack, db_url, flush_db, own_server, own_worker, wait_until

pytestmark = pytest.mark.integration

DB = 12
STEPS = 12  # progress reports of the counting task; its history has exactly this many points
# sent, received, started, one progress event per report, succeeded: the most pushes one client
# may get for one task (a server pushes a task once per batch of its events, however many).
MOST_PUSHES = 4 + STEPS


class Listener:
    """One Socket.IO client of one server, recording every push it gets."""

    def __init__(self, stack: Stack, dashboard: bool = True) -> None:
        self.pushes: list[tuple[str, dict]] = []  # (event, task JSON or summary), in arrival order
        self.monitor: list[dict] = []
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self.client = stack.socket()
        self.client.on("task", lambda task: self._add("task", [task]))
        self.client.on("tasks", lambda tasks: self._add("tasks", tasks))
        self.client.on("monitor", self.monitor.append)
        self.client.on("disconnect", lambda *reason: self.disconnected.set())
        if dashboard:
            self.client.call("subscribe", {"dashboard": True}, timeout=10)

    def _add(self, kind: str, tasks: list[dict]) -> None:
        with self._lock:
            self.pushes += [(kind, task) for task in tasks]

    def watch(self, task_id: str) -> dict:
        return self.client.call("subscribe", {"task": task_id}, timeout=10)["task"]

    def of(self, task_id: str, kind: str = "task") -> list[dict]:
        with self._lock:
            return [task for event, task in self.pushes if event == kind and task["id"] == task_id]

    def close(self) -> None:
        self.client.disconnect()


def no_repeats(pushes: list[dict]) -> None:
    """Every push of a task to one client is a new version of it (its updated_at moves on)."""
    versions = Counter(task["updated_at"] for task in pushes)
    assert [v for v, n in versions.items() if n > 1] == [], f"pushed twice: {pushes}"


def lived(listener: Listener, task_id: str) -> list[dict]:
    """Wait until ``listener`` saw ``task_id`` finish; check it saw it move live first."""
    wait_until(lambda: any(t["status"] == "finished" for t in listener.of(task_id)), 30, 0.05,
               f"the finished push of {task_id}")
    pushes = listener.of(task_id)
    assert any(t["status"] == "running" and 0 < (t["progress"] or {}).get("percent", 0) < 100 for t in pushes)
    assert pushes[-1]["status"] == "finished" and pushes[-1]["result"] == STEPS
    return pushes


def healthy(stack: Stack) -> dict:
    health = requests.get(stack.base_url + "/healthz", timeout=10).json()
    assert health["monitor"]["connected"] is True and health["redis"]["ok"] is True, health
    return health


@pytest.fixture(scope="module")
def url(redis_url) -> Iterator[str]:
    """Database 12, and a worker on it that sends every progress report (no throttle), so a
    task's history length is exactly its number of reports."""
    url = db_url(redis_url, DB)
    flush_db(url)
    with own_worker(url, "twoworker", concurrency=2, PULSE_PROGRESS_INTERVAL="0"):
        yield url


@pytest.fixture(scope="module")
def pair(url) -> Iterator[tuple[Stack, Stack]]:
    with own_server(url, "web-two-a") as (_a, first), own_server(url, "web-two-b") as (_b, second):
        yield first, second


def test_both_servers_push_every_change_of_a_task_to_their_own_clients_once(pair):
    both_push_live(*pair, delay=0.1)


def both_push_live(first: Stack, second: Stack, delay: float) -> None:
    """A task launched on ``first`` is pushed live by both servers, every change once, and both
    read the same history."""
    listeners = [Listener(first), Listener(second)]
    try:
        task_id = first.launch("tasks.demo.count", total=STEPS, delay=delay)
        for listener in listeners:
            assert listener.watch(task_id)["id"] == task_id
        for listener in listeners:
            lived(listener, task_id)
        time.sleep(1.0)  # anything pushed twice would have arrived by now
        for listener in listeners:
            pushes = listener.of(task_id)
            assert len(pushes) <= MOST_PUSHES, f"{len(pushes)} pushes for {MOST_PUSHES} events"
            no_repeats(pushes)
            summaries = listener.of(task_id, "tasks")
            assert summaries and summaries[-1]["status"] == "finished"
            no_repeats(summaries)
        record = first.api("GET", f"/api/tasks/{task_id}").json()
        assert len(record["history"]) == STEPS  # points are written at the source, never by a monitor
        assert second.api("GET", f"/api/tasks/{task_id}").json()["history"] == record["history"]
    finally:
        for listener in listeners:
            listener.close()


def test_an_action_on_one_server_reaches_the_clients_of_the_other_once(pair):
    first, second = pair
    failing = first.launch("tasks.demo.fail_with_details", step=1, delay=0.01)
    first.wait_for(failing, "failed")
    # Sent to a queue nobody consumes: no worker event will ever follow the revoke request.
    waiting = first.celery.send_task("tasks.demo.count", kwargs={"total": 1}, queue="pulse-nobody").id
    first.wait_for(waiting, "scheduled")
    actions_reach_both(first, second, failing, waiting)
    entries = second.api("GET", "/api/audit").json()["entries"]
    assert Counter((e["action"], e["task"]) for e in entries if e["task"] in (failing, waiting)) == {
        ("launch", failing): 1, ("skip", failing): 1, ("revoke", waiting): 1}


def test_either_server_stops_without_the_other_noticing(url):
    with own_server(url, "web-two-c") as (proc_c, first), own_server(url, "web-two-d") as (proc_d, second):
        both = first.launch("tasks.demo.count", total=STEPS, delay=0.05)
        first.wait_for(both, "finished")
        alone = stop_one(proc_c, signal.SIGTERM, second)
        same_as_alone(url, both, alone)
        with own_server(url, "web-two-e") as (_proc_e, third):
            stop_one(proc_d, signal.SIGKILL, third)
            assert third.api("GET", f"/api/tasks/{alone}").json()["status"] == "finished"
    throughput_counted_once(url)


def stop_one(proc: Popen, sig: int, other: Stack) -> str:
    """Stop ``proc`` with ``sig`` while a client of ``other`` listens; a task launched then runs
    live on that client, which noticed nothing. Returns the task's id."""
    staying = Listener(other)
    try:
        devstack.stop(proc, sig)
        assert proc.poll() is not None
        task_id = other.launch("tasks.demo.count", total=STEPS, delay=0.05)
        staying.watch(task_id)
        lived(staying, task_id)
        assert staying.monitor == [] and not staying.disconnected.is_set()
        healthy(other)
    finally:
        staying.close()
    return task_id


def same_as_alone(url: str, both: str, alone: str) -> None:
    """The record two servers wrote has what one server alone writes: the same fields, status,
    result and history length."""
    client = redis.Redis.from_url(url, decode_responses=True)

    def read() -> tuple[list[dict], list[int]]:
        return ([client.hgetall(f"pulse:t:{task_id}") for task_id in (both, alone)],
                [client.llen(f"pulse:h:{task_id}") for task_id in (both, alone)])

    try:
        # The worker records the end at the source; the fields only the task-succeeded event
        # carries (runtime) follow once the monitor applies it: wait for them, then compare.
        wait_until(lambda: all("runtime" in record for record in read()[0]), 10, 0.05, "both runtimes")
        records, histories = read()
    finally:
        client.close()
    assert sorted(records[0]) == sorted(records[1])
    for field in ("status", "state", "result", "progress", "retries", "has_result"):
        assert records[0][field] == records[1][field], field
    assert histories == [STEPS, STEPS]


def throughput_counted_once(url: str) -> None:
    """Each task counted once in the per-minute throughput, however many servers wrote its end."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        counted: Counter = Counter()
        for key in client.scan_iter("pulse:tp:*"):
            counted.update({kind: int(n) for kind, n in client.hgetall(key).items()})
        statuses = Counter(client.hget(key, "status") for key in client.scan_iter("pulse:t:*"))
    finally:
        client.close()
    assert counted["finished"] == statuses["finished"] > 0
    # A skipped or replayed task failed first, and was counted then.
    assert counted["failed"] == statuses["failed"] + statuses["skipped"] + statuses["replayed"]


def actions_reach_both(first, second, failing: str, waiting: str) -> None:
    """A skip on ``first`` and a revoke on ``second`` reach both servers' clients, once each."""
    listeners = [Listener(first, dashboard=False), Listener(second, dashboard=False)]
    try:
        for listener in listeners:
            assert listener.watch(failing)["status"] == "failed"
            assert listener.watch(waiting)["revoke_requested_at"] is None

        assert first.api("POST", f"/api/tasks/{failing}/skip").status_code == 200
        assert second.api("POST", f"/api/tasks/{waiting}/revoke").status_code == 200
        for listener in listeners:
            wait_until(lambda listener=listener: listener.of(failing) and listener.of(waiting), 10, 0.05,
                       "both changes on both servers' clients")
        time.sleep(1.0)  # a second copy (the origin hearing its own notice) would have come by now
        for listener in listeners:
            assert [t["status"] for t in listener.of(failing)] == ["skipped"]
            pushed = listener.of(waiting)
            assert len(pushed) == 1 and pushed[0]["revoke_requested_at"] is not None
            assert pushed[0]["status"] == "scheduled"
    finally:
        for listener in listeners:
            listener.close()
