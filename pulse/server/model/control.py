"""Worker remote control: Celery's control commands to one worker, each within a bounded wait.

Reads (what a worker reports: its stats and pool, queues, registered tasks, active, reserved and
scheduled tasks, configuration) and the operator's commands (pool grow and shrink, autoscale,
pool restart, warm shutdown, add and cancel a consumer, rate and time limits) go to one worker by
name over a broker connection of their own (never the monitor's), and wait at most ``timeout``
seconds for its reply. Every answer says who answered and who did not. A command the worker's
pool cannot carry out is refused (409) before it is sent when the worker's own report says so, and
otherwise when the worker refuses it, with its reason. Every command goes to the audit log with
who sent it, the reason given and the outcome.
"""

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.app.utils import filter_hidden_settings
from kombu import Connection
from kombu.exceptions import OperationalError

from pulse.record.safejson import bounded_json, bounded_text
from pulse.server.ingest.monitor import Monitor
from pulse.server.model.actions import ActionError
from pulse.server.model.audit import AuditLog

TIMEOUT = 1.5  # seconds a call waits for the worker's reply (one round trip takes milliseconds)
MAX_NAME = 255
WORKER_NAME = re.compile(r"[A-Za-z0-9_.:+-]+@[A-Za-z0-9_.:+-]+", re.ASCII)
# Every report, in the order asked: stats first, since a worker that does not answer it is not
# asked the rest.
REPORTS = ("stats", "active_queues", "registered", "active", "reserved", "scheduled", "conf")
TASK_INFO = ("rate_limit", "time_limit", "soft_time_limit")  # shown with each registered task
# Registered tasks with their limits; active tasks' arguments as Celery's safe reprs (reserved
# and scheduled ones: as their messages carry them).
REPORT_ARGUMENTS = {"registered": {"taskinfoitems": list(TASK_INFO)}, "active": {"safe": True}}
TASK_INFO_ITEM = re.compile(r"(rate_limit|time_limit|soft_time_limit)=(\S+)")
REPORT_CHARS = 262_144  # one report, as JSON, at most
REPLY_CHARS = 1000  # one worker's answer to a command, as text, at most
# Celery's pool classes by module, as `celery worker --pool` names them.
POOL_KINDS = {"prefork": "prefork", "thread": "threads", "solo": "solo", "eventlet": "eventlet",
              "gevent": "gevent"}
RESIZABLE = frozenset({"prefork", "eventlet", "gevent"})  # pools with grow() and shrink()
RESTARTABLE = frozenset({"prefork"})  # the others accept a pool restart and do nothing
NO_ANSWER = object()
Answer = tuple[dict[str, Any], int]  # the JSON body and the HTTP status

OK, ERROR, REFUSED, SILENT, SENT = "ok", "error", "refused", "no answer", "sent"
STATUS = {OK: 200, SENT: 202, ERROR: 409, REFUSED: 409, SILENT: 504}


def valid_worker_name(name: Any) -> bool:
    """A Celery node name, ``name@host``: letters, digits, ``_ . : + -``, at most 255 characters."""
    return isinstance(name, str) and len(name) <= MAX_NAME and WORKER_NAME.fullmatch(name) is not None


def pool_kind(implementation: Any) -> str | None:
    """``celery.concurrency.prefork:TaskPool`` -> ``prefork``; a pool of another package stays as
    it is named; None when unknown."""
    if not isinstance(implementation, str) or not implementation:
        return None
    module = implementation.split(":", 1)[0]
    if module.startswith("celery.concurrency."):
        return POOL_KINDS.get(module.rsplit(".", 1)[1], implementation)
    return implementation


def pool_summary(stats: Any) -> dict[str, Any] | None:
    """The pool as a worker's ``stats`` describe it: kind, size, processes and autoscale range."""
    if not isinstance(stats, dict) or not isinstance(stats.get("pool"), dict):
        return None
    pool = stats["pool"]
    processes = pool.get("processes")
    processes = [pid for pid in processes if isinstance(pid, int)] if isinstance(processes, list) else None
    limit = pool.get("max-concurrency")
    limit = limit if isinstance(limit, int) else None
    threads = pool.get("threads")
    scaler = stats.get("autoscaler")
    autoscaler = None
    if isinstance(scaler, dict):
        autoscaler = {key: scaler.get(key) if isinstance(scaler.get(key), int) else None
                      for key in ("max", "min", "qty")}
    return {
        "kind": pool_kind(pool.get("implementation")),
        "implementation": bounded_text(pool.get("implementation"), 200),
        "max_concurrency": limit,
        # Processes for prefork (and solo: the worker itself), else the concurrency it was given.
        "size": len(processes) if processes is not None else limit,
        "processes": processes,
        "threads": threads if isinstance(threads, int) else None,
        "autoscaler": autoscaler,
    }


def registered_tasks(reply: Any) -> list[dict[str, Any]]:
    """Celery's ``"name [rate_limit=10/m time_limit=30.0]"`` lines as ``{"name", "rate_limit",
    "time_limit", "soft_time_limit"}`` (a limit that is not set: None)."""
    tasks = []
    for line in reply if isinstance(reply, list) else []:
        text = str(line)
        name, info = text, {}
        head, sep, tail = text.rpartition(" [")
        items = tail[:-1].split(" ") if sep and tail.endswith("]") else []
        if items and all(TASK_INFO_ITEM.fullmatch(item) for item in items):
            name, info = head, dict(item.split("=", 1) for item in items)
        tasks.append({"name": bounded_text(name, 1000), **{key: info.get(key) for key in TASK_INFO}})
    return tasks[:5000]


def _reply_text(reply: Any) -> str:
    if isinstance(reply, dict) and len(reply) == 1 and ("ok" in reply or "error" in reply):
        return bounded_text(next(iter(reply.values())), REPLY_CHARS) or ""
    return bounded_text(reply, REPLY_CHARS) or ""


def _action(command: str) -> str:
    """The audit log's name for a command: ``pool_grow`` -> ``worker-pool-grow``."""
    return "worker-" + command.replace("_", "-")


class WorkerControl:
    """Reports from, and commands to, the workers the monitor knows, over the app's broker."""

    def __init__(self, celery_app: Celery, monitor: Monitor, audit: AuditLog, timeout: float = TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.celery = celery_app
        self.monitor = monitor
        self.audit = audit
        self.timeout = timeout
        self.sleep = sleep

    # ---- which worker ---------------------------------------------------------------------------

    def check(self, name: str) -> None:
        """Raise ActionError: 400 for a name that is no Celery node name, 404 for a worker the
        monitor never heard from."""
        if not valid_worker_name(name):
            raise ActionError(400, "malformed worker name: use a Celery node name, name@host (letters, "
                                   "digits, '_', '.', ':', '+' or '-', at most 255 characters)")
        if name not in self.monitor.state.workers:
            raise ActionError(404, f"no worker named {name!r} has been seen by this server")

    def online(self, name: str) -> bool:
        worker = self.monitor.state.workers.get(name)
        return bool(worker and worker.alive)

    # ---- the broker -----------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A connection of this call's own: the replies are read on it, so no other user of a
        pooled connection (nor the monitor) can take them or be held by them."""
        conn = self.celery.connection_for_write(connect_timeout=self.timeout)
        try:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=self.timeout)
            yield conn
        except (OperationalError, *conn.connection_errors, OSError, TimeoutError) as exc:
            raise ActionError(503, f"the broker connection failed ({type(exc).__name__}): the command may "
                                   "not have reached the worker; retry when the broker is back") from exc
        finally:
            conn.release()

    @contextmanager
    def _connection_for(self, who: str, name: str, command: str, arguments: dict[str, Any],
                        reason: str) -> Iterator[Connection]:
        """``_connection`` for a command: a broker failure is written to the audit log too."""
        try:
            with self._connection() as conn:
                yield conn
        except ActionError as exc:
            self.audit.append(who, _action(command), name, reason=reason, arguments=arguments,
                              outcome="broker unreachable", error=str(exc), no_answer=[name], replies={})
            raise

    def _ask(self, conn: Connection, name: str, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send ``command`` to ``name`` alone and return its reply, or NO_ANSWER after the wait."""
        replies = self.celery.control.broadcast(command, arguments=arguments or {}, destination=[name],
                                                connection=conn, reply=True, timeout=self.timeout, limit=1)
        for reply in replies or []:
            if isinstance(reply, dict) and name in reply:
                return reply[name]
        return NO_ANSWER

    # ---- reads ----------------------------------------------------------------------------------

    def reports(self, name: str) -> Answer:
        """Everything ``name`` reports, each asked in turn; 504 when it does not answer."""
        self.check(name)
        reports: dict[str, Any] = dict.fromkeys(REPORTS)
        answered = False
        started = time.monotonic()
        with self._connection() as conn:
            for kind in REPORTS:
                reply = self._ask(conn, name, kind, REPORT_ARGUMENTS.get(kind))
                if reply is NO_ANSWER:
                    if kind == "stats":
                        break  # not answering: asking the rest would only wait as long again
                    continue
                answered = answered or kind == "stats"
                reports[kind] = self._clean(kind, reply)
        answer = {"worker": name, "online": self.online(name), "timeout": self.timeout,
                  "waited": round(time.monotonic() - started, 3),
                  "answered": [name] if answered else [], "no_answer": [] if answered else [name],
                  "pool": pool_summary(reports["stats"]), "reports": reports}
        if not answered:
            answer["error"] = f"worker {name} did not answer within {self.timeout} s"
            return answer, 504
        return answer, 200

    @staticmethod
    def _clean(kind: str, reply: Any) -> Any:
        if kind == "registered":
            return registered_tasks(reply)
        if kind == "conf" and isinstance(reply, dict):
            try:  # the worker censors it too; one of an older Celery may not
                reply = filter_hidden_settings(reply)
            except Exception:  # a value Celery's filter cannot read (a URL it cannot parse): hide all
                reply = dict.fromkeys(reply, "********")
        return bounded_json(reply, REPORT_CHARS)

    # ---- commands -------------------------------------------------------------------------------

    def _run(self, who: str, name: str, command: str, arguments: dict[str, Any], reason: str,
             refusal: Callable[[Connection], Any] | None = None) -> Answer:
        """Check, send, wait for the reply, write the audit entry, answer (body, HTTP status)."""
        self.check(name)
        replies: dict[str, Any] = {}
        error = None
        started = time.monotonic()
        with self._connection_for(who, name, command, arguments, reason) as conn:
            why = refusal(conn) if refusal else None
            if why is NO_ANSWER:
                outcome = SILENT
            elif why:
                outcome, error = REFUSED, why
            else:
                reply = self._ask(conn, name, command, arguments)
                outcome = SILENT if reply is NO_ANSWER else ERROR if self._refused(reply) else OK
                if reply is not NO_ANSWER:
                    replies[name] = bounded_json(reply, 4 * REPLY_CHARS)
                if outcome == ERROR:
                    error = f"worker {name} refused {command}: {_reply_text(reply)}"
        if outcome == SILENT:
            error = (f"worker {name} did not answer within {self.timeout} s; "
                     + ("the command was not sent" if why is NO_ANSWER else
                        "it may still carry the command out when it gets to it"))
        return self._answer(who, name, command, arguments, reason, outcome, replies, error, started)

    @staticmethod
    def _refused(reply: Any) -> bool:
        return not (isinstance(reply, dict) and "ok" in reply and "error" not in reply)

    def _answer(self, who: str, name: str, command: str, arguments: dict[str, Any], reason: str,
                outcome: str, replies: dict[str, Any], error: str | None, started: float,
                **extra: Any) -> Answer:
        answered = [name] if replies else []
        answer = {"worker": name, "command": command, "arguments": arguments, "reason": reason,
                  "outcome": outcome, "replies": replies, "answered": answered,
                  "no_answer": [] if answered else [name], "timeout": self.timeout,
                  "waited": round(time.monotonic() - started, 3), **extra}
        if error:
            answer["error"] = error
        self.audit.append(who, _action(command), name, reason=reason, arguments=arguments,
                          outcome=outcome, error=error, no_answer=answer["no_answer"],
                          replies={host: _reply_text(reply) for host, reply in replies.items()}, **extra)
        return answer, STATUS[outcome]

    def _pool(self, conn: Connection, name: str) -> Any:
        stats = self._ask(conn, name, "stats")
        return NO_ANSWER if stats is NO_ANSWER else pool_summary(stats) or {}

    def _resizable(self, name: str, shrink_by: int = 0) -> Callable[[Connection], Any]:
        def refusal(conn: Connection) -> Any:
            pool = self._pool(conn, name)
            if pool is NO_ANSWER:
                return NO_ANSWER
            kind, scaler = pool.get("kind"), pool.get("autoscaler")
            if scaler:
                return (f"worker {name} autoscales its pool ({scaler['min']}-{scaler['max']} processes): "
                        "change its autoscale range instead")
            if kind in POOL_KINDS.values() and kind not in RESIZABLE:
                return (f"worker {name} runs a {kind} pool, whose size is fixed when the worker starts: only "
                        "prefork, eventlet and gevent pools grow and shrink (restart the worker with another "
                        "--concurrency)")
            size = pool.get("size")
            if shrink_by and isinstance(size, int) and shrink_by >= size:
                plural = "es" if size != 1 else ""
                return (f"worker {name}'s pool has {size} process{plural}: shrinking it by {shrink_by} "
                        "would leave none to run tasks")
            return None
        return refusal

    def pool_grow(self, who: str, name: str, n: int, reason: str) -> Answer:
        return self._run(who, name, "pool_grow", {"n": n}, reason, self._resizable(name))

    def pool_shrink(self, who: str, name: str, n: int, reason: str) -> Answer:
        return self._run(who, name, "pool_shrink", {"n": n}, reason, self._resizable(name, shrink_by=n))

    def autoscale(self, who: str, name: str, most: int, least: int, reason: str) -> Answer:
        def refusal(conn: Connection) -> Any:
            pool = self._pool(conn, name)
            if pool is NO_ANSWER or pool.get("autoscaler"):
                return pool if pool is NO_ANSWER else None
            return (f"autoscale is off on worker {name}: start it with --autoscale=MAX,MIN to change its "
                    "range at run time (or grow and shrink its pool)")
        return self._run(who, name, "autoscale", {"max": most, "min": least}, reason, refusal)

    def pool_restart(self, who: str, name: str, reason: str) -> Answer:
        def refusal(conn: Connection) -> Any:
            pool = self._pool(conn, name)
            if pool is NO_ANSWER:
                return NO_ANSWER
            kind = pool.get("kind")
            if kind in POOL_KINDS.values() and kind not in RESTARTABLE:
                return f"worker {name} runs a {kind} pool, which cannot restart (only a prefork pool can)"
            conf = self._ask(conn, name, "conf")
            if conf is NO_ANSWER:
                return NO_ANSWER
            if isinstance(conf, dict) and not conf.get("worker_pool_restarts"):
                return (f"pool restarts are off on worker {name}: set worker_pool_restarts = True in its "
                        "Celery configuration and restart it")
            return None
        return self._run(who, name, "pool_restart", {}, reason, refusal)

    def add_consumer(self, who: str, name: str, queue: str, reason: str) -> Answer:
        return self._run(who, name, "add_consumer", {"queue": queue}, reason)

    def cancel_consumer(self, who: str, name: str, queue: str, reason: str) -> Answer:
        return self._run(who, name, "cancel_consumer", {"queue": queue}, reason)

    def rate_limit(self, who: str, name: str, task: str, rate: str, reason: str) -> Answer:
        return self._run(who, name, "rate_limit", {"task_name": task, "rate_limit": rate}, reason)

    def time_limit(self, who: str, name: str, task: str, soft: float | None, hard: float | None,
                   reason: str) -> Answer:
        return self._run(who, name, "time_limit", {"task_name": task, "soft": soft, "hard": hard}, reason)

    def shutdown(self, who: str, name: str, reason: str) -> Answer:
        """Warm shutdown: the worker finishes its running tasks, then exits. A worker never answers a
        shutdown (it stops instead), so it is pinged first and the command sent only if it answers;
        the answer says whether the monitor saw it go offline within the wait."""
        self.check(name)
        started = time.monotonic()
        replies: dict[str, Any] = {}
        with self._connection_for(who, name, "shutdown", {}, reason) as conn:
            pong = self._ask(conn, name, "ping")
            if pong is not NO_ANSWER:
                replies[name] = bounded_json(pong, REPLY_CHARS)
                self.celery.control.broadcast("shutdown", destination=[name], connection=conn, reply=False)
        if pong is NO_ANSWER:
            error = f"worker {name} did not answer a ping within {self.timeout} s; the shutdown was not sent"
            return self._answer(who, name, "shutdown", {}, reason, SILENT, {}, error, started)
        deadline = time.monotonic() + self.timeout
        while self.online(name) and time.monotonic() < deadline:
            self.sleep(0.1)
        return self._answer(who, name, "shutdown", {}, reason, SENT, replies, None, started,
                            offline=not self.online(name))
