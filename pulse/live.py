"""Live push over Socket.IO: rooms per task and for the dashboard.

A client sends ``subscribe`` with ``{"task": id}`` or ``{"dashboard": true}``; the
acknowledgement carries the current snapshot, later changes arrive as ``task`` events (per-task
room, every change) or ``tasks`` events (dashboard room, coalesced to one per push interval).
"""

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask_socketio import SocketIO, join_room, leave_room

from . import auth
from .taskjson import valid_id

DASHBOARD_ROOM = "dashboard"


def task_room(task_id: str) -> str:
    return f"task:{task_id}"


class Broadcaster:
    """Pushes task changes: at once to the task's room, coalesced to the dashboard room."""

    def __init__(self, socketio: SocketIO, interval: float = 0.1,
                 on_push: Callable[[str], None] = lambda event: None) -> None:
        self.socketio = socketio
        self.interval = interval
        self.on_push = on_push
        self._dirty: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def task_changed(self, data: dict[str, Any]) -> None:
        """Called by the monitor with the JSON of every task that changed."""
        self.socketio.emit("task", data, to=task_room(data["id"]))
        self.on_push("task")
        with self._lock:
            self._dirty[data["id"]] = data  # a newer change replaces an unsent one

    def monitor_status(self, connected: bool) -> None:
        """Tell dashboards whether the event stream is up, so a page can show an outage."""
        self.socketio.emit("monitor", {"connected": connected, "at": time.time()}, to=DASHBOARD_ROOM)

    def flush(self) -> int:
        """Send the pending dashboard changes as one ``tasks`` event; returns how many."""
        with self._lock:
            batch, self._dirty = list(self._dirty.values()), {}
        if batch:
            self.socketio.emit("tasks", batch, to=DASHBOARD_ROOM)
            self.on_push("tasks")
        return len(batch)

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Flush every ``interval`` seconds until ``stop()``."""
        while not self._stopping:
            sleep(self.interval)
            self.flush()

    def stop(self) -> None:
        self._stopping = True


def on_connect(auth_payload: Any = None) -> None:
    """Refuse a connection that has neither a valid token in its auth payload nor a session."""
    if auth.socket_role(auth_payload) is None:
        raise ConnectionRefusedError(
            'unauthorized: pass {"token": "<PULSE_TOKEN>"} as the auth payload, or log in'
        )
    current_app.extensions["pulse_metrics"].clients.inc()


def on_disconnect(reason: Any = None) -> None:
    current_app.extensions["pulse_metrics"].clients.dec()


def on_subscribe(data: Any = None) -> dict[str, Any]:
    """Join a task's room or the dashboard room; the acknowledgement is the snapshot."""
    if not isinstance(data, dict):
        return {"error": 'subscribe takes {"task": "<id>"} or {"dashboard": true}'}
    store = current_app.extensions["pulse_store"]
    if data.get("dashboard") is True:
        join_room(DASHBOARD_ROOM)
        return {"tasks": store.recent(current_app.config["SNAPSHOT_SIZE"])}
    task_id = data.get("task")
    if not valid_id(task_id):
        return {"error": f"invalid task id {str(task_id)[:100]!r}"}
    join_room(task_room(task_id))
    return {"task": store.describe(task_id)}


def on_unsubscribe(data: Any = None) -> dict[str, Any]:
    if isinstance(data, dict) and data.get("dashboard") is True:
        leave_room(DASHBOARD_ROOM)
    elif isinstance(data, dict) and valid_id(data.get("task")):
        leave_room(task_room(data["task"]))
    else:
        return {"error": 'unsubscribe takes {"task": "<id>"} or {"dashboard": true}'}
    return {"ok": True, "sid": request.sid}


def init_app(app: Flask, socketio: SocketIO) -> None:
    socketio.on_event("connect", on_connect)
    socketio.on_event("disconnect", on_disconnect)
    socketio.on_event("subscribe", on_subscribe)
    socketio.on_event("unsubscribe", on_unsubscribe)
