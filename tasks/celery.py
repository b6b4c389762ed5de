"""The Celery app, configured from the environment.

This is the one place the Celery side (workers and producers) reads its settings. The web
server reuses this app, so it launches tasks and reads results with exactly the same config.
"""

import os
from collections.abc import Mapping

from celery import Celery

from . import collect, lifecycle
from .registry import Registry

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _positive_float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number; set it to seconds, e.g. 0.25") from None
    if value < 0:
        raise ValueError(f"{key}={raw!r} must not be negative")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(env: Mapping[str, str], key: str, default: float) -> float:
    raw = (env.get(key) or "").strip().lower()
    if not raw:
        return default
    unit = _UNITS.get(raw[-1])
    try:
        value = float(raw[:-1]) * unit if unit else float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a duration: use seconds or e.g. 90s, 30m, 12h, 7d") from None
    if value <= 0:
        raise ValueError(f"{key}={raw!r} must be positive")
    return value


def make_celery(env: Mapping[str, str] = os.environ) -> Celery:
    """Build the Celery app from ``env``: REDIS_URL, PULSE_PROGRESS_INTERVAL, PULSE_REDIS_TIMEOUT,
    PULSE_RETENTION, PULSE_REGISTRY_CAP, PULSE_REGISTRY_PREFIX and PULSE_WORKER_GC_INTERVAL. Its
    ``pulse_registry`` is the durable task registry."""
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    timeout = _positive_float(env, "PULSE_REDIS_TIMEOUT", 5.0)
    app = Celery("pulse", broker=redis_url, backend=redis_url, include=["tasks.demo"],
                 amqp="tasks.lifecycle:RecordingAMQP", task_cls="tasks.request:PulseTask")
    app.conf.update(
        task_track_started=True,
        # Must be on in the producer too (the web app), or launched tasks send no task-sent.
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_extended=True,
        broker_connection_retry_on_startup=True,
        # Bounded socket waits: a dead or frozen Redis must fail a call, not hang a task.
        redis_socket_connect_timeout=timeout,
        redis_socket_timeout=timeout,
        broker_transport_options={
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        },
        pulse_progress_interval=_positive_float(env, "PULSE_PROGRESS_INTERVAL", 0.25),
        pulse_worker_gc_interval=_positive_float(env, "PULSE_WORKER_GC_INTERVAL", 5.0),
    )
    cap = env.get("PULSE_REGISTRY_CAP") or "200000"
    if not cap.isdigit() or int(cap) < 1:
        raise ValueError(f"PULSE_REGISTRY_CAP={cap!r} must be a positive whole number of records")
    # The registry shares the result backend's Redis client (created lazily by Celery).
    app.pulse_registry = Registry(
        lambda: app.backend.client,
        prefix=env.get("PULSE_REGISTRY_PREFIX") or "pulse:",
        retention=_duration(env, "PULSE_RETENTION", 7 * 86400),
        cap=int(cap),
    )
    lifecycle.install()
    collect.install()
    return app


app = make_celery()
