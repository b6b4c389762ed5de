"""The orders project's tasks: some on a base class of its own, some plain."""

import logging
import time

import celery

from pulse import fail, report_progress

from .celery import app

log = logging.getLogger(__name__)


class OrdersTask(celery.Task):
    """The project's own task base (Pulse must not need its tasks to use one of its classes)."""

    def before_start(self, task_id, args, kwargs):
        log.info("orders: %s[%s] starting", self.name, task_id)
        super().before_start(task_id, args, kwargs)


@app.task(base=OrdersTask, bind=True)
def process_order(self, items: int = 5, delay: float = 0.4) -> int:
    for done in range(1, items + 1):
        time.sleep(delay)
        report_progress(self, done, items, f"packed item {done} of {items}")
    return items


@app.task(base=OrdersTask, bind=True)
def charge_card(self) -> None:
    fail(self, "card declined", exc_type=ValueError, gateway="test-gw", attempt=2)


@app.task(bind=True)
def rebuild_index(self, seconds: float = 120.0) -> None:
    report_progress(self, 1, 100, "rebuilding")
    time.sleep(seconds)
