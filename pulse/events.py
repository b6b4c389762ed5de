"""Celery's event stream read straight from Redis pub/sub, in batches.

On Redis, Celery publishes every event as one pub/sub message on ``<prefix><exchange>/<routing
key>``. kombu's consumer turns each into a ``Message`` object and dispatches it on its own; at
thousands of events a second that machinery costs more than everything Pulse does with the
event. This reader subscribes with the topic kombu itself would use, takes whatever messages
are waiting (up to ``max_batch``) in one go, and decodes them with Celery's own
``EventReceiver.event_from_message`` (timestamps localised, clocks kept).
"""

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery


class UnsupportedBroker(Exception):
    """The broker does not carry events over Redis pub/sub: use kombu's receiver."""


def subscribe_topic(channel: Any, exchange: str) -> tuple[str, bool]:
    """The pub/sub topic of Celery's events on a kombu Redis channel, and whether it is a pattern."""
    prefix = getattr(channel, "keyprefix_fanout", None)
    if prefix is None or not hasattr(channel, "client"):
        raise UnsupportedBroker(type(channel).__module__)
    if getattr(channel, "fanout_patterns", False):
        return f"{prefix}{exchange}/*", True
    return f"{prefix}{exchange}", False


def decode(data: bytes) -> list[dict[str, Any]]:
    """The event dicts in one raw message (Celery may send a list); raises ValueError if unreadable."""
    envelope = json.loads(data)
    if not isinstance(envelope, dict) or envelope.get("content-type") != "application/json":
        raise ValueError("not a JSON-serialized Celery event (Pulse needs event_serializer='json')")
    body = envelope.get("body")
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    payload = json.loads(body)
    events = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(event, dict) and isinstance(event.get("type"), str) for event in events):
        raise ValueError("an event without a type")
    return events


class EventStream:
    """Batches of decoded events from one kombu Redis channel's connection."""

    def __init__(self, celery_app: Celery, channel: Any, idle_timeout: float = 10.0,
                 max_batch: int = 1000) -> None:
        topic, pattern = subscribe_topic(channel, celery_app.conf.event_exchange)
        self.pubsub = channel.client.pubsub(ignore_subscribe_messages=True)
        (self.pubsub.psubscribe if pattern else self.pubsub.subscribe)(topic)
        # Celery's receiver is only used to localise each event; it opens nothing by itself.
        self.receiver = celery_app.events.Receiver(channel, handlers={})
        self.idle_timeout = idle_timeout
        self.max_batch = max_batch
        self.undecodable = 0

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """Yield every batch of waiting events; raises TimeoutError after ``idle_timeout`` of silence."""
        quiet_since = time.monotonic()
        while True:
            message = self.pubsub.get_message(timeout=1.0)
            if message is None:
                if time.monotonic() - quiet_since > self.idle_timeout:
                    raise TimeoutError(f"no events for {self.idle_timeout:.0f}s")
                continue
            raw = [message["data"]]
            while len(raw) < self.max_batch:
                message = self.pubsub.get_message(timeout=0)
                if message is None:
                    break
                raw.append(message["data"])
            quiet_since = time.monotonic()
            yield self._decode(raw)

    def _decode(self, raw: list[bytes]) -> list[dict[str, Any]]:
        events = []
        for data in raw:
            try:
                for body in decode(data):
                    events.append(self.receiver.event_from_message(body)[1])
            except Exception:  # a stray publisher on the channel must not stop the stream
                self.undecodable += 1
        return events

    def close(self) -> None:
        self.pubsub.close()
