"""Bounded failure events: Pulse's task base class and the worker's request for it.

Celery's ``task-failed`` and ``task-retried`` events carry the exception's repr and the whole
traceback, unbounded, and the traceback repeats the exception's text: a task raising a 20 MB
message published a 40 MB event, over Redis's default pub/sub buffer (32 MB), and Redis dropped
every subscriber's connection, the monitors' included. Pulse keeps at most ``MAX_CHARS`` of each
anyway (tasks/safejson.py), so the worker sends no more than that.
"""

from typing import Any

from celery import Task
from celery.worker.request import Request

from .safejson import bounded_text

BOUNDED_EVENTS = ("task-failed", "task-retried")
BOUNDED_FIELDS = ("exception", "traceback")


class BoundedRequest(Request):
    """Celery's request, with the text its failure events carry cut to Pulse's bound."""

    def send_event(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's own signature
        if type in BOUNDED_EVENTS:
            fields.update({key: bounded_text(fields[key]) for key in BOUNDED_FIELDS if key in fields})
        super().send_event(type, **fields)


class PulseTask(Task):
    """The base class of every task of a Pulse-configured app (``make_celery``)."""

    Request = "tasks.request:BoundedRequest"
