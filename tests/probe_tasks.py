"""Pulse's tasks plus one that looks inside its own worker process, for tests of the worker side.

``celery -A tests.probe_tasks worker`` runs the demo tasks and ``probe.exception_infos``.
"""

import gc

from billiard.einfo import ExceptionInfo

from tasks import app

__all__ = ["app", "exception_infos"]


@app.task(name="probe.exception_infos")
def exception_infos() -> int:
    """How many of Celery's ``ExceptionInfo`` objects this process holds, garbage included."""
    return sum(isinstance(obj, ExceptionInfo) for obj in gc.get_objects())
