"""Benchmark 10, bulk replay: 10,000 failed tasks replayed by one bulk action, and the dashboard meanwhile.

Setup: an embedded Redis; 10,000 failed, replayable records written straight into the registry
through its own write script (pipelined, as in ``bench/api.py``): task name ``bench.parked``, a
structured failure, their arguments as JSON (``call``, which a replay needs), on the queue
``bench-bulk-parked`` that no worker consumes, so the replays wait in Redis and the benchmark
measures Pulse, not a worker. Then the real server (eventlet, defaults: ``PULSE_BULK_CAP``
10,000, the runner's batches of 50) and a real worker of ``bench.tasks`` (thread pool,
``PULSE_PROGRESS_INTERVAL=0`` so every call is sent) running ``bench.report`` tasks that report
4 times a second with the call's wall time as the message: a feeder sends one every
span / tasks seconds, each reporting for the span, so about ``tasks`` of them report at any time
for as long as the benchmark runs (the window opens once they all do). One Socket.IO client
(python-socketio, threaded, websocket) with the operator token sits in the dashboard room
(``subscribe`` with ``{"dashboard": true}``, as the pages do) and takes every ``tasks`` push.

Measured:
- dashboard push lag: receipt time minus the progress call's wall time, for each (task, call) of
  a running ``bench.report`` task, counted on the first push that carries it; p50 and p99 over a
  baseline window with no bulk action, then over the calls made while the job ran (from the
  POST to its ``ended_at``). Target p99 < 250 ms during the bulk: the dashboard's fan-out target
  (``bench/fanout.py``).
- the bulk replay: ``POST /api/bulk`` (``{"action": "replay", "filters": {"status": "failed",
  "name": "bench.parked"}, "reason": "bench"}``), followed with ``GET /api/bulk/<id>`` every
  ``POLL`` seconds as a page would; time from the POST to the job's ``ended_at``, and tasks
  replayed a second. It must end ``finished`` with every task acted on, and its own record
  (``GET /api/tasks/<job id>``) finished at 100%; otherwise the benchmark raises.
- the CPU of the server, the worker and Redis (and of the whole machine, others' processes
  included) from the POST to the job's end, so a reader can tell a loaded machine.

Full: 10,000 records, 20 tasks reporting (80 calls/s, each task for 10 s), a 5 s baseline; quick:
500 records, 10 tasks (40 calls/s, 5 s each), a 3 s baseline.
"""

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass

import redis
import requests
import socketio

from pulse import devstack
from tasks.celery import make_celery

from .fanout import Usage
from .harness import TOKEN, Row, Stack, auth_headers, percentiles, stack, wait_until

NAME = "10 bulk"
TARGET_LAG = 0.250  # the dashboard's fan-out target (bench/fanout.py TARGET_LAG)
INTERVAL = 0.25  # seconds between a reporting task's calls: 4 a second
POLL = 0.5  # seconds between two GET /api/bulk/<id>
PARKED_QUEUE = "bench-bulk-parked"  # no worker consumes it: the replays wait in Redis
PARKED_NAME = "bench.parked"
WORKERS = ("celery@batch-1", "celery@batch-2")


@dataclass(frozen=True)
class Size:
    records: int
    tasks: int  # reporting at any time
    span: float  # seconds each reporting task runs
    baseline: float


FULL = Size(records=10_000, tasks=20, span=10.0, baseline=5.0)
QUICK = Size(records=500, tasks=10, span=5.0, baseline=3.0)


def fill(redis_url: str, count: int, seed: int = 10) -> float:
    """Write ``count`` failed, replayable records (0.01 s apart, the newest now); seconds taken."""
    registry = make_celery({"REDIS_URL": redis_url}).pulse.registry
    rng = random.Random(seed)
    pipe = registry.client.pipeline(transaction=False)
    started, first = time.perf_counter(), time.time() - count * 0.01
    for number in range(count):
        task_id, created = str(uuid.UUID(int=rng.getrandbits(128), version=4)), first + number * 0.01
        args, kwargs = [number], {"account_id": rng.randrange(10**6), "attempt": 1}
        registry.write(task_id, "failed", fields={
            "name": PARKED_NAME, "state": "FAILURE", "queue": PARKED_QUEUE, "worker": rng.choice(WORKERS),
            "retries": 0, "args": repr(tuple(args)), "kwargs": repr(kwargs),
            "call": {"args": args, "kwargs": kwargs},
            "sent_at": created, "received_at": created + 0.001, "started_at": created + 0.002,
            "finished_at": created + 0.5, "runtime": 0.498,
            "failure": {"exc_type": "ConnectionError", "exc_message": "upstream timed out after 30 s",
                        "traceback": None, "details": {}},
        }, now=created + 0.5, client=pipe)
        if number % 500 == 499:
            pipe.execute()
    pipe.execute()
    registry.client.close()
    return time.perf_counter() - started


class Dashboard:
    """One Socket.IO client in the dashboard room: the lag of every progress call it is pushed."""

    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.seen: set[tuple[str, str]] = set()  # (task id, message): a call counts once
        self.calls: list[tuple[float, float]] = []  # (call's wall time, receipt time)
        self.pushes = self.tasks_pushed = 0
        self.dropped = False
        self.sio.on("tasks", self._on_tasks)
        self.sio.on("disconnect", self._on_disconnect)

    def _on_tasks(self, batch) -> None:
        now = time.time()
        self.pushes += 1
        self.tasks_pushed += len(batch)
        for task in batch:
            progress = task.get("progress") or {}
            message = progress.get("message")
            # A finished task keeps its last call's message: running ones only.
            if task.get("name") != "bench.report" or task.get("status") != "running" or not message:
                continue
            key = (task["id"], message)
            if key in self.seen:
                continue
            self.seen.add(key)
            with contextlib.suppress(ValueError):
                self.calls.append((float(message), now))

    def _on_disconnect(self, *_reason) -> None:
        self.dropped = True

    def connect(self, url: str) -> None:
        self.sio.connect(url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=10)
        ack = self.sio.call("subscribe", {"dashboard": True}, timeout=10)
        if not isinstance(ack, dict) or "error" in ack:
            raise RuntimeError(f"subscribing to the dashboard failed: {ack!r}")

    def lags(self, start: float, end: float) -> list[float]:
        """Lags (s) of the calls made between ``start`` and ``end`` (wall times)."""
        return [at - call for call, at in list(self.calls) if start <= call < end]


class Feeder(threading.Thread):
    """Keeps about ``size.tasks`` ``bench.report`` tasks reporting: one sent every span / tasks
    seconds, each reporting for ``size.span`` seconds."""

    def __init__(self, running: Stack, size: Size) -> None:
        super().__init__(daemon=True)
        self.app = make_celery(running.env)
        self.every = size.span / size.tasks
        self.updates = round(size.span / INTERVAL)
        self.sent = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                self.app.send_task("bench.report", kwargs={"updates": self.updates, "interval": INTERVAL})
                self.sent += 1
                next_at += self.every
                self.stopping.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the benchmark
            self.error = exc
        finally:
            self.app.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        if self.error is not None:
            raise RuntimeError(f"sending bench.report tasks failed: {self.error!r}")


def ready(url: str) -> bool:
    with contextlib.suppress(requests.RequestException, ValueError, KeyError):
        return requests.get(f"{url}/healthz", timeout=2).json()["monitor"]["connected"]
    return False


def bulk_replay(base: str, records: int) -> tuple[dict, float, int]:
    """Start the bulk replay and follow it to its end; (the ended job, POST wall time, polls)."""
    with requests.Session() as session:
        session.headers.update(auth_headers())
        posted = time.time()
        response = session.post(f"{base}/api/bulk", timeout=60, json={
            "action": "replay", "filters": {"status": "failed", "name": PARKED_NAME}, "reason": "bench"})
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/bulk answered {response.status_code}: {response.text[:300]}")
        job, polls = response.json(), 0
        if job["total"] != records:
            raise RuntimeError(f"the bulk replay selected {job['total']} tasks, not {records}")
        deadline = time.monotonic() + max(120.0, records * 0.1)
        while job["ended_at"] is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bulk replay {job['id']} still {job['status']} at {job['done']} of "
                                   f"{job['total']}")
            time.sleep(POLL)
            response = session.get(f"{base}/api/bulk/{job['id']}", timeout=30)
            response.raise_for_status()
            job, polls = response.json(), polls + 1
        record = session.get(f"{base}/api/tasks/{job['id']}", timeout=30).json()
    if job["status"] != "finished" or job["acted"] != records:
        raise RuntimeError(f"bulk replay {job['id']} ended {job['status']}: {job['acted']} of {records} "
                           f"acted, {job['not_eligible']} not eligible, {job['errors']} errors, "
                           f"{job['uncertain']} uncertain ({job.get('error')})")
    percent = (record.get("progress") or {}).get("percent")
    if record.get("status") != "finished" or percent != 100:
        raise RuntimeError(f"the job's own record {job['id']} is {record.get('status')} at {percent}%, "
                           "not finished at 100%")
    return job, posted, polls


def run(quick: bool) -> list[Row]:
    size = QUICK if quick else FULL
    with stack("bulk") as running:
        fill_seconds = fill(running.redis_url, size.records)
        base = running.start_web()
        running.start_worker(pool="threads", concurrency=2 * size.tasks + 5, PULSE_PROGRESS_INTERVAL="0")
        running.wait_worker()
        wait_until(lambda: ready(base), 30, 0.1, "monitor connected")
        dashboard = Dashboard()
        dashboard.connect(base)
        feeder = Feeder(running, size)
        feeder.start()
        try:
            time.sleep(size.span + 1.0)  # every reporting slot filled: the stream is steady
            baseline_start = time.time()
            time.sleep(size.baseline)
            baseline_end = time.time()
            usage = Usage({"server": running.procs["web"].pid, "worker": running.procs["worker"].pid,
                           "redis": running.procs["redis"].pid})
            job, posted, polls = bulk_replay(base, size.records)
            cpu = usage.read()
            time.sleep(1.0)  # pushes of calls made just before the end still count
            dropped = dashboard.dropped
        finally:
            feeder.stop()
            # Cold shutdown: the reporting tasks still running need not finish.
            devstack.stop(running.procs.pop("worker"), signal.SIGQUIT)
            dashboard.sio.disconnect()
        parked = queue_length(running.redis_url, PARKED_QUEUE)
    if dropped:
        raise RuntimeError("the dashboard client was disconnected during the benchmark")
    before = dashboard.lags(baseline_start, baseline_end)
    during = dashboard.lags(posted, job["ended_at"])
    return rows(size, job, posted, polls, before, during, dashboard, feeder, fill_seconds, parked,
                baseline_end - baseline_start, cpu)


def queue_length(redis_url: str, queue: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return client.llen(queue)
    finally:
        client.close()


def rows(size: Size, job: dict, posted: float, polls: int, before: list[float], during: list[float],
         dashboard: Dashboard, feeder: Feeder, fill_seconds: float, parked: int,
         baseline: float, cpu: dict[str, float]) -> list[Row]:
    total = job["ended_at"] - posted
    work = job["ended_at"] - job["started_at"]
    base, bulk = percentiles(before), percentiles(during)
    met = bulk["p99"] < TARGET_LAG

    def made(seconds: float) -> float:
        return size.tasks / INTERVAL * seconds

    return [
        Row(NAME, f"bulk replay of {size.records:,}: time", total, "s",
            note=f"{size.records:,} failed records written straight into the registry in "
                 f"{fill_seconds:.1f} s; POST /api/bulk to the job's ended_at; picked up "
                 f"{job['started_at'] - posted:.2f} s after the POST, {work:.1f} s of work; {polls} polls "
                 f"of GET /api/bulk/<id>; {parked:,} replays waiting on the parked queue at the end"),
        Row(NAME, "bulk replay rate", size.records / total, "tasks/s",
            note=f"{size.records / work:,.0f} tasks/s from the runner's start to the end"),
        Row(NAME, "tasks acted on", job["acted"], "tasks", target=f"{size.records:,}",
            met=job["acted"] == size.records,
            note=f"status {job['status']}, not eligible {job['not_eligible']}, errors {job['errors']}, "
                 f"uncertain {job['uncertain']}; the job's own record finished at 100%"),
        Row(NAME, "dashboard lag p50, baseline", base["p50"] * 1e3, "ms",
            note=f"{size.tasks} bench.report tasks x 4/s, one client in the dashboard room; "
                 f"{baseline:.1f} s before the bulk; max {base['max'] * 1e3:.0f} ms"),
        Row(NAME, "dashboard lag p99, baseline", base["p99"] * 1e3, "ms"),
        Row(NAME, "dashboard lag p50, during bulk", bulk["p50"] * 1e3, "ms",
            note=f"calls made from the POST to the job's end ({total:.1f} s); "
                 f"max {bulk['max'] * 1e3:.0f} ms"),
        Row(NAME, "dashboard lag p99, during bulk", bulk["p99"] * 1e3, "ms",
            target=f"p99 < {TARGET_LAG * 1e3:.0f} ms", met=met),
        Row(NAME, "lag samples, baseline", len(before), "calls",
            note=f"progress calls received, each counted once, of about {made(baseline):,.0f} made "
                 f"({size.tasks} tasks x 4/s); {feeder.sent} bench.report tasks sent in all"),
        Row(NAME, "lag samples, during bulk", len(during), "calls",
            note=f"of about {made(total):,.0f} made (a task's last call may reach the dashboard with its "
                 f"success, then counted as finished, not here); the client received "
                 f"{dashboard.pushes:,} tasks pushes carrying {dashboard.tasks_pushed:,} tasks in all"),
        Row(NAME, "server CPU during bulk", 100 * cpu["server"], "% of a core",
            note=f"from the POST to the job's end, in % of a core: worker {100 * cpu['worker']:.0f}, Redis "
                 f"{100 * cpu['redis']:.0f}; all {os.cpu_count()} cores together {100 * cpu['machine']:.0f} "
                 "busy, other processes on the machine included"),
    ]
