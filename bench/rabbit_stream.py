"""The recorded event stream on RabbitMQ: record real task events from Celery's event exchange, replay them.

``record`` runs real tasks on a real worker whose broker is RabbitMQ, while a queue of ours, bound
to Celery's event exchange (``celeryev``, a topic exchange) with ``task.#``, keeps every raw event
message: its routing key (``task.succeeded``, or ``task.multi`` for the worker's batches), headers
and JSON body, exactly what a consumer's queue receives. ``expand`` clones that sample with fresh
task ids and current timestamps (as ``stream.expand`` does for Redis); ``publish`` sends the
messages with kombu's ``Producer`` to the event exchange, already encoded, at full speed.
``node`` starts a private RabbitMQ node (``tests/rabbitmq.py``), or says why it cannot.
"""

import contextlib
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from celery.events.event import event_exchange
from kombu import Connection, Consumer, Producer, Queue

from .harness import ARTIFACTS, Stack
from .stream import SAMPLE_TASKS, clone_event, run_sample_tasks

Sample = list[tuple[str, dict, dict | list]]  # (routing key, headers, body) of each message
Message = tuple[str, dict, bytes]


def unavailable() -> str | None:
    """Why no private RabbitMQ node can run here, or None."""
    try:
        from tests.rabbitmq import unavailable as reason
    except ImportError as exc:  # the tests folder is not there (an installed package)
        return f"tests/rabbitmq.py cannot be imported: {exc}"
    return reason()


@contextlib.contextmanager
def node(name: str) -> Iterator[str]:
    """A private RabbitMQ node for one benchmark; yields its AMQP URL, stops it by PID afterwards."""
    from tests.rabbitmq import start_rabbitmq

    ARTIFACTS.mkdir(exist_ok=True)
    # Not under a root-only (0700) temporary folder: the rabbitmq user must enter its folder.
    base = Path(tempfile.mkdtemp(prefix=f"pulse-bench-{name}-rabbitmq-"))
    try:
        with open(ARTIFACTS / f"{name}-rabbitmq.log", "w") as log:
            running = start_rabbitmq(base, name=name.replace("-", ""), log=log)
            try:
                yield running.url
            finally:
                running.stop()
                for item in (base / "log").glob(f"{running.nodename}.log"):
                    shutil.copy(item, ARTIFACTS / f"{name}-rabbitmq-node.log")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def record(running: Stack, broker_url: str, tasks: int = SAMPLE_TASKS) -> Sample:
    """Run ``tasks`` real tasks on the stack's worker (on ``broker_url``) and capture their event messages."""
    from tasks.celery import make_celery

    captured: Sample = []
    stop, bound = threading.Event(), threading.Event()

    def keep(body, message) -> None:
        captured.append((message.delivery_info["routing_key"], dict(message.headers or {}),
                         json.loads(message.body)))

    def listen() -> None:
        with Connection(broker_url) as conn:
            queue = Queue(f"bench-recorder.{uuid.uuid4()}", exchange=event_exchange, routing_key="task.#",
                          auto_delete=True, exclusive=True, durable=False)
            with Consumer(conn.channel(), queues=[queue], callbacks=[keep], no_ack=True, accept=["json"]):
                bound.set()
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not bound.wait(30):
        raise TimeoutError("the event recorder did not bind its queue within 30s")
    run_sample_tasks(make_celery(dict(running.env, BROKER_URL=broker_url)), tasks)
    stop.set()
    listener.join()
    return captured


def _events(body: dict | list) -> list[dict]:
    return body if isinstance(body, list) else [body]


def expand(sample: Sample, count: int) -> tuple[list[Message], int]:
    """``count`` events (as whole messages) cloned from ``sample``; returns (messages, events)."""
    all_events = [event for _key, _headers, body in sample for event in _events(body)]
    first = min(event["timestamp"] for event in all_events)
    span = max(event["timestamp"] for event in all_events) - first
    messages: list[Message] = []
    produced, base = 0, time.time() - span
    while produced < count:
        ids: dict[str, str] = {}
        for key, headers, body in sample:
            events = [clone_event(event, ids, base - first) for event in _events(body)]
            produced += len(events)
            encoded = json.dumps(events if isinstance(body, list) else events[0]).encode()
            messages.append((key, headers, encoded))
            if produced >= count:
                break
    return messages, produced


def probe(sample: Sample) -> list[Message]:
    """One message of the sample with fresh ids: published until a consumer counts it (it is bound)."""
    return expand(sample, 1)[0][:1]


def publish(broker_url: str, messages: Iterable[Message]) -> float:
    """Publish every message in order to Celery's event exchange; returns the seconds it took."""
    with Connection(broker_url) as conn:
        producer = Producer(conn.channel(), exchange=event_exchange, auto_declare=True)
        started = time.perf_counter()
        for key, headers, body in messages:
            # Already JSON: kombu sends the bytes as they are (no serializer), as Celery's
            # dispatcher would have sent them (transient, with the sender's headers).
            producer.publish(body, routing_key=key, headers=headers, content_type="application/json",
                             content_encoding="utf-8", delivery_mode=1)
        return time.perf_counter() - started
