"""The app's periodic tasks (its ``beat_schedule``) beside what actually ran, and "run now".

No beat process is needed: the schedule is read from the user's Celery app, the runs from the
registry. A run belongs to an entry by the entry's name where its message carried one (the
record's ``periodic_entry``: django-celery-beat's ``periodic_task_name`` header, or Pulse's own
run now), else by task name and arguments: Celery's own beat marks what it sends
(``celery_beat_task``) without naming the entry.
"""

import copy
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.beat import BeatLazyFunc
from celery.schedules import crontab, maybe_schedule, schedule, solar

from pulse.record.registry import Registry
from pulse.record.safejson import bounded_json, bounded_text
from pulse.record.statuses import UNSUCCESSFUL
from pulse.server.model.actions import ActionError
from pulse.server.model.audit import AuditLog
from pulse.server.model.listing import Listing
from pulse.server.model.taskjson import record_json, summary

NAME_LIMIT = 200
REASON_LIMIT = 500
RUNS_SHOWN = 5       # an entry's last runs, newest first
RUNS_SCANNED = 100   # the newest tasks of the entry's task name that are looked at for them
ENTRY_HEADER = "periodic_task_name"  # django-celery-beat's header; run now sends it too
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
UNITS = (("d", 86400), ("h", 3600), ("min", 60))


def valid_entry_name(name: Any) -> bool:
    """An entry name as the API takes it: 1-200 characters, none of them a control character."""
    return isinstance(name, str) and 0 < len(name) <= NAME_LIMIT and not CONTROL_CHARACTERS.search(name)


def _number(value: float) -> str:
    return f"{value:g}"


def interval_words(seconds: float) -> str:
    """``every 30 s``, ``every 5 min``, ``every 2 h``, ``every 1 d``: the largest whole unit."""
    for unit, size in UNITS:
        if seconds >= size and seconds % size == 0:
            return f"every {_number(seconds / size)} {unit}"
    return f"every {_number(seconds)} s"


def _cron_field(value: Any) -> str:
    if isinstance(value, str | int):
        return str(value)
    try:
        return ",".join(str(item) for item in sorted(value))
    except TypeError:
        return str(value)


def crontab_words(cron: crontab) -> str:
    """Each of the crontab's fields as it was given, in words, then the cron line itself."""
    minute, hour, day, month, weekday = (_cron_field(field) for field in (
        cron._orig_minute, cron._orig_hour, cron._orig_day_of_month, cron._orig_month_of_year,
        cron._orig_day_of_week))
    if minute == "*":
        words = ["every minute"] + ([] if hour == "*" else [f"of hour {hour}"])
    else:
        words = [f"at minute {minute}", "past every hour" if hour == "*" else f"past hour {hour}"]
    if day != "*":
        words.append(f"on day-of-month {day}")
    if month != "*":
        words.append(f"in month {month}")
    if weekday != "*":
        words.append(f"on day-of-week {weekday}")
    return f"crontab: {' '.join(words)} ({minute} {hour} {day} {month} {weekday})"


def schedule_words(sched: Any) -> str:
    """A schedule in words: an interval, a crontab's fields, a solar event, or the class's name."""
    if isinstance(sched, crontab):
        return crontab_words(sched)
    if isinstance(sched, solar):
        return f"solar: {sched.event} at latitude {sched.lat}, longitude {sched.lon}"
    if isinstance(sched, schedule):
        return interval_words(sched.run_every.total_seconds())
    return f"custom schedule: {type(sched).__name__}"


def next_run_at(sched: Any, celery_app: Celery, last_run_at: float | None, now: float) -> float | None:
    """When beat would send the entry next, counted from its last run (else from now, as a beat
    started now counts), in Unix seconds, never before ``now``; None when the schedule cannot say."""
    due = due_at(sched, celery_app, last_run_at, now)
    return None if due is None else max(now, due)


def due_at(sched: Any, celery_app: Celery, last_run_at: float | None, now: float) -> float | None:
    """When the entry's next run was due, counted as ``next_run_at`` counts, but possibly before
    ``now``: by how much is how late beat is."""
    clock = copy.copy(sched)
    for cached in ("tz", "utc_enabled"):  # cached from whatever app the schedule was built with
        clock.__dict__.pop(cached, None)
    clock.app = celery_app
    zone = celery_app.timezone
    moment = datetime.fromtimestamp(now, tz=zone)
    clock.nowfun = lambda: moment
    base = datetime.fromtimestamp(now if last_run_at is None else last_run_at, tz=zone)
    try:
        remaining = clock.remaining_estimate(base)
    except Exception:  # a solar schedule without its ephem library, a custom class
        return None
    if not isinstance(remaining, timedelta):
        return None
    return now + remaining.total_seconds()


def call_of(args: Any, kwargs: Any) -> dict[str, Any] | None:
    """Arguments as the registry's ``call`` holds them (JSON), or None when they are not JSON."""
    try:
        return json.loads(json.dumps({"args": list(args or ()), "kwargs": dict(kwargs or {})}))
    except (TypeError, ValueError):
        return None


def matched_by(record: dict[str, Any], entry: str, call: dict[str, Any] | None) -> str | None:
    """How a run of the entry's task belongs to ``entry``: ``"name"`` (its message named the
    entry), ``"arguments"`` (it named none, and its arguments are the entry's), or None."""
    mark = record.get("periodic_entry")
    if isinstance(mark, str):
        return "name" if mark == entry else None
    if call is not None and record.get("call") == call:
        return "arguments"
    return None


def _evaluated(value: Any) -> Any:
    return value() if isinstance(value, BeatLazyFunc) else value


class Schedule:
    """The periodic tasks of ``celery_app``, their runs from the registry, and run now."""

    def __init__(self, celery_app: Celery, registry: Registry, listing: Listing, audit: AuditLog,
                 send: Callable[..., str]) -> None:
        self.celery = celery_app
        self.registry = registry
        self.listing = listing
        self.audit = audit
        self.send = send  # Actions.send: 503 when the broker is unreachable

    def _specs(self) -> dict[str, Any]:
        return dict(self.celery.conf.beat_schedule or {})

    def entry_names(self) -> set[str]:
        return {str(name) for name in self._specs()}

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """Every entry with its schedule in words, arguments, last runs and next run."""
        now = time.time() if now is None else now
        specs = self._specs()
        tasks = {spec.get("task") for spec in specs.values() if isinstance(spec, Mapping)}
        runs = self._runs({task for task in tasks if isinstance(task, str) and task})
        entries = [self._entry(str(name), spec, runs, now) for name, spec in specs.items()]
        return {"entries": entries, "timezone": str(self.celery.timezone), "now": now}

    def _runs(self, tasks: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The newest records of each task name (at most RUNS_SCANNED each), newest first."""
        ids = {task: self.listing.page({"name": task}, RUNS_SCANNED).ids for task in sorted(tasks)}
        flat = [task_id for task_ids in ids.values() for task_id in task_ids]
        records = dict(zip(flat, self.registry.get_many(flat, points=lambda task_id: 2), strict=True))
        return {task: [records[i] for i in task_ids if records[i]] for task, task_ids in ids.items()}

    def _entry(self, name: str, spec: Any, runs: dict[str, list[dict]], now: float) -> dict[str, Any]:
        spec = spec if isinstance(spec, Mapping) else {}
        task = spec.get("task") if isinstance(spec.get("task"), str) else None
        try:
            sched = maybe_schedule(spec.get("schedule"), app=self.celery)
            words = schedule_words(sched) if sched is not None else "no schedule"
        except Exception as exc:  # the user's schedule object, as the server can read it
            sched, words = None, f"unreadable schedule: {type(exc).__name__}"
        args, kwargs = spec.get("args") or (), spec.get("kwargs") or {}
        call = call_of(args, kwargs)
        last_runs = []
        for record in runs.get(task or "", []):
            how = matched_by(record, name, call)
            if how is not None:
                last_runs.append({**summary(record_json(record)), "sent_at": record.get("sent_at"),
                                  "periodic_entry": record.get("periodic_entry"), "matched_by": how})
                if len(last_runs) == RUNS_SHOWN:
                    break
        last = last_runs[0] if last_runs else None
        last_at = (last.get("sent_at") or last.get("created_at")) if last else None
        due = due_at(sched, self.celery, last_at, now) if sched is not None else None
        return {
            "name": name, "task": task, "schedule": words,
            "args": bounded_json(list(args) if isinstance(args, list | tuple) else args),
            "kwargs": bounded_json(kwargs), "options": bounded_json(spec.get("options") or {}),
            "last_runs": last_runs, "last_run_at": last_at,
            "last_failed": bool(last and last["status"] in UNSUCCESSFUL),
            "next_run_at": None if due is None else max(now, due),
            "next_run_from": "last run" if last else "now",
            # Seconds the run after the last one is overdue (0 when on time or never run).
            "overdue": round(max(0.0, now - due), 1) if last and due is not None else 0.0,
        }

    def run_now(self, who: str, name: str, reason: str) -> str:
        """Send the entry's task with its arguments and options, marked with the entry's name;
        audited with the reason and the outcome. Returns the new task's id."""
        spec = self._specs().get(name)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("task"), str):
            raise ActionError(404, f"no periodic task named {name!r} in the app's beat_schedule")
        options = dict(spec.get("options") or {})
        headers = {**(options.pop("headers", None) or {}), ENTRY_HEADER: name}
        args = [_evaluated(value) for value in spec.get("args") or ()]
        kwargs = {key: _evaluated(value) for key, value in (spec.get("kwargs") or {}).items()}
        detail = {"entry": name, "name": spec["task"], "reason": reason, "run_now": True}
        try:
            task_id = self.send(spec["task"], args, kwargs, headers=headers, **options)
        except ActionError as exc:
            self.audit.append(who, "run-periodic", None, **detail, outcome="error", error=str(exc))
            raise
        except Exception as exc:  # options the app refuses, say: audited, then a 500 as before
            self.audit.append(who, "run-periodic", None, **detail, outcome="error",
                              error=bounded_text(repr(exc), 500))
            raise
        self.audit.append(who, "run-periodic", task_id, **detail, outcome="sent")
        return task_id
