"""Read what Celery's result backend holds for a task, raw.

Celery's own decoding turns a FAILURE meta into an exception and drops the custom keys that
``tasks.fail`` stores beside ``exc_type``; Pulse needs them, so it reads the stored value itself.
"""

from typing import Any

import redis
from celery import Celery
from celery.backends.redis import RedisBackend

from pulse.agent.install import backend_is_redis

# Connections the web server may hold to Redis at once. Past it a caller waits for one to be
# free (up to the socket timeout) instead of failing: redis-py's default pool raises
# MaxConnectionsError at 100, which a burst of subscriptions or API calls reached.
MAX_CONNECTIONS = 50  # unless the Celery setting redis_max_connections says otherwise


class LookupOnlyRedisBackend(RedisBackend):
    """The Redis result backend for a process that looks results up but never waits on them.

    The stock backend subscribes to a result channel on every ``send_task`` and for every
    result a canvas chains on (for ``AsyncResult.get`` and ``.then``); after a Redis outage that
    subscriber gives up for good, failing every later launch, and each subscription holds a
    connection. Pulse only reads results, so it never subscribes. Its connection pool blocks
    when full rather than failing.
    """

    def _get_pool(self, **params):
        params["max_connections"] = params.get("max_connections") or MAX_CONNECTIONS
        return redis.BlockingConnectionPool(timeout=params.get("socket_timeout") or 5.0, **params)

    def on_task_call(self, producer, task_id):
        return None

    def add_pending_result(self, result, weak=False, start_drainer=True):
        return result

    def remove_pending_result(self, result):
        return result


def use_lookup_only_backend(celery_app: Celery) -> None:
    """Switch ``celery_app`` to ``LookupOnlyRedisBackend`` if its result backend is Redis (call
    before its backend is used)."""
    if not backend_is_redis(celery_app):
        return
    url = celery_app.conf.result_backend
    celery_app.conf.result_backend = f"{__name__}:LookupOnlyRedisBackend+{url}"


def read_meta(celery_app: Celery, task_id: str) -> dict[str, Any] | None:
    """The decoded backend entry of ``task_id`` (status, result, traceback, ...), or None if absent."""
    backend = celery_app.backend
    payload = backend.get(backend.get_key_for_task(task_id))
    if payload is None:
        return None
    meta = backend.decode(payload)
    return meta if isinstance(meta, dict) else None
