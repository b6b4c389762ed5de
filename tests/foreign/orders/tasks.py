"""The orders project's tasks: on a base class of its own (``base=``), on the app's ``task_cls``,
and on Celery's own ``Task``."""

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


@app.task(bind=True)  # the app's task_cls (orders.base:AuditedTask)
def rebuild_index(self, seconds: float = 120.0) -> None:
    report_progress(self, 1, 100, "rebuilding")
    time.sleep(seconds)


@app.task(base=celery.Task)
def request_classes() -> dict[str, list[str]]:
    """The worker's request class of each kind of task here, as class names along its MRO."""
    from celery.utils.imports import symbol_by_name

    names = ("orders.tasks.process_order", "orders.tasks.rebuild_index", "orders.tasks.request_classes")
    return {name: [cls.__name__ for cls in symbol_by_name(app.tasks[name].Request).__mro__] for name in names}
