"""Demo tasks, launched from the dashboard to see Pulse work."""

import time

from celery.utils.log import get_task_logger

from pulse import fail, report_progress

from .celery import app

log = get_task_logger(__name__)

# What the dashboard may launch (PULSE_LAUNCH_ALLOW for `make run` and the tests).
LAUNCHABLE = ("tasks.demo.count", "tasks.demo.fail_with_details", "tasks.demo.crash")


@app.task(bind=True)
def count(self, total: int = 100, delay: float = 0.05) -> int:
    """Count to ``total``, reporting progress at each step; returns ``total``."""
    total = int(total)
    log.info("counting to %d", total)
    for step in range(1, total + 1):
        time.sleep(float(delay))
        report_progress(self, step, total, f"step {step} of {total}")
        log.info("step %d of %d", step, total)
    return total


@app.task(bind=True)
def fail_with_details(self, step: int = 3, delay: float = 0.2, input: str | None = None) -> None:
    """Progress up to ``step`` of 10, then fail with structured details (``input`` among them)."""
    step = int(step)
    for current in range(1, step + 1):
        time.sleep(float(delay))
        report_progress(self, current, 10, f"processing record {current}")
        log.info("processed record %d", current)
    log.error("record %d could not be parsed: %r", step, input)
    fail(
        self,
        f"record {step} could not be parsed",
        exc_type=ValueError,
        step=step,
        input=f"row-{step}: '12,abc'" if input is None else input,
        hint="check the CSV export settings",
        expose=("step", "hint"),  # the widget may show these to the end user; not the input
    )


@app.task
def crash() -> None:
    """Raise ValueError plainly, to show Celery's own failure path."""
    raise ValueError("demo crash: something went wrong")


@app.task
def echo(value: object = None) -> object:
    """Return ``value``: a task whose result is whatever it was given."""
    return value
