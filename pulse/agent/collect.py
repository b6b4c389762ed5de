"""A full garbage collection in worker processes after a task, at most every few seconds.

Every failed or ignored task leaves a reference cycle: Celery keeps the exception in billiard's
``ExceptionInfo``, which copies the traceback's frames and their code positions, and the frames
refer back to it. These cycles are few objects but many bytes, and Python starts a full
collection by counting objects, so they pile up: in the soak's mix a prefork pool process grew
from 58 to 106 MiB in eight minutes, and stayed at 52.5 MiB when collected after every task
(bench/RESULTS.md, "Soak"). ``PULSE_WORKER_GC_INTERVAL`` seconds apart (0: never) bounds them.
"""

import gc
import logging
import time
from typing import Any

from celery import signals

log = logging.getLogger(__name__)

def collect_if_due(agent: Any, now: float | None = None) -> bool:
    """Run a full collection if the agent's interval passed since its last one; say if it ran."""
    interval = agent.settings.worker_gc_interval
    now = time.monotonic() if now is None else now
    if interval <= 0 or now < agent.next_collect:
        return False
    agent.next_collect = now + interval  # per process: a forked pool process keeps its own copy
    started = time.perf_counter()
    found = gc.collect()
    log.debug("pulse: collected %d objects in %.1f ms", found, (time.perf_counter() - started) * 1000)
    return True


def _on_postrun(sender=None, **_: Any) -> None:
    agent = getattr(getattr(sender, "app", None), "pulse", None)
    if agent is not None and hasattr(agent, "next_collect"):  # only apps Pulse was installed in
        collect_if_due(agent)


def install() -> None:
    """Connect the collection to ``task_postrun`` (once per process)."""
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="pulse.collect")
