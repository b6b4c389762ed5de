"""The demo project's Celery app: built exactly as a user's project builds its own.

``celery -A tasks worker`` runs it; ``celery -A tasks pulse`` (or ``python app.py``) serves its
dashboard. Settings come from the environment: REDIS_URL (result backend, and broker unless
BROKER_URL is set), BROKER_URL (another broker, RabbitMQ for example), PULSE_REDIS_TIMEOUT and
DEMO_COUNT_EVERY (seconds between two periodic counts, default 300) here, the PULSE_* settings of
``pulse.install``.
"""

import os
from collections.abc import Mapping

from celery import Celery
from celery.schedules import crontab

import pulse

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def make_celery(env: Mapping[str, str] = os.environ) -> Celery:
    """The demo app, configured from ``env`` (tests build one per environment)."""
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    broker_url = env.get("BROKER_URL") or redis_url
    app = Celery("tasks", broker=broker_url, backend=redis_url, include=["tasks.demo"])
    timeout = pulse.install(app, env=env).settings.redis_timeout  # PULSE_REDIS_TIMEOUT, parsed once
    app.conf.update(
        broker_connection_retry_on_startup=True,
        # Bounded socket waits: a dead or frozen Redis must fail a call, not hang a task.
        redis_socket_connect_timeout=timeout,
        redis_socket_timeout=timeout,
        broker_transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
        # `celery -A tasks beat` sends these; the dashboard's /periodic shows them without it.
        beat_schedule={
            "demo-count": {
                "task": "tasks.demo.count",
                "schedule": float(env.get("DEMO_COUNT_EVERY") or 300),
                "kwargs": {"total": 20, "delay": 0.05},
            },
            "hourly-import-check": {
                "task": "tasks.demo.fail_with_details",
                "schedule": crontab(minute=0),
                "kwargs": {"step": 2, "delay": 0.05},
            },
        },
    )
    return app


app = make_celery()
