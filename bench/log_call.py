"""Benchmark 11: the cost of one log call inside a task, with Pulse keeping the task's lines.

Setup: an embedded Redis on a free loopback port (``harness.stack``); a task runs eagerly in this
process (``apply``, which sets Celery's current task as a worker does) with that Redis as broker
and result backend, so every batch of lines makes its real round trips (the lines' script and
the ``task-log`` event). Pulse: a tight loop of 100,000 ``log.info("step %d of %d", i, n)`` calls
on a task logger (``get_task_logger``) that has Pulse's handler alone (its level INFO, not
propagated: no console handler adds its own cost); a batch goes out every 0.25 s and at the
end, the rest is a buffer append. Baseline: the same loop with no handler at all, which is
Python's logging itself (the record is still made: the level lets it through). The loops
alternate for several rounds and the medians are reported. Quick: 10,000 calls.

The target (issue 16: under 5 us a call) is held against Pulse's part, the difference: on the
machines this runs on, Python's logging alone costs more than that per call.
"""

import logging
import time

from celery.utils.log import get_task_logger

from pulse.agent import logs as task_logs
from pulse.record.logs import TaskLogs
from tasks.celery import make_celery

from .harness import Row, median, stack

NAME = "11 log call"
TARGET_US = 5.0
LOGGER = "bench.log_call"


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"pulse": [], "bare": [], "lines": []}
    with stack("log-call") as running:
        app = make_celery(running.env)
        log = get_task_logger(LOGGER)
        task_logger = logging.getLogger("celery.task")
        saved = (task_logger.level, task_logger.propagate, list(task_logger.handlers))
        task_logger.setLevel(logging.INFO)
        task_logger.propagate = False
        for handler in saved[2]:
            task_logger.removeHandler(handler)
        logs = TaskLogs(app.pulse.registry)
        handler = task_logs.install(app, logs, logging.INFO, ())

        @app.task(bind=True, shared=False)
        def loop(self, n):
            start = time.perf_counter()
            for i in range(n):
                log.info("step %d of %d", i, n)
            return (time.perf_counter() - start) / n

        try:
            for _ in range(rounds):  # alternate, so machine noise hits both alike
                task_logger.addHandler(handler)
                result = loop.apply(args=(calls,))
                figures["pulse"].append(result.get())
                figures["lines"].append(logs.read(result.id, after=0, limit=1)["last"])
                task_logger.removeHandler(handler)
                figures["bare"].append(loop.apply(args=(calls,)).get())
        finally:
            task_logger.removeHandler(handler)
            task_logger.setLevel(saved[0])
            task_logger.propagate = saved[1]
            for old in saved[2]:
                task_logger.addHandler(old)
            app.close()
    return figures


def run(quick: bool) -> list[Row]:
    calls, rounds = (10_000, 3) if quick else (100_000, 5)
    figures = measure(calls, rounds)
    pulse, bare = median(figures["pulse"]) * 1e6, median(figures["bare"]) * 1e6
    kept = median(figures["lines"])
    return [
        Row(NAME, "log.info with Pulse, per call", pulse, "us", other=bare, competitor="logging alone",
            note=f"{rounds} alternating rounds, medians; {calls:,} calls a round ({kept:,.0f} lines "
                 "numbered in the last round's task: a batch every 0.25 s keeps the newest 1,000)"),
        Row(NAME, "Pulse's part of it, per call", pulse - bare, "us", target=f"< {TARGET_US:g} us",
            met=pulse - bare < TARGET_US,
            note="the handler: the line, the buffer, the batches (their lines, script and event)"),
    ]
