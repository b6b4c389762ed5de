"""Judging a rule against the readings, and a rule's states: ok, pending, firing, unknown, disabled.

Pure functions of a rule, the readings (``readings.py``) and the previous state, so the whole
state machine is tested without a clock or a server. A change that must be told (a rule starts
or stops firing) comes back as a notice; everything else is only a new state.
"""

import secrets
from dataclasses import dataclass
from typing import Any

from pulse.record.statuses import FAILED, FINISHED, LOST
from pulse.server.alerts.rules import KINDS, condition_of

OK, PENDING, FIRING, UNKNOWN, DISABLED = "ok", "pending", "firing", "unknown", "disabled"
FIRING_NOTICE, RESOLVED_NOTICE, TEST_NOTICE = "firing", "resolved", "test"


@dataclass(frozen=True)
class Judgement:
    """``breached`` is None when the readings cannot tell (the broker cannot show a message's age,
    the event stream is down); ``value`` is the figure compared with the threshold."""

    breached: bool | None
    value: float | None
    detail: str


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def judge(rule: dict[str, Any], readings: Any) -> Judgement:
    """Whether the rule's condition holds now, with the figure and a sentence for the notice."""
    kind, threshold = rule["kind"], rule["threshold"]
    if kind in ("failure_rate", "failure_count", "task_lost"):
        counts = readings.outcomes(rule["task"], rule["window"])
        if counts is None:
            return Judgement(None, None, "the task counts cannot be read")
        failed, lost, finished = counts.get(FAILED, 0), counts.get(LOST, 0), counts.get(FINISHED, 0)
        subject = rule["task"] or "any task"
        over = f"in the last {_span(rule['window'])}"
        if kind == "task_lost":
            return Judgement(lost >= threshold, lost, f"{lost} {subject} task(s) lost {over}")
        # As the analytics count them: a failure rate is failed / (finished + failed); lost tasks
        # have their own kind of rule (task_lost), revoked ones are an operator's doing.
        if kind == "failure_count":
            return Judgement(failed >= threshold, failed, f"{failed} {subject} task(s) failed {over}")
        ended = failed + finished
        rate = failed / ended if ended else 0.0
        return Judgement(ended >= rule["min_count"] and rate >= threshold, rate,
                         f"{failed} of {ended} {subject} tasks failed {over} "
                         f"({rate:.0%}; fires at {threshold:.0%} of at least {rule['min_count']})")
    if kind == "no_worker":
        if not readings.monitor_connected:
            return Judgement(None, None, "the event stream is down, so workers cannot be seen")
        online = readings.workers_online
        return Judgement(online == 0, online, f"{online} worker(s) online")
    if kind == "queue_no_consumers":
        consumers = readings.consumers
        if consumers is None:
            return Judgement(None, None, "no worker answered the question of its queues yet")
        count = len(consumers.get(rule["queue"], []))
        return Judgement(count == 0, count, f"queue {rule['queue']} has {count} consumer(s)")
    if kind == "queue_age":
        age = readings.queue_age(rule["queue"])
        if age is None:
            return Judgement(None, None, f"the age of queue {rule['queue']}'s oldest message cannot be "
                                         "read (RabbitMQ cannot show a message without taking it)")
        waits = f"queue {rule['queue']}'s oldest message waits for {_age(age)}"
        return Judgement(age > threshold, age, waits)
    if kind == "long_running":
        age, task_id = readings.longest_running(rule["task"])
        subject = rule["task"] or "a task"
        if task_id is None:
            return Judgement(False, 0.0, f"no {subject} is running" if rule["task"] else "no task is running")
        return Judgement(age > threshold, age, f"{subject} ({task_id}) has been running for {_age(age)}")
    if kind == "periodic_missed":
        late = readings.periodic_late(rule["entry"])
        if late is None:
            return Judgement(None, None, f"no periodic entry named {rule['entry']}" if rule["entry"]
                             else "the beat schedule cannot be read")
        overdue, entry = late
        if entry is None or overdue == 0:
            on_time = f"periodic entry {entry} is on time" if entry else "no periodic entries"
            return Judgement(False, 0.0, on_time)
        return Judgement(overdue > threshold, overdue, f"periodic entry {entry} is {_age(overdue)} late")
    raise ValueError(f"unknown kind {kind!r}")  # parse_rule lets none through


def step(rule: dict[str, Any], judgement: Judgement | None, previous: dict[str, Any],
         now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rule's next state and the notices the change calls for (at most a resolved and a firing).

    A count kind fires as soon as its count over the window is breached; the others once the
    breach has lasted ``window`` seconds (pending until then). A state kept for another condition
    (the rule was edited or disabled) ends: resolved if it was firing."""
    notices: list[dict[str, Any]] = []
    condition = condition_of(rule)
    episode = previous.get("episode", 0)
    if previous.get("condition") not in (None, condition):
        if previous.get("state") == FIRING:
            notices.append(_notice(rule, RESOLVED_NOTICE, previous, now, "the rule was changed or disabled"))
        previous = {"state": OK, "since": None}
    base = {"condition": condition, "episode": episode, "evaluated_at": now}
    if not rule["enabled"] or judgement is None:
        return {**base, "state": DISABLED, "since": previous.get("since") if previous.get("state") == DISABLED
                else now, "value": None, "detail": "disabled"}, notices
    was = previous.get("state", OK)
    facts = {"value": judgement.value, "detail": judgement.detail}
    if judgement.breached is None:
        # Not knowing is not a recovery: a firing rule stays firing until a reading says otherwise.
        state = FIRING if was == FIRING else UNKNOWN
        since = previous.get("since") if was == state else now
        return {**previous, **base, "state": state, "since": since, **facts}, notices
    if not judgement.breached:
        if was == FIRING:
            notices.append(_notice(rule, RESOLVED_NOTICE, {**previous, **facts}, now, judgement.detail))
        since = previous.get("since") if was == OK else now
        return {**base, "state": OK, "since": since, **facts}, notices
    if was == FIRING:
        return {**previous, **base, "state": FIRING, **facts}, notices
    started = previous.get("since") if was == PENDING else now
    if KINDS[rule["kind"]].counts or now - started >= rule["window"]:
        state = {**base, "state": FIRING, "since": now, "fired_at": now, "episode": episode + 1, **facts}
        notices.append(_notice(rule, FIRING_NOTICE, state, now, judgement.detail))
        return state, notices
    return {**base, "state": PENDING, "since": started, **facts}, notices


def _notice(rule: dict[str, Any], status: str, state: dict[str, Any], now: float, detail: str,
            notice_id: str | None = None) -> dict[str, Any]:
    """What a webhook is told; ``id`` is the same for every target and every retry, so a receiver
    can drop a duplicate."""
    return {
        "id": notice_id or f"{rule['id']}:{state.get('episode', 0)}:{status}",
        "status": status,
        "rule": {field: rule.get(field) for field in
                 ("id", "name", "kind", "task", "queue", "entry", "threshold", "window")},
        "value": state.get("value"),
        "detail": detail,
        "fired_at": state.get("fired_at"),
        "resolved_at": now if status == RESOLVED_NOTICE else None,
        "at": now,
    }


def test_notice(rule: dict[str, Any], now: float) -> dict[str, Any]:
    """A notice an operator asks for to try the rule's webhooks: its own id each time."""
    return _notice(rule, TEST_NOTICE, {}, now, "a test notice: the webhook is reachable",
                   notice_id=f"{rule['id']}:test:{secrets.token_hex(4)}")
