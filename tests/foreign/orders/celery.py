"""The orders project's Celery app, built the way a user adds Pulse to their own project."""

import os

from celery import Celery

import pulse

app = Celery(
    "orders",
    broker=os.environ.get("ORDERS_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("ORDERS_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
    include=["orders.tasks"],
    task_cls="orders.base:AuditedTask",  # the default class of every task without a base= of its own
)
pulse.install(app)
app.conf.update(broker_connection_retry_on_startup=True)
