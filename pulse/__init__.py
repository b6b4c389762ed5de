"""Pulse's web server: the event monitor, live Socket.IO rooms, REST API, pages and auth.

``create_app`` builds the app and binds the shared objects; ``start_background`` starts the
monitor and the dashboard pusher (kept apart so that building an app starts nothing).
"""

import os
from collections.abc import Mapping
from pathlib import Path

import redis
from flask import Flask
from flask_socketio import SocketIO

from tasks.celery import make_celery

from . import api, auth, live, pages
from .config import load_config
from .monitor import Monitor
from .results import use_lookup_only_backend

ROOT = Path(__file__).resolve().parent.parent


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    """Build the app from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(load_config(env))

    celery_app = make_celery(env)
    use_lookup_only_backend(celery_app)
    socketio = SocketIO(app, async_mode=app.config["ASYNC_MODE"])
    broadcaster = live.Broadcaster(socketio, app.config["PUSH_INTERVAL"])
    app.extensions["pulse_celery"] = celery_app
    app.extensions["pulse_redis"] = redis.Redis.from_url(
        celery_app.conf.broker_url, socket_timeout=5, socket_connect_timeout=2
    )
    app.extensions["pulse_live"] = broadcaster
    app.extensions["pulse_monitor"] = Monitor(
        celery_app,
        on_task=broadcaster.task_changed,
        on_status=broadcaster.monitor_status,
        max_tasks=app.config["MAX_TASKS"],
        idle_timeout=app.config["MONITOR_IDLE_TIMEOUT"],
    )
    auth.init_app(app)
    api.init_app(app)
    pages.init_app(app)
    live.init_app(app, socketio)
    return app


def start_background(app: Flask) -> None:
    """Start the event monitor and the dashboard pusher as background tasks."""
    socketio = app.extensions["socketio"]
    socketio.start_background_task(app.extensions["pulse_monitor"].run, sleep=socketio.sleep)
    socketio.start_background_task(app.extensions["pulse_live"].run, sleep=socketio.sleep)
