"""Bulk actions by filter: revoke, terminate, replay, skip or forget every task a filter selects.

A bulk action is a job kept in Redis: the ids its filter selected when it was asked for (at most
the cap), the operator, the reason, counters, and an outcome per task. Any Pulse server runs it
(``upkeep/bulk_runner.py``) under a lease it renews, a batch at a time, so a job whose server
stops is resumed by the next server to look, from where it was. A task is acted on at most once:
its id enters the job's ``claimed`` set before the action, and an id claimed by a server that
stopped before recording the outcome is reported as ``uncertain``, never acted on again; across
jobs, the per-task claim of ``Actions`` and the status checks keep a second action off it.

The job is also a record in the registry (id ``bulk-<hex>``, name ``pulse.bulk.<action>``) whose
progress is the job's: the dashboard shows its live bar like any task's.
"""

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from celery import states

from pulse.agent.progress import progress_meta
from pulse.record.failures import failure_json
from pulse.record.registry import Registry, as_text
from pulse.record.statuses import ACTIVE, ENDED, FAILED, FINISHED, REVOKED, RUNNING, SCHEDULED, UNSUCCESSFUL
from pulse.server.model.actions import ActionError, Actions
from pulse.server.model.audit import AuditLog
from pulse.server.model.listing import MAX_LIMIT, Listing

log = logging.getLogger(__name__)

ACTIONS = ("revoke", "terminate", "replay", "skip", "forget")
# The statuses a task may be in for each action (replay also needs its JSON arguments).
ELIGIBLE = {"revoke": ACTIVE, "terminate": ACTIVE, "replay": frozenset(UNSUCCESSFUL),
            "skip": frozenset(UNSUCCESSFUL), "forget": ENDED}
SAMPLE = 20
BATCH = 50
LEASE = 15  # seconds; renewed after every batch
KEEP_JOBS = 200
JOB_ID_PREFIX = "bulk-"
REASON_LIMIT = 500
QUEUED, RUNNING_JOB, DONE, CANCELLED, STOPPED = "queued", "running", "finished", "cancelled", "failed"
ENDS = (DONE, CANCELLED, STOPPED)
COUNTERS = ("acted", "not_eligible", "errors", "uncertain")
COUNTER_OF = {"acted": "acted", "not eligible": "not_eligible", "error": "errors", "uncertain": "uncertain"}



def worker_tasks(registry: Registry, *fields: str, limit: int = 10_000) -> dict[str, list[Any]]:
    """The running tasks that workers run, with ``fields`` of each record: task id -> their values
    (oldest first, at most ``limit``). A bulk action's own record is running too, but no worker runs
    it: a server's lease does."""
    ids = [as_text(i) for i in registry.client.zrange(registry.keys.index("status", RUNNING), 0, limit - 1)]
    pipe = registry.client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(registry.key(task_id), "bulk_job", *fields)
    return {task_id: values for task_id, (bulk_job, *values) in zip(ids, pipe.execute(), strict=True)
            if not bulk_job}

class Bulk:
    """Selects, records and carries out bulk actions."""

    def __init__(self, registry: Registry, listing: Listing, actions: Actions, audit: AuditLog,
                 cap: int, on_changed: Callable[[list[str]], None] = lambda ids: None) -> None:
        self.registry = registry
        self.client = registry.client
        self.keys = registry.keys
        self.listing = listing
        self.actions = actions
        self.audit = audit
        self.cap = cap
        self.on_changed = on_changed

    # ---- selecting -----------------------------------------------------------------------------

    def select(self, filters: dict[str, Any], cap: int) -> tuple[list[str], bool]:
        """The ids ``filters`` select, oldest first, at most ``cap``; and whether more match."""
        ids: list[str] = []
        for page in self.listing.pages(filters, MAX_LIMIT, order="asc"):
            ids += page.ids
            if len(ids) > cap:
                return ids[:cap], True
        return ids, False

    def _cap(self, cap: Any) -> int:
        if cap is None:
            return self.cap
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= self.cap:
            raise ActionError(400, f"cap must be a whole number from 1 to {self.cap} (PULSE_BULK_CAP)")
        return cap

    def eligible(self, action: str, ids: list[str]) -> list[bool]:
        """Whether each task may take ``action`` now, by its record."""
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self.keys.task(task_id), "status", "bulk_job")
            pipe.hexists(self.keys.task(task_id), "call")
        replies = pipe.execute()
        allowed = ELIGIBLE[action]
        out = []
        for index in range(len(ids)):
            (status, bulk_job), has_call = replies[2 * index], replies[2 * index + 1]
            status = as_text(status) if status else None
            # A bulk action's own record is no Celery task: nothing to revoke (cancel it instead).
            revocable = not (bulk_job and action in ("revoke", "terminate"))
            out.append(status in allowed and revocable and (action != "replay" or bool(has_call)))
        return out

    def preview(self, action: str, filters: dict[str, Any], cap: Any = None) -> dict[str, Any]:
        """The dry run: how many tasks the filter selects (up to the cap), how many of them the
        action applies to now, and the first ids."""
        check_action(action)
        cap = self._cap(cap)
        ids, more = self.select(filters, cap)
        return {"action": action, "matched": len(ids), "more": more, "cap": cap,
                "eligible": sum(self.eligible(action, ids)), "sample": ids[:SAMPLE]}

    # ---- the jobs ------------------------------------------------------------------------------

    def start(self, who: str, action: str, filters: dict[str, Any], raw_filters: dict[str, Any],
              reason: Any, cap: Any = None) -> dict[str, Any]:
        """Record a bulk action for the runners; its job JSON. 409 when the filter selects more
        than the cap or nothing."""
        check_action(action)
        reason = check_reason(reason)
        cap = self._cap(cap)
        ids, more = self.select(filters, cap)
        if more:
            raise ActionError(409, f"the filter selects more than {cap} tasks (the cap): narrow it, or "
                                   "ask for a larger cap (at most PULSE_BULK_CAP)")
        if not ids:
            raise ActionError(409, "the filter selects no task: nothing to do")
        job_id = JOB_ID_PREFIX + secrets.token_hex(8)
        now = time.time()
        job = {"id": job_id, "action": action, "filters": json.dumps(raw_filters), "reason": reason,
               "who": who, "created_at": now, "total": len(ids), "status": QUEUED, "pos": 0,
               **dict.fromkeys(COUNTERS, 0)}
        pipe = self.client.pipeline()
        pipe.hset(self.keys.bulk(job_id), mapping=job)
        for start in range(0, len(ids), 1000):
            pipe.rpush(self.keys.bulk(job_id, "ids"), *ids[start:start + 1000])
        pipe.zadd(self.keys.bulk_jobs, {job_id: now})
        pipe.sadd(self.keys.bulk_open, job_id)
        pipe.execute()
        self.registry.write(job_id, SCHEDULED, fields={
            "name": f"pulse.bulk.{action}", "state": states.PENDING,
            "args": "()", "kwargs": repr({"filters": raw_filters, "reason": reason, "by": who}),
            "progress": progress_meta(0, len(ids), f"{action}: waiting for a server"), "bulk_job": True,
        }, fill={"sent_at": now})
        self.audit.append(who, "bulk", job_id, bulk_action=action, filters=raw_filters, count=len(ids),
                          reason=reason)
        self._trim()
        self.on_changed([job_id])
        return self.job(job_id)

    def _trim(self) -> None:
        """Keep the newest KEEP_JOBS jobs that ended."""
        old = [as_text(i) for i in self.client.zrange(self.keys.bulk_jobs, 0, -KEEP_JOBS - 1)]
        for job_id in old:
            if as_text(self.client.hget(self.keys.bulk(job_id), "status") or b"") in ENDS:
                self.client.delete(*(self.keys.bulk(job_id, part) for part in ("", "ids", "claimed",
                                                                               "outcomes", "lease")))
                self.client.zrem(self.keys.bulk_jobs, job_id)

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job JSON, or None for an unknown job."""
        raw = self.client.hgetall(self.keys.bulk(job_id))
        if not raw:
            return None
        data = {as_text(k): as_text(v) for k, v in raw.items()}
        owner = self.client.get(self.keys.bulk(job_id, "lease"))
        out = {
            "id": job_id, "action": data["action"], "filters": json.loads(data["filters"]),
            "reason": data["reason"], "who": data["who"], "status": data["status"],
            "created_at": float(data["created_at"]), "total": int(data["total"]), "done": int(data["pos"]),
            **{name: int(data.get(name, 0)) for name in COUNTERS},
            "started_at": float(data["started_at"]) if data.get("started_at") else None,
            "ended_at": float(data["ended_at"]) if data.get("ended_at") else None,
            "error": data.get("error") or None, "resumed": int(data.get("resumed", 0)),
            "server": as_text(owner) if owner else None, "url": f"/tasks/{job_id}",
        }
        out["percent"] = round(100.0 * out["done"] / out["total"], 1) if out["total"] else 100.0
        # Running with no server holding it: its server stopped; the next one to look resumes it.
        out["interrupted"] = out["status"] == RUNNING_JOB and owner is None
        return out

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        ids = [as_text(i) for i in self.client.zrevrange(self.keys.bulk_jobs, 0, limit - 1)]
        return [job for job in map(self.job, ids) if job is not None]

    def outcomes(self, job_id: str, limit: int = 1000) -> dict[str, str]:
        """Each acted-on task's outcome (``acted``, ``not eligible: ...``, ``error: ...``,
        ``uncertain: ...``), at most ``limit`` of them."""
        out: dict[str, str] = {}
        for key, value in self.client.hscan_iter(self.keys.bulk(job_id, "outcomes"), count=500):
            out[as_text(key)] = as_text(value)
            if len(out) >= limit:
                break
        return out

    def cancel(self, who: str, job_id: str, reason: Any) -> dict[str, Any]:
        reason = check_reason(reason)
        job = self.job(job_id)
        if job is None:
            raise ActionError(404, f"no bulk action with id {job_id!r}")
        if job["status"] in ENDS:
            raise ActionError(409, f"bulk action {job_id} has already {job['status']}")
        self.client.hset(self.keys.bulk(job_id), "cancel", "1")
        if job["status"] == QUEUED or job["interrupted"]:  # no server is on it: end it here
            self._end(job_id, CANCELLED, None)
        self.audit.append(who, "bulk-cancel", job_id, reason=reason)
        return self.job(job_id) or job

    # ---- running (for upkeep/bulk_runner.py) ---------------------------------------------------

    def runnable(self) -> list[str]:
        """Jobs waiting for a server: queued, or running without a lease (their server stopped)."""
        out = []
        for job_id in sorted(as_text(i) for i in self.client.smembers(self.keys.bulk_open)):
            status = as_text(self.client.hget(self.keys.bulk(job_id), "status") or b"")
            orphaned = status == RUNNING_JOB and not self.client.exists(self.keys.bulk(job_id, "lease"))
            if status == QUEUED or orphaned:
                out.append(job_id)
            elif status not in (QUEUED, RUNNING_JOB):  # ended (or dropped): no longer open
                self.client.srem(self.keys.bulk_open, job_id)
        return out

    def claim(self, job_id: str, owner: str) -> bool:
        return bool(self.client.set(self.keys.bulk(job_id, "lease"), owner, nx=True, ex=LEASE))

    def _renew(self, job_id: str, owner: str) -> bool:
        """Extend the lease if this server still holds it."""
        key = self.keys.bulk(job_id, "lease")
        with self.client.pipeline() as pipe:
            pipe.watch(key)
            if as_text(pipe.get(key) or b"") != owner:
                return False
            pipe.multi()
            pipe.expire(key, LEASE)
            pipe.execute()
        return True

    def work(self, job_id: str, owner: str, pause: Callable[[], None] = lambda: None) -> str:
        """Carry out a claimed job, a batch at a time, until it ends or the lease is lost; its status."""
        key = self.keys.bulk(job_id)
        data = {as_text(k): as_text(v) for k, v in self.client.hgetall(key).items()}
        if data.get("status") in ENDS:
            return data["status"]
        if data.get("cancel"):
            return self._end(job_id, CANCELLED, None)
        if data["status"] == RUNNING_JOB:
            self._settle_uncertain(job_id)
        else:
            self.client.hset(key, mapping={"status": RUNNING_JOB, "started_at": time.time()})
        action, who = data["action"], f"{data['who']} (bulk {job_id})"
        total = int(data["total"])
        while True:
            pos = int(self.client.hget(key, "pos") or 0)
            if self.client.hget(key, "cancel"):
                return self._end(job_id, CANCELLED, None)
            if pos >= total:
                return self._end(job_id, DONE, None)
            ids_key = self.keys.bulk(job_id, "ids")
            batch = [as_text(i) for i in self.client.lrange(ids_key, pos, pos + BATCH - 1)]
            try:
                changed = self._act(job_id, action, who, batch)
            except ActionError as exc:  # the broker is unreachable: stop, honestly, where it stands
                return self._end(job_id, STOPPED, str(exc))
            self.client.hset(key, "pos", pos + len(batch))
            self._progress(job_id, action, pos + len(batch), total)
            self.on_changed([job_id, *changed])
            if not self._renew(job_id, owner):
                return RUNNING_JOB  # another server holds it now
            pause()

    def _act(self, job_id: str, action: str, who: str, batch: list[str]) -> list[str]:
        """Act on one batch; returns the tasks that changed. Each task is claimed in the job just
        before it is acted on and its outcome recorded just after, so a server that stops leaves
        at most the task it was on (a revoke: the batch's broadcast) without an outcome. Raises
        ActionError(503) when the broker is unreachable."""
        allowed = dict(zip(batch, self.eligible(action, batch), strict=True))
        if action in ("revoke", "terminate"):
            return self._revoke(job_id, who, batch, allowed, action == "terminate")
        changed: list[str] = []
        for task_id in batch:
            if not self._claim_in_job(job_id, [task_id]):
                continue  # acted on (or left uncertain) before this job was resumed
            if not allowed[task_id]:
                self._record(job_id, {task_id: f"not eligible: {self._why_not(action, task_id)}"})
                continue
            try:
                result = self._one(action, who, task_id)
            except ActionError as exc:
                if exc.status == 503:
                    self._record(job_id, {task_id: f"error: {exc}"})
                    raise
                self._record(job_id, {task_id: f"not eligible: {exc}"})
                continue
            except Exception as exc:  # one task's trouble must not stop the others
                log.warning("pulse: bulk %s of %s failed: %r", action, task_id, exc)
                self._record(job_id, {task_id: f"error: {type(exc).__name__}"})
                continue
            new_task = result.get("new_task")
            self._record(job_id, {task_id: f"acted: replayed as {new_task}" if new_task else "acted"})
            changed += [task_id, *([new_task] if new_task else [])]
        return changed

    def _claim_in_job(self, job_id: str, task_ids: list[str]) -> list[str]:
        """Add ``task_ids`` to the job's claimed set; those that were not in it yet."""
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.sadd(self.keys.bulk(job_id, "claimed"), task_id)
        return [task_id for task_id, added in zip(task_ids, pipe.execute(), strict=True) if added]

    def _one(self, action: str, who: str, task_id: str) -> dict[str, Any]:
        if action == "replay":
            return self.actions.replay(who, task_id, quiet=True)
        if not self.actions.claim(task_id):
            raise ActionError(409, "another action is on it")
        try:
            if action == "skip":
                return self.actions.skip(who, task_id, quiet=True)
            return self.actions.forget(who, task_id, quiet=True)
        finally:
            self.actions.release(task_id)

    def _revoke(self, job_id: str, who: str, batch: list[str], allowed: dict[str, bool],
                terminate: bool) -> list[str]:
        """One broadcast for the batch (Celery's revoke takes a list), after claiming each task."""
        fresh = self._claim_in_job(job_id, batch)
        outcomes = {task_id: f"not eligible: {self._why_not('revoke', task_id)}"
                    for task_id in fresh if not allowed[task_id]}
        mine = []
        for task_id in (task_id for task_id in fresh if allowed[task_id]):
            if self.actions.claim(task_id):
                mine.append(task_id)
            else:
                outcomes[task_id] = "not eligible: another action is on it"
        self._record(job_id, outcomes)
        if not mine:
            return []
        try:
            self.actions.celery.control.revoke(mine, terminate=terminate, signal="SIGTERM")
        except Exception as exc:
            for task_id in mine:
                self.actions.release(task_id)
            self._record(job_id, dict.fromkeys(mine, f"error: {type(exc).__name__}"))
            why = type(exc).__name__
            raise ActionError(503, f"the broker is unreachable, revoke not sent: {why}") from exc
        now = time.time()
        pipe = self.registry.pipeline()
        for task_id in mine:
            self.registry.write(task_id, fields={"revoke_requested_at": now, "revoke_terminate": terminate},
                                client=pipe)
        self.registry.execute(pipe)
        for task_id in mine:
            self.actions.release(task_id)
        self._record(job_id, dict.fromkeys(mine, "acted"))
        return mine

    def _why_not(self, action: str, task_id: str) -> str:
        status, bulk_job = (as_text(v) if v else None for v in self.client.hmget(self.keys.task(task_id),
                                                                                 "status", "bulk_job"))
        status = status or "gone"
        if bulk_job and action in ("revoke", "terminate"):
            return "it is a bulk action (cancel it instead)"
        if action == "replay" and status in UNSUCCESSFUL:
            return "its arguments were not kept"
        return f"it is {status}"

    def _record(self, job_id: str, outcomes: dict[str, str]) -> None:
        if not outcomes:
            return
        counts = dict.fromkeys(COUNTERS, 0)
        for outcome in outcomes.values():
            counts[COUNTER_OF.get(outcome.split(":", 1)[0], "uncertain")] += 1
        pipe = self.client.pipeline()
        pipe.hset(self.keys.bulk(job_id, "outcomes"), mapping=outcomes)
        for name, count in counts.items():
            if count:
                pipe.hincrby(self.keys.bulk(job_id), name, count)
        pipe.execute()

    def _settle_uncertain(self, job_id: str) -> None:
        """On resuming: ids claimed by the server that stopped, with no outcome, are uncertain."""
        claimed = {as_text(i) for i in self.client.smembers(self.keys.bulk(job_id, "claimed"))}
        known = {as_text(i) for i in self.client.hkeys(self.keys.bulk(job_id, "outcomes"))}
        lost = sorted(claimed - known)
        self._record(job_id, dict.fromkeys(lost, "uncertain: its server stopped while acting on it"))
        self.client.hincrby(self.keys.bulk(job_id), "resumed", 1)

    def _progress(self, job_id: str, action: str, done: int, total: int) -> None:
        job = self.job(job_id) or {}
        message = f"{action}: {job.get('acted', 0)} acted, {job.get('not_eligible', 0)} not eligible, " \
                  f"{job.get('errors', 0)} errors"
        self.registry.write(job_id, RUNNING, fields={"state": "PROGRESS", "progress": progress_meta(
            done, total, message)}, fill={"started_at": job.get("started_at") or time.time()},
            point=(time.time(), done))

    def _end(self, job_id: str, status: str, error: str | None) -> str:
        key = self.keys.bulk(job_id)
        now = time.time()
        self.client.hset(key, mapping={"status": status, "ended_at": now, "error": error or ""})
        self.client.delete(self.keys.bulk(job_id, "lease"))
        self.client.srem(self.keys.bulk_open, job_id)
        job = self.job(job_id) or {}
        counts = {name: job.get(name, 0) for name in COUNTERS}
        if status == DONE:
            total = job.get("total")
            self.registry.write(job_id, FINISHED, fields={
                "state": states.SUCCESS, "result": counts, "finished_at": now,
                "progress": progress_meta(total, total, "done")})
        elif status == CANCELLED:
            self.registry.write(job_id, REVOKED, fields={
                "state": states.REVOKED, "revoke_reason": "cancelled", "finished_at": now})
        else:
            self.registry.write(job_id, FAILED, fields={
                "state": states.FAILURE, "finished_at": now,
                "failure": failure_json("BulkActionStopped", error or "", None, counts)})
        self.audit.append(job.get("who", "?"), "bulk-end", job_id, status=status, error=error, **counts)
        self.on_changed([job_id])
        return status


def check_action(action: Any) -> None:
    if action not in ACTIONS:
        raise ActionError(400, f"action must be one of {', '.join(ACTIONS)}")


def check_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ActionError(400, "a reason is required: say why, for the audit log")
    if len(reason) > REASON_LIMIT:
        raise ActionError(400, f"the reason is at most {REASON_LIMIT} characters")
    return reason.strip()
