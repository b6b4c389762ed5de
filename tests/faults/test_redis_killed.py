"""Redis killed with SIGKILL and restarted on its port and data while tasks report progress.

One outage for the module (the ``outage`` fixture records what every side saw), then each test
checks one promise: the monitor reconnects by itself and /healthz shows the outage, live updates
resume within 10 s, no registry record is lost, progress and fail() stay bounded, and the worker
carries on. Nothing is restarted but Redis, which comes back without its Lua scripts (as
Redis 7 does), so the registry's pipelined writes meet NOSCRIPT first.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ..conftest import wait_until
from .conftest import REDIS_TIMEOUT, HealthLog, Pushes, Running

pytestmark = pytest.mark.faults

OUTAGE = 7.0  # seconds without Redis: longer than progress's OUTAGE_PAUSE, so a task tries again in it
RESUME_WITHIN = 10.0  # the promise: live updates again within this long of Redis being back


@dataclass
class Outage:
    killed_at: float
    back_at: float
    health: list[tuple[float, float, bool | None]]
    pushes: Pushes
    counting: str
    last_before: float  # the counting task's progress in the last push before the kill
    records: dict[bytes, dict[bytes, bytes]]  # the registry's records just before the kill
    ended: set[str]  # tasks that had ended before the kill
    reporting: dict  # what the task reporting through the outage measured
    after: dict  # a task sent after the restart, as it ended


def registry_records(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return {key: client.hgetall(key) for key in client.scan_iter("pulse:t:*", count=1000)}
    finally:
        client.close()


@pytest.fixture(scope="module")
def outage(fault, tmp_path_factory) -> Iterator[Outage]:
    stack = fault.stack
    ended = {stack.launch("tasks.demo.count", total=3, delay=0.01) for _ in range(3)}
    for task_id in ended:
        stack.wait_for(task_id, "finished")
    running = Running.start(stack, Path(tmp_path_factory.mktemp("killed")))
    try:
        with HealthLog(fault) as health:
            time.sleep(1.0)  # healthy samples first
            records = registry_records(fault.redis.url)
            last_before = running.last_progress()
            killed_at = fault.redis.kill()
            time.sleep(OUTAGE - 2)
            reporting = running.fail_now(within=10)  # Redis still down
            time.sleep(max(0.0, killed_at + OUTAGE - time.time()))
            back_at = fault.redis.start(keep_scripts=False)  # as Redis 7 restarts
            wait_until(lambda: running.pushes.advanced(running.counting, back_at, last_before), 30, 0.1,
                       "a live update after the restart")
            wait_until(lambda: health.samples[-1][2], 30, 0.1, "/healthz to show the monitor connected")
        after = stack.wait_for(stack.launch("tasks.demo.count", total=3, delay=0.01), "finished")
        running.stop(stack)
        yield Outage(killed_at, back_at, health.samples, running.pushes, running.counting, last_before,
                     records, ended, reporting, after)
    finally:
        running.pushes.close()


def test_the_monitor_reconnects_by_itself_and_healthz_shows_the_outage(outage, fault):
    down = [connected for asked, answered, connected in outage.health
            if outage.killed_at + 1 < asked and answered < outage.back_at]
    assert down and not any(down), f"/healthz during the outage said {down}"
    again = [answered for asked, answered, connected in outage.health
             if asked > outage.back_at and connected]
    assert again and again[0] - outage.back_at <= RESUME_WITHIN
    assert fault.web.poll() is None and fault.worker.poll() is None, "a process died or was restarted"
    monitor = [data["connected"] for _at, data in outage.pushes.monitor]
    assert monitor[-2:] == [False, True], f"dashboards were told {monitor}"


def test_live_updates_resume_within_10_s_of_redis_being_back(outage):
    resumed = outage.pushes.advanced(outage.counting, outage.back_at, outage.last_before)
    assert resumed, "no progress after the restart reached the subscribed client"
    assert resumed[0] - outage.back_at <= RESUME_WITHIN, f"resumed {resumed[0] - outage.back_at:.1f}s after"


def test_no_registry_record_written_before_the_kill_is_lost(outage, fault):
    after = registry_records(fault.redis.url)
    missing = set(outage.records) - set(after)
    assert not missing, f"records lost with the kill: {sorted(missing)}"
    for task_id in outage.ended:
        key = f"pulse:t:{task_id}".encode()
        assert after[key] == outage.records[key], f"the finished task {task_id} changed"
    # The last progress written before the kill (its push came after the write) survived it.
    progress = json.loads(after[f"pulse:t:{outage.counting}".encode()][b"progress"])
    assert progress["current"] >= outage.last_before


def test_progress_and_fail_during_the_outage_return_quickly_without_raising(outage):
    during = [call for call in outage.reporting["calls"] if outage.killed_at <= call[0] < outage.back_at]
    assert len(during) > 50 and not any(sent for _started, _seconds, sent in during)
    slowest = max(seconds for _started, seconds, _sent in during)
    assert slowest < REDIS_TIMEOUT, f"a progress call took {slowest:.2f}s with Redis refusing connections"
    failed = outage.reporting["fail"]
    assert outage.killed_at < failed["started"] < outage.back_at
    # Not stored, so fail() raises the plain exception for Celery to record: the task ends.
    assert failed["raised"] == "TaskFailure" and failed["seconds"] < REDIS_TIMEOUT


def test_the_worker_carries_on_after_redis_is_back(outage, fault):
    assert fault.worker.poll() is None
    assert outage.after["status"] == "finished" and outage.after["result"] == 3
    assert outage.after["worker"].startswith("faultworker@")
