"""Celery events on a Redis broker, in kombu's wire format: topic, message, decoding.

On Redis, Celery publishes each event as one pub/sub message on ``<fanout prefix><exchange>/<routing
key>`` whose payload is kombu's JSON envelope around the base64-encoded JSON event. The progress
helper publishes its ``task-progress`` event in the same pipeline as its other writes (one round
trip instead of three), and the monitor decodes events without kombu's per-message machinery.
Both follow that format exactly; the tests check it against Celery's own receiver.
"""

import base64
import json
import os
import time
import uuid
from typing import Any

from celery import Celery
from celery.utils.time import utcoffset


class UnsupportedBroker(Exception):
    """The broker does not carry events over Redis pub/sub."""


def topic_prefix(app: Celery) -> tuple[str, bool]:
    """(fanout prefix, whether routing keys are appended) of the app's Redis broker, as kombu's
    Redis channel computes them, without connecting (a task must not wait on a broker here)."""
    conn = app.connection_for_write()  # lazy: opens nothing
    try:
        transport = conn.transport
        if transport.driver_type != "redis":
            raise UnsupportedBroker(transport.driver_type)
        channel, options = transport.Channel, conn.transport_options or {}
        prefix = options.get("fanout_prefix", channel.fanout_prefix)
        if not isinstance(prefix, str):
            prefix = channel.keyprefix_fanout if prefix else ""
        patterns = bool(options.get("fanout_patterns", channel.fanout_patterns))
        return prefix.format(db=_db(conn.virtual_host)), patterns
    finally:
        conn.release()


def _db(virtual_host: Any) -> int:
    # kombu's Redis transport reads the database number from the URL's path.
    if isinstance(virtual_host, int):
        return virtual_host
    text = (virtual_host or "").lstrip("/")
    return int(text) if text else 0


def topic(prefix: str, patterns: bool, exchange: str, routing_key: str) -> str:
    """The channel an event with ``routing_key`` goes to (``*`` gives the pattern for them all)."""
    return f"{prefix}{exchange}/{routing_key}" if patterns else f"{prefix}{exchange}"


def event(kind: str, hostname: str | None, clock: int, **fields: Any) -> dict[str, Any]:
    """An event body as Celery's ``EventDispatcher`` builds it."""
    return {"hostname": hostname, "utcoffset": utcoffset(), "pid": os.getpid(), "clock": clock, **fields,
            "timestamp": time.time(), "type": kind}


def encode(body: dict[str, Any], exchange: str) -> tuple[str, bytes]:
    """(routing key, message) of an event, as kombu's Redis transport publishes it."""
    routing_key = body["type"].replace("-", ".")
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": body["hostname"]},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return routing_key, json.dumps(message).encode()


_HEAD = b'{"body": "'
_JSON, _BASE64 = b'"content-type": "application/json"', b'"body_encoding": "base64"'


def decode(data: bytes) -> list[dict[str, Any]]:
    """The event bodies in one message (Celery may send a list); raises ValueError if unreadable."""
    body = _base64_body(data)
    if body is None:  # not the usual layout: read the envelope in full
        envelope = json.loads(data)
        if not isinstance(envelope, dict) or envelope.get("content-type") != "application/json":
            raise ValueError("not a JSON-serialized Celery event (Pulse needs event_serializer='json')")
        body = envelope.get("body")
        if (envelope.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
    else:
        body = base64.b64decode(body)
    payload = json.loads(body)
    events = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(one, dict) for one in events):
        raise ValueError("an event that is not a JSON object")
    return events


def _base64_body(data: bytes) -> bytes | None:
    """The body of an envelope laid out as kombu writes it, found without parsing the rest.

    Parsing the whole envelope was a third of the cost of decoding an event. base64 has no
    quote, so the body ends at the first one; the body is only ever read as JSON, so a message
    that merely looks like this layout decodes to an error or an event the monitor checks.
    """
    if not (data.startswith(_HEAD) and _JSON in data and _BASE64 in data):
        return None
    end = data.find(b'"', len(_HEAD))
    return data[len(_HEAD):end] if end > 0 else None
