"""The project's default task class (``Celery(task_cls=...)``), with a worker request of its own."""

import celery
from celery.worker.request import Request


class AuditedRequest(Request):
    """The project's own worker-side request (Pulse must keep it, not replace it)."""

    audited = True


class AuditedTask(celery.Task):
    Request = AuditedRequest
