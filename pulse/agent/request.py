"""Bounded failure events: the worker's request class, composed with whatever the task uses.

Celery's ``task-failed`` and ``task-retried`` events carry the exception's repr and the whole
traceback, unbounded, and the traceback repeats the exception's text: a task raising a 20 MB
message published a 40 MB event, over Redis's default pub/sub buffer (32 MB), and Redis dropped
every subscriber's connection, the monitors' included. Pulse keeps at most ``MAX_CHARS`` of each
anyway (``pulse.record.safejson``), so the worker sends no more than that. When the worker starts,
every task's ``Request`` class (Celery's, or the user's own) is swapped for a subclass that bounds
those two fields, so it works with Celery's base class, ``base=`` and ``task_cls=`` alike.
"""

from typing import Any

from celery import Celery
from celery.utils.imports import symbol_by_name

from pulse.record.safejson import bounded_text

BOUNDED_EVENTS = ("task-failed", "task-retried")
BOUNDED_FIELDS = ("exception", "traceback")


class BoundedEvents:
    """Mixed into a worker request class: cuts the text its failure events carry to Pulse's bound."""

    def send_event(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's own signature
        if type in BOUNDED_EVENTS:
            fields.update({key: bounded_text(fields[key]) for key in BOUNDED_FIELDS if key in fields})
        super().send_event(type, **fields)


def bounded(request_cls: type) -> type:
    """``request_cls`` with bounded failure events."""
    if issubclass(request_cls, BoundedEvents):
        return request_cls
    return type(f"Bounded{request_cls.__name__}", (BoundedEvents, request_cls),
                {"__module__": __name__, "__qualname__": f"Bounded{request_cls.__name__}"})


def bound_failure_events(app: Celery) -> None:
    """Give every task of ``app`` a request class with bounded failure events (in the worker,
    before it builds its strategies)."""
    for task in app.tasks.values():
        task.Request = bounded(symbol_by_name(task.Request))
