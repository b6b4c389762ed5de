"""Fixtures of the fault tests: a Redis of their own that they kill, restart and freeze, with a
worker and a web server on it (started once for the package), and the browser fixtures.

Every test finds Redis running and the monitor connected, and leaves Redis running.
"""

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import pytest
import redis
import requests
import socketio

from pulse import devstack

from ..conftest import ARTIFACTS, Stack, own_server, own_worker, wait_until

WORKER = "faultworker"
# The worker's PULSE_REDIS_TIMEOUT, below the default 5 s to keep the frozen-Redis test short:
# every bound the tests assert on the worker's side is derived from it.
REDIS_TIMEOUT = 2.0


class OwnRedis:
    """A redis-server (append-only) that can be killed, restarted on its port and data, frozen."""

    def __init__(self, data_dir: Path) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.port = devstack.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.log = open(ARTIFACTS / "faults-redis.log", "w")  # noqa: SIM115 - closed by close()
        self.proc = devstack.start_redis(self.port, data_dir, log=self.log)

    def kill(self) -> float:
        """SIGKILL (no shutdown, no final write); returns the time it was gone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.time()

    def start(self, keep_scripts: bool = True) -> float:
        """Start it again on the same port and data folder; returns the time it listened.

        This Redis (6.2) replays its Lua scripts from the append-only file; Redis 7 and later
        come back without them: ``keep_scripts=False`` does that.
        """
        self.proc = devstack.start_redis(self.port, self.data_dir, log=self.log)
        back = time.time()
        if not keep_scripts:
            client = redis.Redis.from_url(self.url)
            client.script_flush()
            client.close()
        return back

    def freeze(self) -> float:
        self.proc.send_signal(signal.SIGSTOP)
        return time.time()

    def thaw(self) -> float:
        self.proc.send_signal(signal.SIGCONT)
        return time.time()

    def restore(self) -> None:
        """Running and thawed, whatever a test left it as."""
        if self.proc.poll() is None:
            self.thaw()
        else:
            self.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.thaw()  # a stopped process would not act on SIGTERM
        devstack.stop(self.proc)
        self.log.close()


@dataclass
class Faulty:
    """The package's Redis with the worker and the web server on it."""

    redis: OwnRedis
    stack: Stack
    worker: Popen
    web: Popen

    def health(self) -> dict:
        return requests.get(self.stack.base_url + "/healthz", timeout=15).json()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until the monitor is connected and hears the worker: a former fault is over."""

        def healthy() -> bool:
            workers = self.stack.api("GET", "/api/workers").json()["workers"]
            return self.health()["monitor"]["connected"] and any(
                w["online"] and w["hostname"].startswith(f"{WORKER}@") for w in workers)

        wait_until(healthy, timeout, 0.2, "the monitor to be connected and hear the worker")


@dataclass
class HealthLog:
    """Polls /healthz in a thread: one (asked, answered, monitor connected) per answer."""

    faulty: Faulty
    every: float = 0.25
    samples: list[tuple[float, float, bool | None]] = field(default_factory=list)

    def __enter__(self) -> "HealthLog":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)

    def _poll(self) -> None:
        while not self._stop.is_set():
            asked = time.time()
            try:
                connected = self.faulty.health()["monitor"]["connected"]
            except requests.RequestException:
                connected = None  # the web server never went away in these tests: the assertions see it
            self.samples.append((asked, time.time(), connected))
            self._stop.wait(self.every)


@dataclass
class Pushes:
    """What a Socket.IO client subscribed to some tasks and the dashboard receives, timed."""

    client: socketio.Client
    tasks: list[tuple[float, dict]] = field(default_factory=list)
    monitor: list[tuple[float, dict]] = field(default_factory=list)

    @classmethod
    def subscribe(cls, stack: Stack, *task_ids: str) -> "Pushes":
        pushes = cls(stack.socket())
        pushes.client.on("task", lambda data: pushes.tasks.append((time.time(), data)))
        pushes.client.on("monitor", lambda data: pushes.monitor.append((time.time(), data)))
        for task_id in task_ids:
            assert "task" in pushes.client.call("subscribe", {"task": task_id}, timeout=10)
        assert "tasks" in pushes.client.call("subscribe", {"dashboard": True}, timeout=10)
        return pushes

    def progress_of(self, task_id: str, since: float = 0.0) -> list[tuple[float, float]]:
        """(arrival, progress current) of the task's pushes that arrived after ``since``."""
        return [(at, (data["progress"] or {}).get("current") or 0) for at, data in list(self.tasks)
                if data["id"] == task_id and at > since]

    def advanced(self, task_id: str, since: float, beyond: float) -> list[float]:
        """Arrival times of the task's pushes after ``since`` with progress beyond ``beyond``."""
        return [at for at, current in self.progress_of(task_id, since) if current > beyond]

    def close(self) -> None:
        self.client.disconnect()


def current_of(stack: Stack, task_id: str) -> float:
    data = stack.api("GET", f"/api/tasks/{task_id}").json()
    return (data.get("progress") or {}).get("current") or 0


@dataclass
class Running:
    """The two tasks a fault meets: a long demo count, and one timing its calls in ``folder``."""

    counting: str
    reporting: str
    folder: Path
    pushes: Pushes

    @classmethod
    def start(cls, stack: Stack, folder: Path) -> "Running":
        """Start both and wait until both report progress, a client subscribed to them."""
        counting = stack.launch("tasks.demo.count", total=600, delay=0.05)
        reporting = stack.celery.send_task("faults.report_through_outage", args=[str(folder)]).id
        pushes = Pushes.subscribe(stack, counting, reporting)
        try:
            wait_until(lambda: current_of(stack, counting) >= 5 and current_of(stack, reporting) >= 1,
                       30, 0.1, "both tasks to report progress")
        except BaseException:
            pushes.close()
            raise
        return cls(counting, reporting, folder, pushes)

    def last_progress(self) -> float:
        """The counting task's progress in the last push so far."""
        return max(current for _, current in self.pushes.progress_of(self.counting))

    def fail_now(self, within: float) -> dict:
        """Make the reporting task call fail(); what it measured, once it returned."""
        (self.folder / "fail").touch()
        wait_until(lambda: (self.folder / "calls.json").exists(), within, 0.1, "fail() to return")
        return json.loads((self.folder / "calls.json").read_text())

    def stop(self, stack: Stack) -> None:
        """Terminate the counting task (the reporting one ended in fail()), free the worker."""
        response = stack.api("POST", f"/api/tasks/{self.counting}/revoke", json={"terminate": True})
        assert response.status_code == 200, response.text
        stack.wait_for(self.counting, "revoked")


@pytest.fixture(scope="package")
def faulty(tmp_path_factory) -> Iterator[Faulty]:
    redis = OwnRedis(tmp_path_factory.mktemp("faults-redis"))
    try:
        with own_worker(redis.url, WORKER, concurrency=2, app="tests.faults.outage_tasks",
                        PULSE_REDIS_TIMEOUT=str(REDIS_TIMEOUT)) as worker, \
                own_server(redis.url, "web-faults") as (web, stack):
            yield Faulty(redis, stack, worker, web)
    finally:
        redis.close()


@pytest.fixture(scope="module")
def fault(faulty) -> Iterator[Faulty]:
    """The package's stack, healthy when a module starts; Redis running again when it ends."""
    faulty.redis.restore()
    faulty.wait_healthy()
    try:
        yield faulty
    finally:
        faulty.redis.restore()
