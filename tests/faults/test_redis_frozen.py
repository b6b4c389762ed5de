"""Redis frozen with SIGSTOP (its sockets stay open, nothing answers) and thawed with SIGCONT.

One freeze for the module (the ``freeze`` fixture records what every side saw). The monitor must
notice within 15 s, from the silence of the stream (no worker heartbeats, no answer to its
ping), and reconnect by itself after the thaw; progress and fail() calls must each cost at most
about one socket timeout (PULSE_REDIS_TIMEOUT), and not every call in a row.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pulse.agent.progress import OUTAGE_PAUSE

from ..conftest import wait_until
from .conftest import REDIS_TIMEOUT, HealthLog, Pushes, Running

pytestmark = pytest.mark.faults

NOTICE_WITHIN = 15.0  # the promise: a frozen Redis is noticed within this long
RESUME_WITHIN = 10.0
# One call may pay the connection's timeout for connecting and again for its answer; more
# would mean retries inside a call.
CALL_BOUND = 2 * REDIS_TIMEOUT + 1.0


@dataclass
class Freeze:
    frozen_at: float
    thawed_at: float
    health: list[tuple[float, float, bool | None]]
    pushes: Pushes
    counting: str
    last_before: float
    reporting: dict


@pytest.fixture(scope="module")
def freeze(fault, tmp_path_factory) -> Iterator[Freeze]:
    stack = fault.stack
    running = Running.start(stack, Path(tmp_path_factory.mktemp("frozen")))
    pushes = running.pushes
    try:
        with HealthLog(fault) as health:
            time.sleep(1.0)  # healthy samples first
            last_before = running.last_progress()
            frozen_at = fault.redis.freeze()
            # Waits longer than the promise, so that a late notice fails its test with the time.
            wait_until(lambda: any(not data["connected"] for _, data in pushes.monitor), NOTICE_WITHIN + 15,
                       0.1, "the monitor to notice the frozen Redis")
            wait_until(lambda: any(connected is False for *_, connected in health.samples), 15, 0.1,
                       "/healthz to show the monitor disconnected")
            # By now the task has paid for a first attempt and, after OUTAGE_PAUSE, a second one.
            wait_until(lambda: time.time() > frozen_at + 2 * REDIS_TIMEOUT + OUTAGE_PAUSE, 15, 0.1,
                       "two progress attempts")
            reporting = running.fail_now(within=CALL_BOUND + 5)
            thawed_at = fault.redis.thaw()
            wait_until(lambda: pushes.advanced(running.counting, thawed_at, last_before), 30, 0.1,
                       "a live update after the thaw")
            wait_until(lambda: health.samples[-1][2], 30, 0.1, "/healthz to show the monitor connected")
        running.stop(stack)
        yield Freeze(frozen_at, thawed_at, health.samples, pushes, running.counting, last_before, reporting)
    finally:
        pushes.close()


def test_the_monitor_notices_a_frozen_redis_within_15_s(freeze):
    noticed = [data["at"] for _, data in freeze.pushes.monitor if not data["connected"]]
    assert noticed and noticed[0] > freeze.frozen_at
    took = noticed[0] - freeze.frozen_at
    assert took <= NOTICE_WITHIN, f"noticed {took:.1f}s after the freeze"
    # /healthz says so too (each answer waits up to 5 s for its own ping of the frozen Redis).
    down = [answered for _asked, answered, connected in freeze.health
            if connected is False and answered < freeze.thawed_at]
    assert down and down[0] - freeze.frozen_at <= NOTICE_WITHIN + 5


def test_the_monitor_reconnects_by_itself_after_the_thaw(freeze, fault):
    again = [answered for asked, answered, connected in freeze.health
             if asked > freeze.thawed_at and connected]
    assert again and again[0] - freeze.thawed_at <= RESUME_WITHIN
    resumed = freeze.pushes.advanced(freeze.counting, freeze.thawed_at, freeze.last_before)
    assert resumed and resumed[0] - freeze.thawed_at <= RESUME_WITHIN
    assert fault.web.poll() is None and fault.worker.poll() is None


def test_progress_calls_pay_the_timeout_once_per_pause_not_each_time(freeze):
    during = [call for call in freeze.reporting["calls"] if freeze.frozen_at <= call[0] < freeze.thawed_at]
    assert not any(sent for _started, _seconds, sent in during)
    slow = [(started, seconds) for started, seconds, _sent in during if seconds > REDIS_TIMEOUT / 2]
    assert all(seconds <= CALL_BOUND for _, seconds in slow), f"calls took {slow}"
    assert len(slow) >= 2, f"expected an attempt, a pause, then another attempt; saw {slow}"
    for (first, took), (second, _) in zip(slow, slow[1:], strict=False):
        assert second - (first + took) >= OUTAGE_PAUSE - 0.5, "an attempt came before the pause was over"
    quick = [seconds for _started, seconds, _sent in during if seconds <= REDIS_TIMEOUT / 2]
    assert len(quick) > 50 and max(quick) < 0.2, "calls in the pause must return at once"


def test_fail_ends_the_task_within_a_bounded_time(freeze):
    failed = freeze.reporting["fail"]
    assert freeze.frozen_at < failed["started"] < freeze.thawed_at
    assert failed["raised"] == "TaskFailure" and failed["seconds"] <= CALL_BOUND


def test_the_worker_runs_tasks_again_after_the_thaw(freeze, fault):
    done = fault.stack.wait_for(fault.stack.launch("tasks.demo.count", total=3, delay=0.01), "finished")
    assert done["result"] == 3 and done["worker"].startswith("faultworker@")
