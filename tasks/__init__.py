"""Pulse's demo project: a Celery app of its own (``tasks.celery``) with ``pulse.install(app)``,
and a few tasks to launch from the dashboard (``tasks.demo``). Nothing here is Pulse itself."""

from .celery import app

__all__ = ["app"]
