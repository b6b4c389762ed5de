"""A task for the fault tests, run by their worker (``celery -A tests.faults.outage_tasks``).

It reports progress through a Redis outage and then fails with ``fail()``, timing every call.
What each call cost goes to a file the test reads, since Redis is what is down.
"""

import json
import time
from pathlib import Path

from pulse.agent.failure import fail
from pulse.agent.progress import report_progress
from tasks.celery import app

__all__ = ["app", "report_through_outage"]

PACE = 0.02  # seconds between two progress calls: far more often than the throttle lets out


@app.task(bind=True, name="faults.report_through_outage")
def report_through_outage(self, folder: str) -> None:
    """Report progress until ``folder``/fail exists, then fail(); writes ``folder``/calls.json."""
    here = Path(folder)
    calls: list[list] = []  # [started (epoch s), duration (s), sent]
    while not (here / "fail").exists():
        started, clock = time.time(), time.monotonic()
        sent = report_progress(self, len(calls) + 1, None, "through the outage")
        calls.append([started, time.monotonic() - clock, sent])
        time.sleep(PACE)
    started, clock = time.time(), time.monotonic()
    try:
        fail(self, "gave up during the outage", calls=len(calls))
    except BaseException as exc:
        outcome = {"started": started, "seconds": time.monotonic() - clock, "raised": type(exc).__name__}
        partial = here / "calls.part"
        partial.write_text(json.dumps({"calls": calls, "fail": outcome}))
        partial.rename(here / "calls.json")  # whole or absent for the reader
        raise
