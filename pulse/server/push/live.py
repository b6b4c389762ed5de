"""Live push over Socket.IO: rooms per task and for the dashboard.

A client sends ``subscribe`` with ``{"task": id}`` or ``{"dashboard": true}``; the
acknowledgement carries the current snapshot, later changes arrive as ``task`` events (per-task
room, every change) or ``tasks`` events (dashboard room, coalesced to one per push interval).
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request, session
from flask_socketio import SocketIO, emit, join_room, leave_room
from redis import RedisError
from socketio import PubSubManager

from pulse.agent.tokens import Grant, TokenError
from pulse.server.http import auth, grants
from pulse.server.http.embed import own_origin
from pulse.server.http.throttle import Throttled
from pulse.server.model.groups import describe_unit, units_of
from pulse.server.model.taskjson import public_view, summary, valid_id
from pulse.server.push.packets import MALFORMED
from pulse.server.push.transport import TransportGuard
from pulse.server.upkeep.periodic import Periodic

log = logging.getLogger(__name__)

DASHBOARD_ROOM = "dashboard"


def task_room(task_id: str) -> str:
    return f"task:{task_id}"


def public_room(task_id: str, can_cancel: bool = False) -> str:
    return f"{'ctask' if can_cancel else 'ptask'}:{task_id}"


def unit_room(unit_id: str, public: bool) -> str:
    return f"{'pgroup' if public else 'group'}:{unit_id}"


class Broadcaster(Periodic):
    """Pushes changes: a task's at once to its room; to the dashboard room, coalesced, the
    changed tasks (every ``interval``), and the counts and changed workers (at most once a second)."""

    failure = "dashboard push failed"  # Redis down while reading counts: the next flush retries

    def __init__(self, socketio: SocketIO, interval: float = 0.1,
                 on_push: Callable[[str], None] = lambda event: None,
                 counts: Callable[[], dict] | None = None,
                 workers: Callable[[list[str]], list[dict]] | None = None,
                 unit: Callable[[str, bool], dict | None] | None = None,
                 summary_interval: float = 1.0) -> None:
        self.socketio = socketio
        self.interval = interval
        self.on_push = on_push
        self.counts = counts
        self.workers = workers
        self.unit = unit
        self._dirty_units: set[str] = set()
        self.summary_interval = summary_interval
        self._dirty: dict[str, dict[str, Any]] = {}
        self._dirty_workers: set[str] = set()
        self._counts_dirty = False
        self._next_summary = 0.0
        self._lock = threading.Lock()

    def watched(self, room: str) -> bool:
        """Whether any client is in ``room``: an emit to an empty room still builds and encodes
        its packet, and with hundreds of tasks reporting that was most of the push's work."""
        manager = self.socketio.server.manager
        if isinstance(manager, PubSubManager):  # members may be on other servers: assume some
            return True
        return bool(manager.rooms.get("/", {}).get(room))

    def task_changed(self, data: dict[str, Any]) -> None:
        """Called with the JSON of every task that changed."""
        task_id = data["id"]
        sent = False
        if self.watched(task_room(task_id)):
            self.socketio.emit("task", data, to=task_room(task_id))
            sent = True
        # Token holders get the public view; those allowed to cancel are told they may.
        for can_cancel in (False, True):
            if self.watched(public_room(task_id, can_cancel)):
                self.socketio.emit("task", public_view(data, can_cancel=can_cancel),
                                   to=public_room(task_id, can_cancel))
                sent = True
        if sent:
            self.on_push("task")
        dashboard = self.watched(DASHBOARD_ROOM)
        with self._lock:
            self._dirty_units.update(units_of(data))
            if dashboard:  # else nobody to tell: a dashboard that opens reads a fresh snapshot
                self._dirty[data["id"]] = summary(data)  # a newer change replaces an unsent one
            self._counts_dirty = True
            if data.get("worker"):
                self._dirty_workers.add(data["worker"])  # its active tasks changed

    def task_log(self, event: dict[str, Any]) -> None:
        """A batch of a task's log lines (a ``task-log`` event) to its page: the operator's and
        viewers' room, and the per-task tokens' rooms when the task exposes its logs."""
        task_id = event["uuid"]
        packet = log_packet(event)
        if packet is None:
            return
        rooms = [task_room(task_id)]
        if event.get("exposed") is True:
            rooms += [public_room(task_id, False), public_room(task_id, True)]
        for room in rooms:
            if self.watched(room):
                self.socketio.emit("log", packet, to=room)
                self.on_push("log")

    def worker_changed(self, hostname: str) -> None:
        """Called for every worker event (heartbeats, online, offline)."""
        with self._lock:
            self._dirty_workers.add(hostname)

    def monitor_status(self, connected: bool) -> None:
        """Tell every client whether the event stream is up: each page shows an outage, and
        resyncs when it ends (nothing was pushed meanwhile). Rare, so no room is worth keeping."""
        self.socketio.emit("monitor", monitor_packet(connected))

    def flush(self, now: float | None = None) -> int:
        """Send what changed to the dashboard room; returns how many tasks went out."""
        now = time.monotonic() if now is None else now
        with self._lock:
            batch, self._dirty = list(self._dirty.values()), {}
            units, self._dirty_units = self._dirty_units, set()
            summary_due = now >= self._next_summary
            counts_due = summary_due and self._counts_dirty and self.counts is not None
            hosts = sorted(self._dirty_workers) if summary_due and self.workers is not None else []
            if summary_due:
                self._next_summary = now + self.summary_interval
                self._counts_dirty = self._counts_dirty and not counts_due
                self._dirty_workers -= set(hosts)
        if not self.watched(DASHBOARD_ROOM):
            # Nobody to tell: whoever subscribes later gets the current state in its snapshot.
            batch, counts_due, hosts = [], False, []
        if batch:
            self.socketio.emit("tasks", batch, to=DASHBOARD_ROOM)
            self.on_push("tasks")
        for unit_id in units if self.unit is not None else ():
            for public in (False, True):
                if not self.watched(unit_room(unit_id, public)):
                    continue
                data = self.unit(unit_id, public)
                if data is not None:
                    self.socketio.emit("group", data, to=unit_room(unit_id, public))
        if counts_due:
            self.socketio.emit("counts", self.counts(), to=DASHBOARD_ROOM)
            self.on_push("counts")
        if hosts:
            self.socketio.emit("workers", [lean_worker(w) for w in self.workers(hosts)], to=DASHBOARD_ROOM)
            self.on_push("workers")
        return len(batch)

    def step(self) -> int:
        return self.flush()


def log_packet(event: dict[str, Any]) -> dict[str, Any] | None:
    """``{"id", "first", "last", "lines"}`` of a ``task-log`` event, ``lines`` numbered (or None:
    too many to carry, read them from the API); None for an event that is not one."""
    first, last, lines = event.get("first"), event.get("last"), event.get("lines")
    if not (isinstance(first, int) and isinstance(last, int) and 0 < first <= last):
        return None
    if isinstance(lines, list) and len(lines) == last - first + 1 and all(isinstance(x, dict) for x in lines):
        numbered = [{**line, "seq": first + index} for index, line in enumerate(lines)]
    else:
        numbered = None
    return {"id": event["uuid"], "first": first, "last": last, "lines": numbered}


def monitor_packet(connected: bool) -> dict[str, Any]:
    return {"connected": connected, "at": time.time()}


def lean_worker(worker: dict[str, Any]) -> dict[str, Any]:
    """A worker as the dashboard room gets it: its running tasks as summaries, like ``tasks``
    batches (a busy worker's tasks with their whole progress histories ran to hundreds of KiB)."""
    active = worker.get("active_tasks")
    if not active:
        return worker
    return {**worker, "active_tasks": [summary(task) if task else task for task in active]}


def on_connect(auth_payload: Any = None) -> None:
    """Accept the operator or viewer (token or session), or a per-task token; refuse the rest.

    A connection from another origin (an embedding page) must use a per-task token, and a session
    cookie is believed only on a handshake that carried this server's own Origin: a browser sends
    Origin on every websocket handshake and every fetch, so one without came from a ``<script>``
    tag (which any same-site page can point here, cookie and all) or from a non-browser client.
    """
    token = auth_payload.get("token") if isinstance(auth_payload, dict) else None
    origin = request.headers.get("Origin")
    own = origin == own_origin(request.environ)
    if origin and not own and token is None:
        raise ConnectionRefusedError("connections from another origin need a per-task token")
    if token is None and not own:
        raise ConnectionRefusedError('unauthorized: pass {"token": "<PULSE_TOKEN>"} as the auth payload '
                                     "(a login session counts only on connections from Pulse's own pages)")
    grant = None
    try:
        if token is None:
            role = auth.session_role()
        else:
            role = auth.role_for_token(token)
            if role is None:
                grant = grants.check(token)  # counts the check, failed or not
            else:
                auth.count_check(failed=False)
    except (TokenError, Throttled) as exc:
        raise ConnectionRefusedError(str(exc)) from None
    if origin and not own and grant is None:
        raise ConnectionRefusedError("connections from another origin need a per-task token")
    if role is None and grant is None:
        raise ConnectionRefusedError(
            'unauthorized: pass {"token": "<PULSE_TOKEN>"} as the auth payload, or log in'
        )
    # Flask-SocketIO keeps a session per connection, in memory: the token stays with this socket,
    # and every subscribe checks it again (it may have expired or been revoked since).
    session["pulse_token"] = token if grant is not None else None
    # A token that lapses later, or a session that ends, ends the connection (pulse.lapses).
    if grant is not None:
        current_app.extensions["pulse_lapses"].watch(request.sid, grant)
    elif token is None:
        current_app.extensions["pulse_lapses"].watch_session(
            request.sid, current_app.extensions["pulse_sessions"].key(session["sid"]))
    current_app.extensions["pulse_metrics"].clients.inc()
    if not current_app.extensions["pulse_monitor"].connected:  # a page opened during an outage
        emit("monitor", monitor_packet(False))


def _grant() -> Grant | None:
    """This connection's per-task grant, checked again now; raises TokenError if it lapsed."""
    token = session.get("pulse_token")
    return grants.check(token, counted=False) if token else None  # counted when it connected


def on_disconnect(reason: Any = None) -> None:
    current_app.extensions["pulse_lapses"].forget(request.sid)
    current_app.extensions["pulse_metrics"].clients.dec()


def on_subscribe(data: Any = None) -> dict[str, Any]:
    """Join a task's, a group's or the dashboard room; the acknowledgement is the snapshot."""
    if not isinstance(data, dict):
        return {"error": 'subscribe takes {"task": "<id>"}, {"group": "<id>"} or {"dashboard": true}'}
    store = current_app.extensions["pulse_store"]
    try:
        grant = _grant()
    except TokenError as exc:
        return {"error": str(exc)}
    if data.get("dashboard") is True:
        if grant is not None:
            return {"error": "a per-task token cannot watch the dashboard"}
        join_room(DASHBOARD_ROOM)
        return {"tasks": [summary(t) for t in store.recent(current_app.config["SNAPSHOT_SIZE"])]}
    if "group" in data:
        return _subscribe_group(store, grant, data["group"])
    task_id = data.get("task")
    if not valid_id(task_id):
        return {"error": f"invalid task id {str(task_id)[:100]!r}"}
    if grant is None:
        join_room(task_room(task_id))
        return {"task": store.describe(task_id)}
    if not grants.covers_task(store.registry, grant, task_id):
        return {"error": "this token does not grant that task"}
    join_room(public_room(task_id, grant.cancel))
    return {"task": public_view(store.describe(task_id), can_cancel=grant.cancel)}


def _subscribe_group(store, grant: Grant | None, group_id: Any) -> dict[str, Any]:
    if not valid_id(group_id):
        return {"error": f"invalid group id {str(group_id)[:100]!r}"}
    if grant is not None and grant.group_id != group_id:
        return {"error": "this token does not grant that group"}
    public = grant is not None
    unit = describe_unit(store, group_id, public_view if public else (lambda task: task))
    if unit is None:
        return {"error": f"no group or chain with id {group_id!r} has been seen"}
    join_room(unit_room(group_id, public))
    return {"group": unit}


def on_unsubscribe(data: Any = None) -> dict[str, Any]:
    """Leave what ``subscribe`` joined; a token holder's rooms are the public ones."""
    if isinstance(data, dict) and data.get("dashboard") is True:
        rooms = [DASHBOARD_ROOM]
    elif isinstance(data, dict) and valid_id(data.get("task")):
        task_id = data["task"]
        rooms = [task_room(task_id), public_room(task_id), public_room(task_id, can_cancel=True)]
    elif isinstance(data, dict) and valid_id(data.get("group")):
        rooms = [unit_room(data["group"], public=False), unit_room(data["group"], public=True)]
    else:
        return {"error": 'unsubscribe takes {"task": "<id>"}, {"group": "<id>"} or {"dashboard": true}'}
    for room in rooms:
        leave_room(room)
    return {"ok": True, "sid": request.sid}


def without_compression(wsgi_app: Callable) -> Callable:
    """Decline websocket compression (permessage-deflate), which browsers always offer.

    With it the server compresses every push once per client, each connection keeping its own
    compressor (a quarter of a MiB): with a thousand dashboards open that was most of the
    server's CPU and most of its memory. Socket.IO's own (Node) server declines it by default.
    """

    def serve(environ: dict, start_response: Callable) -> Any:
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return wsgi_app(environ, start_response)

    return serve


def on_malformed(reason: Any = None) -> dict[str, str]:
    """A packet ``SafePacket`` refused; acknowledged when it carried an ack id."""
    log.info("pulse: refused a Socket.IO packet from %s: %s", request.sid, reason)
    return {"error": f"refused: {reason}"}


def on_unknown(event: str, *args: Any) -> dict[str, str]:
    log.info("pulse: unknown Socket.IO event %.100r from %s", event, request.sid)
    return {"error": f"unknown event {event[:100]!r}: Pulse handles subscribe and unsubscribe"}


def on_error(exc: Exception) -> dict[str, str]:
    """Any other failure of a handler: the client gets an error acknowledgement."""
    event = request.event["message"]
    if isinstance(exc, RedisError):  # an outage, not a bug: no traceback
        log.warning("pulse: Socket.IO %s failed, Redis is unreachable: %r", event, exc)
    else:
        log.exception("pulse: Socket.IO %s handler failed", event)
    if event == "connect":  # Flask-SocketIO would take a returned value as consent
        raise ConnectionRefusedError("the server could not check these credentials; try again")
    return {"error": f"the server could not handle {event} ({type(exc).__name__}); try again"}


def one_argument(event: str, handler: Callable[[Any], dict]) -> Callable[..., dict]:
    """``handler``, answering a call with extra arguments with an error instead of a TypeError."""

    def handle(*args: Any) -> dict:
        if len(args) > 1:
            return {"error": f"{event} takes one argument, not {len(args)}"}
        return handler(*args)

    return handle


def init_app(app: Flask, socketio: SocketIO) -> None:
    socketio.on_event("connect", on_connect)
    socketio.on_event("disconnect", on_disconnect)
    socketio.on_event("subscribe", one_argument("subscribe", on_subscribe))
    socketio.on_event("unsubscribe", one_argument("unsubscribe", on_unsubscribe))
    socketio.on_event(MALFORMED, on_malformed)
    socketio.on_event("*", on_unknown)
    socketio.on_error_default(on_error)
    metrics = app.extensions["pulse_metrics"]
    TransportGuard(socketio.server.eio, app.config["CLIENT_QUEUE"], on_stalled=metrics.stalled.inc).install()
