"""Tasks the benchmarks run on a real worker (``celery -A bench.tasks worker``).

The app is the demo project's Celery app (``tasks``), so the demo tasks are here too.
"""

import time

from pulse import report_progress
from tasks import app

__all__ = ["app", "report"]


@app.task(bind=True, name="bench.report")
def report(self, updates: int = 10, interval: float = 0.25) -> int:
    """Report progress ``updates`` times, one every ``interval`` seconds; returns ``updates``.

    Each message is the wall-clock time of the call (``time.time()``), so a receiver can tell
    how long the update took to reach it. With ``PULSE_PROGRESS_INTERVAL`` at or below
    ``interval`` in the worker's environment, every call is sent.
    """
    start = time.monotonic()
    for step in range(1, updates + 1):
        report_progress(self, step, updates, repr(time.time()))
        # Keep to the schedule (not sleep(interval)), so the rate holds whatever a call costs.
        time.sleep(max(0.0, start + step * interval - time.monotonic()))
    return updates
