"""Celery's event stream read straight from Redis pub/sub, in batches.

On Redis, Celery publishes every event as one pub/sub message on ``<prefix><exchange>/<routing
key>``. kombu's consumer turns each into a ``Message`` object and dispatches it on its own; at
thousands of events a second that machinery costs more than everything Pulse does with the
event. This reader subscribes with the topic kombu itself would use, takes whatever messages
are waiting (up to ``max_batch``) in one go, decodes them (``tasks.events``) and localises them
with Celery's own ``EventReceiver.event_from_message`` (timestamps, clocks).
"""

import time
from collections.abc import Iterator
from typing import Any

from celery import Celery

from pulse.agent.wire import UnsupportedBroker, decode, topic, topic_prefix


class StreamSilent(TimeoutError):
    """Redis answered nothing on the event stream for ``idle_timeout``: frozen, or cut off."""


UNDECODABLE = "undecodable"  # the event type counted for a message on the channel that is no event


def _as_is(reply: Any) -> Any:
    return reply


class EventStream:
    """Batches of decoded events from one kombu Redis channel's connection."""

    def __init__(self, celery_app: Celery, channel: Any, idle_timeout: float = 10.0,
                 max_batch: int = 1000) -> None:
        if celery_app.conf.event_serializer != "json":  # decode() reads JSON only
            raise UnsupportedBroker(f"event_serializer={celery_app.conf.event_serializer!r}")
        prefix, patterns = topic_prefix(celery_app)
        # The handler redis-py would use for pub/sub replies logs each one at DEBUG, building its
        # text first: that was a tenth of the monitor's time. The messages need no handling.
        self.pubsub = channel.client.pubsub(push_handler_func=_as_is)
        subscribe = self.pubsub.psubscribe if patterns else self.pubsub.subscribe
        subscribe(topic(prefix, patterns, celery_app.conf.event_exchange, "*"))
        # Events published before Redis confirms the subscription are lost to us: "listening"
        # starts at the confirmation (the lost-worker rule and the dashboard's status rely on it).
        confirmed = self.pubsub.get_message(timeout=idle_timeout)
        if confirmed is None or confirmed["type"] not in ("psubscribe", "subscribe"):
            raise ConnectionError(f"Redis did not confirm the subscription: {confirmed!r}")
        # Celery's receiver is only used to localise each event; it opens nothing by itself.
        self.receiver = celery_app.events.Receiver(channel, handlers={})
        self.idle_timeout = idle_timeout
        self.max_batch = max_batch
        self.undecodable = 0
        self.stopped = False

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """Yield every batch of waiting events until ``stop()``; raises ``StreamSilent`` when
        Redis sent nothing for ``idle_timeout``, not even the answer to a ping."""
        heard, pinged = time.monotonic(), False
        wait = min(1.0, self.idle_timeout / 4)  # so a ping sent halfway has time to be answered
        while not self.stopped:
            message = self.pubsub.get_message(timeout=wait)
            if message is not None:
                heard, pinged = time.monotonic(), False
            if message is None or message["type"] not in ("pmessage", "message"):
                silent = time.monotonic() - heard
                if silent > self.idle_timeout:
                    raise StreamSilent(f"Redis sent nothing for {silent:.0f}s, not even a pong")
                if silent > self.idle_timeout / 2 and not pinged:
                    # Workers heartbeat every ~2 s, but with none running a live Redis is quiet
                    # too: its pong tells it from a frozen one, which answers nothing.
                    self.pubsub.ping()
                    pinged = True
                continue
            raw = [message["data"]]
            self._drain(raw)
            yield self._decode(raw)

    def _drain(self, raw: list[bytes]) -> None:
        """Append the messages already received, up to ``max_batch``, without waiting.

        Read straight off the subscribed connection: ``PubSub.get_message`` wraps every reply
        in retries, health checks and a dict, which cost as much as decoding the event.
        """
        connection = self.pubsub.connection
        while len(raw) < self.max_batch and connection.can_read(timeout=0):
            reply = connection.read_response(push_request=True)
            if isinstance(reply, list) and reply[0] in (b"pmessage", b"message"):
                raw.append(reply[-1])

    def _decode(self, raw: list[bytes]) -> list[dict[str, Any]]:
        events = []
        for data in raw:
            try:
                for body in decode(data):
                    events.append(self.receiver.event_from_message(body)[1])
            except Exception:  # a stray publisher on the channel must not stop the stream
                self.undecodable += 1
        return events

    def stop(self) -> None:
        """Make ``batches`` return within a second."""
        self.stopped = True

    def close(self) -> None:
        self.pubsub.close()
