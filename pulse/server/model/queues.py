"""The broker's queues: which there are, how deep, what waits in them (a peek), and purging them.

On Redis a queue is kombu's lists: ``<queue>`` and one list per priority step
(``<queue>\\x06\\x163``, ...). kombu LPUSHes a message onto its list and a worker BRPOPs the lists
in priority order (``<queue>`` first), so the next message to run is at the right end of the
first non-empty list: LRANGE from that end reads the first N without taking or moving any. On
RabbitMQ (AMQP) the depth comes from a passive declare; reading a message there takes it out of
the queue (``basic.get``) and putting it back marks it redelivered and may reorder it, so there is
no peek. The overview's queue figures come from here too, so both pages always agree.
"""

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from celery.utils.saferepr import saferepr
from kombu.exceptions import OperationalError

from pulse.record.registry import Registry, as_text

# kombu's Redis transport keeps a list per priority step: "<queue>", "<queue>\x06\x163", ...,
# and its workers pop them in this order.
PRIORITY_KEYS = ("", "\x06\x163", "\x06\x166", "\x06\x169")
NAME_LIMIT = 200
PEEK_LIMIT = 100
PEEK_DEFAULT = 20
REPR_LIMIT = 2048  # characters of an args or kwargs repr, as in the task JSON
TEXT_LIMIT = 255  # characters of a task name or id taken from a message
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
REDIS_SCHEMES = ("redis", "rediss", "socket", "unix")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp", "librabbitmq")
TIMEOUT = 2.0


class QueueError(Exception):
    """A queue request that cannot be answered as asked; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def valid_name(name: Any) -> bool:
    """A queue name as the API takes it: 1-200 characters, no control characters."""
    return isinstance(name, str) and 0 < len(name) <= NAME_LIMIT and not CONTROL_CHARACTERS.search(name)


def broker_kind(celery_app: Celery) -> str:
    """``redis``, ``amqp``, or the broker URL's scheme for any other transport."""
    scheme = str(celery_app.conf.broker_url or "").split("://", 1)[0].split("+")[0].lower()
    if scheme in REDIS_SCHEMES:
        return "redis"
    return "amqp" if scheme in AMQP_SCHEMES else scheme or "unknown"


def queue_names(registry: Registry, default: str, consumers: dict[str, list[str]] | None) -> list[str]:
    """Every queue Pulse knows: the ones tasks were sent to, the default, and those workers consume."""
    known = {as_text(q) for q in registry.client.smembers(registry.keys.queues)}
    return sorted(known | {default} | set(consumers or {}))


def queues(broker: redis.Redis | None, registry: Registry, names: list[str], now: float,
           consumers: dict[str, list[str]] | None,
           depths: Callable[[list[str]], dict[str, tuple[int, int]]] | None = None) -> list[dict[str, Any]]:
    """Depth and age of the oldest waiting message of each queue, with its consumers. Without a
    Redis broker the depth comes from ``depths`` (RabbitMQ's passive declare), and the age of the
    oldest message stays unknown: AMQP cannot look at a message without taking it."""
    if broker is None:
        known = depths(names) if depths is not None else {}
        return [{"name": name, "depth": known[name][0] if name in known else None, "oldest_age": None,
                 "consumers": None if consumers is None else sorted(consumers.get(name, []))}
                for name in names]
    pipe = broker.pipeline(transaction=False)
    for name in names:
        for suffix in PRIORITY_KEYS:
            pipe.llen(name + suffix)
        pipe.lindex(name, -1)  # kombu pushes on the left: the oldest message is on the right
    replies = pipe.execute()
    out = []
    step = len(PRIORITY_KEYS) + 1
    for index, name in enumerate(names):
        lengths, oldest = replies[index * step: index * step + step - 1], replies[index * step + step - 1]
        out.append({
            "name": name,
            "depth": sum(int(n) for n in lengths),
            "oldest_age": _age(registry, oldest, now),
            "consumers": None if consumers is None else sorted(consumers.get(name, [])),
        })
    return out


def _age(registry: Registry, raw: Any, now: float) -> float | None:
    """How long the oldest waiting message has waited, from its task's registry record."""
    if raw is None:
        return None
    try:
        task_id = json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    sent = registry.client.hget(registry.key(task_id), "sent_at")
    return round(now - float(sent), 1) if sent else None


# -- Peek (Redis only) ----------------------------------------------------------------------------


def peek(broker: redis.Redis, registry: Registry, name: str, limit: int, now: float) -> dict[str, Any]:
    """The first ``limit`` messages a worker would take from queue ``name``, in that order, read
    in one MULTI/EXEC (a consistent snapshot) with LLEN and LRANGE only: nothing moves."""
    pipe = broker.pipeline(transaction=True)
    for suffix in PRIORITY_KEYS:
        pipe.llen(name + suffix)
        pipe.lrange(name + suffix, -limit, -1)
    try:
        replies = pipe.execute()
    except redis.exceptions.ResponseError as exc:  # WRONGTYPE: a key of that name is no list
        raise QueueError(409, f"queue {name!r} is not a kombu list on this Redis broker: {exc}") from None
    raws: list[tuple[str, bytes]] = []
    for index, suffix in enumerate(PRIORITY_KEYS):
        # The right end is popped first.
        raws.extend((suffix, raw) for raw in reversed(replies[index * 2 + 1]))
    messages = [decode(raw, position, PRIORITY_KEYS.index(suffix))
                for position, (suffix, raw) in enumerate(raws[:limit])]
    _add_ages(registry, messages, now)
    return {"name": name, "broker": "redis", "depth": sum(int(n) for n in replies[0::2]),
            "limit": limit, "messages": messages, "at": now}


def decode(raw: bytes | str, position: int = 0, priority_step: int = 0) -> dict[str, Any]:
    """One waiting message as the API shows it: ``{position, id, name, args, kwargs, eta, ...}``.

    Reads Celery's protocol 2 headers (the task's own safe reprs of its arguments), or a protocol 1
    JSON body. A body in another serializer is never decoded (pickle would run code); a message
    that is not a kombu envelope at all comes back with ``undecodable`` true, never as an error.
    """
    out: dict[str, Any] = {"position": position, "priority_step": priority_step, "id": None, "name": None,
                           "args": None, "kwargs": None, "eta": None, "expires": None, "retries": None,
                           "age": None, "size": len(raw), "undecodable": False, "note": None}
    try:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        properties = envelope.get("properties") or {}
        if not isinstance(headers, dict) or not isinstance(properties, dict):
            raise TypeError("headers and properties must be objects")
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        return {**out, "undecodable": True, "note": _bounded(f"not a kombu message: {exc}", TEXT_LIMIT)}
    fields: Any = headers
    if "task" not in headers:  # protocol 1: everything is in the body
        fields, note = _body(envelope, properties)
        if not isinstance(fields, dict):
            return {**out, "undecodable": True, "note": note or "no task header and no task in the body"}
    out.update(id=_text(fields.get("id") or properties.get("correlation_id")), name=_text(fields.get("task")),
               eta=_timestamp(fields.get("eta")), expires=_timestamp(fields.get("expires")),
               retries=_count(fields.get("retries")))
    if "task" in headers:
        args, kwargs = headers.get("argsrepr"), headers.get("kwargsrepr")
        if args is None or kwargs is None:  # a producer that left the reprs out: read the body
            body, note = _body(envelope, properties)
            if isinstance(body, list) and len(body) >= 2:
                args = _repr(body[0]) if args is None else args
                kwargs = _repr(body[1]) if kwargs is None else kwargs
            out["note"] = note
        out.update(args=_bounded(args, REPR_LIMIT), kwargs=_bounded(kwargs, REPR_LIMIT))
    else:
        out.update(args=_repr(fields.get("args")), kwargs=_repr(fields.get("kwargs")))
    return out


def _body(envelope: dict[str, Any], properties: dict[str, Any]) -> tuple[Any, str | None]:
    """The message body when it is JSON, else (None, why not)."""
    content_type = envelope.get("content-type")
    if content_type != "application/json":
        return None, _bounded(f"the body is {content_type!r}, which Pulse does not decode", TEXT_LIMIT)
    body = envelope.get("body")
    try:
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body, validate=True)
        return json.loads(body), None
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        return None, _bounded(f"the body is not JSON: {exc}", TEXT_LIMIT)


def _add_ages(registry: Registry, messages: list[dict[str, Any]], now: float) -> None:
    """How long each message has waited, from its task's registry record (``sent_at``)."""
    known = [m for m in messages if m["id"]]
    if not known:
        return
    pipe = registry.client.pipeline(transaction=False)
    for message in known:
        pipe.hget(registry.key(message["id"]), "sent_at")
    for message, sent in zip(known, pipe.execute(), strict=True):
        try:
            message["age"] = round(max(0.0, now - float(sent)), 1) if sent else None
        except ValueError:
            message["age"] = None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return _bounded(value if isinstance(value, str) else saferepr(value, TEXT_LIMIT), TEXT_LIMIT)


def _repr(value: Any) -> str:
    return _bounded(saferepr(value, REPR_LIMIT), REPR_LIMIT)


def _bounded(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else saferepr(value, limit)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 53 else None


def _timestamp(value: Any) -> float | None:
    """Unix seconds from an ISO 8601 time (Celery's ``eta`` and ``expires``); naive means UTC."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


# -- Purge ----------------------------------------------------------------------------------------


def purge_redis(broker: redis.Redis, name: str) -> int:
    """Delete queue ``name``'s lists in one MULTI/EXEC; the count is their length at that moment."""
    keys = [name + suffix for suffix in PRIORITY_KEYS]
    check = broker.pipeline(transaction=False)
    for key in keys:
        check.type(key)
    kinds = [as_text(kind) for kind in check.execute()]
    if any(kind not in ("list", "none") for kind in kinds):
        raise QueueError(409, f"queue {name!r}: a key of that name on the Redis broker is no list; "
                              "nothing was deleted")
    pipe = broker.pipeline(transaction=True)
    for key in keys:
        pipe.llen(key)
    pipe.delete(*keys)
    return sum(int(n) for n in pipe.execute()[:len(keys)])


def purge_amqp(celery_app: Celery, name: str, timeout: float = TIMEOUT) -> int:
    """``queue.purge`` on the app's AMQP broker: the count of messages it removed (0 for a queue
    the broker does not have). Raises QueueError(503) when the broker does not answer."""
    conn = celery_app.connection_for_write(
        connect_timeout=timeout, transport_options={"read_timeout": timeout, "write_timeout": timeout})
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        channel = conn.channel()
        try:
            return int(channel.queue_purge(queue=name) or 0)
        except conn.channel_errors as exc:
            if getattr(exc, "code", None) == 404:  # NOT_FOUND: nothing declared it, nothing waits in it
                return 0
            raise QueueError(409, f"the broker refused to purge queue {name!r}: {exc}") from None
        finally:
            _close_quietly(channel)
    except (OperationalError, *conn.connection_errors, OSError, TimeoutError) as exc:
        raise QueueError(503, f"the broker did not answer ({type(exc).__name__}); nothing was purged, "
                              "retry when it is back") from None
    finally:
        conn.release()


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the broker already closed
        pass
