"""Operator actions on tasks: launch (with goals), revoke, replay, skip and forget.

Each checks the task's meta-status atomically in the registry (the Lua ``expect``), answers an
``ActionError`` with HTTP status 409 when the status forbids it, and is written to the audit log.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from pulse.record.registry import as_text
from pulse.record.statuses import ABANDONED, ENDED, EXPIRED, GOAL_KEEPS, REPLAYED, SKIPPED, UNSUCCESSFUL
from pulse.server.model.audit import AuditLog
from pulse.server.model.store import TaskStore

SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGUSR1")
ACTING_FOR = 60  # seconds a claim to act on a task lasts (it is released when the action ends)


log = logging.getLogger(__name__)


class ActionError(Exception):
    """An action that cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Actions:
    """The operator's verbs, shared by the REST API and (later) the pages."""

    def __init__(self, store: TaskStore, celery_app: Celery, audit: AuditLog,
                 on_change: Callable[[dict[str, Any]], None] = lambda data: None) -> None:
        self.store = store
        self.registry = store.registry
        self.celery = celery_app
        self.audit = audit
        self.on_change = on_change

    def _changed(self, task_id: str) -> dict[str, Any]:
        data = self.store.describe(task_id)
        self.on_change(data)
        return data

    def _done(self, who: str, action: str, task_id: str, quiet: bool, **detail: Any) -> dict[str, Any]:
        """The end of an action: audited and announced, unless ``quiet`` (a bulk action audits
        itself once and announces its tasks a batch at a time)."""
        if quiet:
            return {"id": task_id, **detail}
        self.audit.append(who, action, task_id, **detail)
        return self._changed(task_id)

    def claim(self, task_id: str, seconds: int = ACTING_FOR) -> bool:
        """Take the right to act on ``task_id`` for a while; False when another action holds it.

        Two operators (or bulk actions) replaying one failed task at once would otherwise both
        send it: the status check comes after the send. The status change ends the question
        for good, so the claim only has to outlive one action.
        """
        return bool(self.registry.client.set(self.registry.keys.acting(task_id), "1", nx=True, ex=seconds))

    def release(self, task_id: str) -> None:
        self.registry.client.delete(self.registry.keys.acting(task_id))

    def _existing(self, task_id: str) -> dict[str, Any]:
        task = self.store.describe(task_id)
        if task["status"] == "unknown":
            raise ActionError(404, f"no task with id {task_id!r} has been seen")
        return task

    def _send(self, name: str, args: list, kwargs: dict, **options: Any) -> str:
        try:
            return self.celery.send_task(name, args=args, kwargs=kwargs, **options).id
        except (OperationalError, OSError) as exc:  # Celery's own publish retries are spent
            raise ActionError(503, f"the broker is unreachable, task not sent: {type(exc).__name__}") from exc
        except Exception as exc:
            # After the broker restarted, a pooled connection can still hold the channel that
            # broke (kombu then fails inside the publish, e.g. AttributeError on its closed
            # connection): send once more on a connection of its own, leaving the pool alone
            # (closing it broke every other user of it).
            log.warning("pulse: publishing %s failed (%r); retrying on a new connection", name, exc)
        try:
            with self.celery.connection_for_write() as connection:
                producer = self.celery.amqp.Producer(connection)
                return self.celery.send_task(name, args=args, kwargs=kwargs, producer=producer,
                                             **options).id
        except Exception as exc:
            raise ActionError(503, f"the broker connection failed, task not sent: "
                                   f"{type(exc).__name__}") from exc

    def send(self, name: str, args: list, kwargs: dict, **options: Any) -> str:
        """Publish a task through the app; its id, or ActionError 503 when the broker is unreachable."""
        return self._send(name, args, kwargs, **options)

    def launch(self, who: str, name: str, args: list, kwargs: dict, goal: str | None = None,
               force: bool = False) -> tuple[bool, dict[str, Any]]:
        """Start a task; with a ``goal`` whose task is alive or finished, return that one instead.

        Returns (started, task JSON).
        """
        if goal is None:
            task_id = self._send(name, args, kwargs)
            self.audit.append(who, "launch", task_id, name=name)
            return True, self.store.describe(task_id)
        lock = self.registry.client.lock(self.registry.keys.goal_lock(goal), timeout=10,
                                         blocking_timeout=10)
        if not lock.acquire():
            raise ActionError(409, f"goal {goal!r} is being launched by another request; retry")
        try:
            current = self.goal(goal)
            if current is not None and current["status"] in GOAL_KEEPS and not force:
                return False, current
            task_id = self._send(name, args, kwargs)
            self.registry.write(task_id, fill={"goal": goal})
            self.registry.client.set(self.registry.keys.goal(goal), task_id)
            self.audit.append(who, "launch", task_id, name=name, goal=goal, force=force,
                              previous=current["id"] if current else None)
            return True, self.store.describe(task_id)
        finally:
            lock.release()

    def _follow_goal(self, goal: str, old_id: str, new_id: str) -> None:
        """A replay takes over its goal, so launching the goal again finds the rerun."""
        key = self.registry.keys.goal(goal)
        self.registry.write(new_id, fill={"goal": goal})
        with self.registry.client.pipeline() as pipe:  # only if the goal still names the old task
            try:
                pipe.watch(key)
                if as_text(pipe.get(key)) == old_id:
                    pipe.multi()
                    pipe.set(key, new_id)
                    pipe.execute()
            except redis.WatchError:
                pass  # relaunched meanwhile: that launch is the goal's task now

    def goal(self, goal: str) -> dict[str, Any] | None:
        """The goal's current task, or None if the goal was never launched."""
        task_id = self.registry.client.get(self.registry.keys.goal(goal))
        if task_id is None:
            return None
        return self.store.describe(as_text(task_id))

    def revoke(self, who: str, task_id: str, terminate: bool = False, signal: str = "SIGTERM",
               quiet: bool = False) -> dict:
        if signal not in SIGNALS:
            raise ActionError(400, f"signal must be one of {', '.join(SIGNALS)}")
        task = self._existing(task_id)
        if self.registry.client.hget(self.registry.key(task_id), "bulk_job"):
            raise ActionError(409, f"{task_id} is a bulk action, not a Celery task: stop it with "
                                   f"POST /api/bulk/{task_id}/cancel")
        if not task["can_revoke"]:
            raise ActionError(409, f"task {task_id} is {task['status']}: only unstarted, scheduled, "
                                   "running or retrying tasks can be revoked")
        self.celery.control.revoke(task_id, terminate=terminate, signal=signal)
        # The workers confirm with a task-revoked event; until then the record says it was asked.
        self.registry.write(task_id, fields={"revoke_requested_at": time.time(),
                                             "revoke_terminate": terminate})
        return self._done(who, "revoke", task_id, quiet, terminate=terminate, signal=signal)

    def replay(self, who: str, task_id: str, quiet: bool = False) -> dict:
        if not self.claim(task_id):
            raise ActionError(409, f"task {task_id} is being acted on by another request; retry")
        try:
            return self._replay(who, task_id, quiet)
        finally:
            self.release(task_id)

    def _replay(self, who: str, task_id: str, quiet: bool) -> dict:
        task = self._existing(task_id)
        record = self.registry.get(task_id) or {}
        if not task["can_replay"]:
            why = "its arguments were not kept" if task["status"] in UNSUCCESSFUL else \
                f"it is {task['status']}"
            raise ActionError(409, f"task {task_id} cannot be replayed: {why} (failed or lost tasks "
                                   "with JSON arguments can)")
        call = record["call"]
        new_id = self._send(task["name"], call["args"], call["kwargs"], queue=task["queue"] or None)
        self.registry.write(new_id, fill={"replay_of": task_id})
        code, _ = self.registry.write(task_id, REPLAYED, fields={"replayed_by": new_id},
                                      expect=list(UNSUCCESSFUL))
        if code != 1:  # skipped meanwhile (a skip takes no claim): take ours back
            self.celery.control.revoke(new_id)
            raise ActionError(409, f"task {task_id} was replayed or skipped meanwhile")
        if record.get("goal"):
            self._follow_goal(record["goal"], task_id, new_id)
        if quiet:
            return {"id": task_id, "new_task": new_id}
        self.audit.append(who, "replay", task_id, new_task=new_id)
        self._changed(new_id)
        return self._changed(task_id)

    def skip(self, who: str, task_id: str, quiet: bool = False) -> dict:
        task = self._existing(task_id)
        code, _ = self.registry.write(task_id, SKIPPED, fields={"skipped_at": time.time()},
                                      expect=list(UNSUCCESSFUL))
        if code != 1:
            raise ActionError(409, f"task {task_id} is {task['status']}: only failed or lost tasks can "
                                   "be skipped")
        return self._done(who, "skip", task_id, quiet)

    def forget(self, who: str, task_id: str, purge: bool = False, quiet: bool = False) -> dict:
        task = self._existing(task_id)
        if task["status"] not in ENDED:
            raise ActionError(409, f"task {task_id} is {task['status']}: revoke it or let it end first")
        self.celery.AsyncResult(task_id).forget()
        if purge:
            if not quiet:
                self.audit.append(who, "purge", task_id)
            self.registry.prune(purge=[task_id])
            return {**task, "status": "unknown", "purged": True}
        if task["status"] not in (EXPIRED, ABANDONED):
            self.registry.write(task_id, EXPIRED, fields={"forgotten_at": time.time()},
                                expect=[task["status"]])
        return self._done(who, "forget", task_id, quiet)
