"""The HTTP API's queues: list them, peek at what waits (Redis), purge one (operator only, audited)."""

import re
import time
from typing import Any

import redis
from flask import Blueprint, Flask, request

from pulse.server.http.api import ext
from pulse.server.http.auth import actor, api_access
from pulse.server.model.queues import (
    NAME_LIMIT,
    PEEK_DEFAULT,
    PEEK_LIMIT,
    QueueError,
    broker_kind,
    peek,
    purge_amqp,
    purge_redis,
    queue_names,
    queues,
    valid_name,
)

bp = Blueprint("queues", __name__)
REASON_LIMIT = 500
# A reason must say something: not only ASCII white space (the same class in Python and in the
# OpenAPI description's ECMA pattern, so both agree on what is blank).
SAYS_SOMETHING = re.compile(r"[^ \t\n\r\f\v]")
DIGITS = re.compile(r"[0-9]{1,4}")


def _known() -> list[str]:
    """The queues the registry or the workers' consumer lists know, and the default one."""
    return queue_names(ext("pulse_registry"), ext("pulse_celery").conf.task_default_queue,
                       ext("pulse_maintenance").consumers)


def _queue(name: str) -> str:
    """``name`` when it is a valid, known queue; raises QueueError (400, 404) otherwise."""
    if not valid_name(name):
        raise QueueError(400, f"a queue name is 1-{NAME_LIMIT} characters, no control characters")
    if name not in _known():
        raise QueueError(404, f"no queue named {name!r} is known: tasks were never sent to it and no worker "
                              "consumes it")
    return name


@bp.get("/api/queues")
@api_access
def list_queues() -> dict[str, Any]:
    """Every known queue: depth, oldest waiting message, consumers, and whether a peek is possible."""
    now, kind = time.time(), broker_kind(ext("pulse_celery"))
    consumers = ext("pulse_maintenance").consumers
    rows = queues(ext("pulse_broker"), ext("pulse_registry"), _known(), now, consumers,
                  depths=ext("pulse_queue_depths"))
    return {"broker": kind, "queues": [{**row, "broker": kind, "peek": kind == "redis"} for row in rows],
            "at": now}


@bp.get("/api/queues/<path:name>/messages")
@api_access
def messages(name: str) -> dict[str, Any]:
    """The first ``limit`` waiting messages, in the order workers will take them, left in place."""
    raw = request.args.get("limit", str(PEEK_DEFAULT))
    if not DIGITS.fullmatch(raw) or not 1 <= int(raw) <= PEEK_LIMIT:
        raise QueueError(400, f"limit must be a whole number from 1 to {PEEK_LIMIT}")
    _queue(name)
    kind = broker_kind(ext("pulse_celery"))
    broker = ext("pulse_broker")
    if broker is None:
        # basic.get takes the message out of the queue; handing it back (reject + requeue) marks it
        # redelivered and lets the broker put it elsewhere: no read is free of side effects.
        raise QueueError(409, f"peek unavailable on {kind}: reading a message there takes it out of the "
                              "queue (and putting it back marks it redelivered and may reorder it), so Pulse "
                              "does not read it; the queue's depth is in GET /api/queues")
    return peek(broker, ext("pulse_registry"), name, int(raw), time.time())


@bp.post("/api/queues/<path:name>/purge")
@api_access
def purge(name: str) -> Any:
    """Delete every message waiting in queue ``name``; answers how many. Needs a reason."""
    if not valid_name(name):
        raise QueueError(400, f"a queue name is 1-{NAME_LIMIT} characters, no control characters")
    body = request.get_json(silent=True)
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not SAYS_SOMETHING.search(reason) or len(reason) > REASON_LIMIT:
        raise QueueError(400, f'send {{"reason": "..."}}: why you purge, 1-{REASON_LIMIT} characters')
    _queue(name)
    celery, broker = ext("pulse_celery"), ext("pulse_broker")
    kind = broker_kind(celery)
    audit, who = ext("pulse_audit"), actor()
    try:
        purged = purge_redis(broker, name) if broker is not None else purge_amqp(celery, name)
    except (QueueError, redis.exceptions.RedisError) as exc:
        try:  # the registry's Redis may well be the one that failed: the answer says so regardless
            audit.append(who, "purge-queue", name, queue=name, broker=kind, reason=reason,
                         error=f"{type(exc).__name__}: {exc}")
        except redis.exceptions.RedisError:
            pass
        raise
    audit.append(who, "purge-queue", name, queue=name, broker=kind, reason=reason, purged=purged)
    return {"name": name, "broker": kind, "purged": purged, "at": time.time()}


def _queue_error(exc: QueueError) -> Any:
    return {"error": str(exc)}, exc.status


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(QueueError, _queue_error)
