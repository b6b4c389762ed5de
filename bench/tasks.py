"""Tasks the benchmarks run on a real worker (``celery -A bench.tasks worker``).

The app is the demo project's Celery app (``tasks``), so the demo tasks are here too.
"""

import logging
import time

from pulse import report_progress
from tasks import app

__all__ = ["app", "log_lines", "report"]

# The lines of ``bench.log``: Pulse keeps them when the worker names this logger in
# PULSE_LOG_LOGGERS (bench/log_stream.py does); not propagated, so the worker's own log file
# does not take 10,000 lines a second, which would be its console's cost, not Pulse's.
LINES_LOGGER = "bench.lines"
logging.getLogger(LINES_LOGGER).propagate = False


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


@app.task(name="bench.log")
def log_lines(seconds: float = 10.0, rate: float = 100.0) -> int:
    """Log ``rate`` lines a second for ``seconds`` on ``LINES_LOGGER``; returns how many.

    Each message is the wall-clock time of its call (``repr(time.time())``), so a receiver can
    tell how long the line took to reach it. Kept to the schedule, whatever a call costs.
    """
    logger = logging.getLogger(LINES_LOGGER)
    count = round(seconds * rate)
    start = time.monotonic()
    for number in range(count):
        time.sleep(max(0.0, start + number / rate - time.monotonic()))
        logger.info("%r", time.time())
    return count
