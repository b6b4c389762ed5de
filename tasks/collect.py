"""A full garbage collection in worker processes after a task, at most every few seconds.

Every failed or ignored task leaves a reference cycle: Celery keeps the exception in billiard's
``ExceptionInfo``, which copies the traceback's frames and their code positions, and the frames
refer back to it. These cycles are few objects but many bytes, and Python starts a full
collection by counting objects, so they pile up: in the soak's mix a prefork pool process grew
from 58 to 106 MiB in eight minutes, and stayed at 52.5 MiB when collected after every task
(bench/RESULTS.md, "Soak"). ``pulse_worker_gc_interval`` seconds apart (0: never) bounds them.
"""

import gc
import logging
import time
from typing import Any

from celery import signals

log = logging.getLogger(__name__)

_due = 0.0  # per process: a forked pool process inherits it, then keeps its own


def collect_if_due(interval: float, now: float | None = None) -> bool:
    """Run a full collection if ``interval`` seconds passed since the last one; say if it ran."""
    global _due
    now = time.monotonic() if now is None else now
    if interval <= 0 or now < _due:
        return False
    _due = now + interval
    started = time.perf_counter()
    found = gc.collect()
    log.debug("pulse: collected %d objects in %.1f ms", found, (time.perf_counter() - started) * 1000)
    return True


def _on_postrun(sender=None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    interval = getattr(app, "conf", {}).get("pulse_worker_gc_interval") if app else None
    if interval is not None:  # only Celery apps that Pulse configured
        collect_if_due(interval)


def install() -> None:
    """Connect the collection to ``task_postrun`` (once per process)."""
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="pulse.collect")
