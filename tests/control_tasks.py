"""The demo tasks on an app whose workers allow pool restarts, for the worker control tests.

``celery -A tests.control_tasks worker`` runs the demo tasks with ``worker_pool_restarts`` on (a
setting of the worker's own configuration: nothing on the command line turns it on).
"""

from tasks import app

app.conf.worker_pool_restarts = True

__all__ = ["app"]
