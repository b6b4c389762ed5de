"""Read what Celery's result backend holds for a task, raw.

Celery's own decoding turns a FAILURE meta into an exception and drops the custom keys that
``tasks.fail`` stores beside ``exc_type``; Pulse needs them, so it reads the stored value itself.
"""

from typing import Any

from celery import Celery


def read_meta(celery_app: Celery, task_id: str) -> dict[str, Any] | None:
    """The decoded backend entry of ``task_id`` (status, result, traceback, ...), or None if absent."""
    backend = celery_app.backend
    payload = backend.get(backend.get_key_for_task(task_id))
    if payload is None:
        return None
    meta = backend.decode(payload)
    return meta if isinstance(meta, dict) else None
