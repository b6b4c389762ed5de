"""The Celery side of Pulse: the Celery app, the helpers task authors import, the demo tasks.

Nothing here imports the web server (the ``pulse`` package): workers run without it.
"""

from .celery import app
from .progress import PROGRESS, TaskFailure, fail, report_progress

__all__ = ["PROGRESS", "TaskFailure", "app", "fail", "report_progress"]
