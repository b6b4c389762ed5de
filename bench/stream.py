"""A recorded stream of real Celery task events, and its replay through Redis at full speed.

``record`` runs real tasks on a real worker and keeps every raw pub/sub message the worker and
the producer published on Celery's event channels (exactly the bytes a consumer receives).
``expand`` clones that sample with fresh task ids and current timestamps until it holds the
number of events asked for; ``publish`` sends the messages with pipelined PUBLISH commands.
"""

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterable

import redis

from .harness import Stack, wait_until

SAMPLE_TASKS = 40


def record(running: Stack, tasks: int = SAMPLE_TASKS) -> list[tuple[bytes, dict]]:
    """Run ``tasks`` real tasks (progress, success, structured failure) and capture their events."""
    from tasks.celery import make_celery

    client = redis.Redis.from_url(running.redis_url)
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("/*celeryev/task.*")
    captured: list[tuple[bytes, dict]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = sub.get_message(timeout=0.2)
            if message is not None:
                captured.append((message["channel"], json.loads(message["data"])))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    run_sample_tasks(make_celery(running.env), tasks)
    stop.set()
    listener.join()
    sub.close()
    client.close()
    return captured


def run_sample_tasks(app, tasks: int) -> None:
    """Send ``tasks`` real tasks (1 in 10 a structured failure) and wait until all have finished."""
    results = []
    for number in range(tasks):
        if number % 10 == 9:
            results.append(app.send_task("tasks.demo.fail_with_details", kwargs={"step": 3, "delay": 0.05}))
        else:
            results.append(app.send_task("tasks.demo.count", kwargs={"total": 12, "delay": 0.05}))
    wait_until(lambda: all(r.state in ("SUCCESS", "FAILURE") for r in results), 120, 0.2, "recorded tasks")
    time.sleep(0.5)  # the last events are published right after the state is stored


def events_of(envelope: dict) -> list[dict]:
    body = json.loads(base64.b64decode(envelope["body"]))
    return body if isinstance(body, list) else [body]


def expand(sample: list[tuple[bytes, dict]], count: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """``count`` events (as whole messages) cloned from ``sample``; returns (messages, tasks)."""
    sample_events = sum(len(events_of(envelope)) for _channel, envelope in sample)
    copies = -(-count // sample_events)
    first = min(event["timestamp"] for _c, envelope in sample for event in events_of(envelope))
    span = max(event["timestamp"] for _c, envelope in sample for event in events_of(envelope)) - first
    messages: list[tuple[bytes, bytes]] = []
    produced, tasks, base = 0, 0, time.time() - span
    for _copy in range(copies):
        ids: dict[str, str] = {}
        for channel, envelope in sample:
            events = [clone_event(event, ids, base - first) for event in events_of(envelope)]
            produced += len(events)
            body = events if len(events) > 1 else events[0]
            messages.append((channel, _envelope(envelope, body)))
            if produced >= count:
                return messages, tasks + len(ids)
        tasks += len(ids)
    return messages, tasks


def clone_event(event: dict, ids: dict[str, str], shift: float) -> dict:
    """``event`` with the task ids mapped to fresh ones (kept in ``ids``) and its time moved by ``shift``."""
    event = dict(event)
    for key in ("uuid", "root_id", "parent_id"):
        if event.get(key):
            event[key] = ids.setdefault(event[key], str(uuid.uuid4()))
    event["timestamp"] = event["timestamp"] + shift
    return event


def _envelope(template: dict, body) -> bytes:
    envelope = dict(template)
    envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(envelope).encode()


def publish(redis_url: str, messages: Iterable[tuple[bytes, bytes]], chunk: int = 500) -> float:
    """PUBLISH every message in order, pipelined; returns the seconds it took."""
    client = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for number, (channel, data) in enumerate(messages, 1):
        pipe.publish(channel, data)
        if number % chunk == 0:
            pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def event_count(messages: Iterable[tuple[bytes, bytes]]) -> int:
    return sum(len(events_of(json.loads(data))) for _channel, data in messages)
