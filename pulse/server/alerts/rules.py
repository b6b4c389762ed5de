"""Alert rules: what each kind of condition takes, the checks a rule passes, and their Redis store.

A rule is JSON kept in one hash (``alert-rules``), so every server reads the same rules and an
edit is one write. Its evaluation state lives apart (``alert-states``, written only by the server that
holds the alerting lease), so an edit never races an evaluation for the same value.
"""

import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from pulse.record.keys import Keys
from pulse.server.model.actions import ActionError

RULE_ID = re.compile(r"alert-[0-9a-f]{12}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_RULES = 200
MAX_WEBHOOKS = 5
NAME_LIMIT = 100
TARGET_LIMIT = 255  # a task name, queue or periodic entry
URL_LIMIT = 2000
DAY, WEEK = 86_400, 7 * 86_400
FORMATS = ("json", "slack")
FIELDS = {"name", "kind", "task", "queue", "entry", "threshold", "window", "min_count", "webhooks", "enabled"}


@dataclass(frozen=True)
class Kind:
    """What a kind of rule takes. ``counts`` kinds judge the last ``window`` seconds; the others
    judge the present and fire once it has held for ``window`` seconds (Prometheus's ``for``)."""

    text: str
    target: str | None  # the field naming what the rule watches: task, queue, entry, or none
    required: bool  # whether that field must be given (else: any task or entry)
    threshold: tuple[float, float] | None  # its allowed range; None: the kind takes none
    whole: bool  # whether the threshold is a whole number
    default: float | None  # the threshold when none is given
    counts: bool
    unit: str  # what the threshold measures, for messages


KINDS = {
    "failure_rate": Kind("failure rate of a task name over the window", "task", True, (0.0, 1.0), False,
                         None, True, "fraction of finished tasks that failed"),
    "failure_count": Kind("failures of a task name over the window", "task", True, (1, 1_000_000), True,
                          None, True, "failures"),
    "task_lost": Kind("tasks lost over the window", "task", False, (1, 1_000_000), True, 1, True,
                      "lost tasks"),
    "no_worker": Kind("no worker online", None, False, None, False, None, False, ""),
    "queue_no_consumers": Kind("a queue without consumers", "queue", True, None, False, None, False, ""),
    "queue_age": Kind("a queue's oldest message older than the threshold", "queue", True, (1, WEEK), True,
                      None, False, "seconds"),
    "long_running": Kind("a task running longer than the threshold", "task", False, (1, 30 * DAY), True,
                         None, False, "seconds"),
    "periodic_missed": Kind("a periodic task that missed its run by more than the threshold", "entry",
                            False, (0, WEEK), True, 60, False, "seconds"),
}
COUNT_WINDOW = (60, DAY)  # the analytics keep a day of minutes
HOLD_WINDOW = (0, WEEK)
MIN_COUNT_DEFAULT = 5


def _text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or CONTROL.search(value):
        raise ActionError(400, f'"{field}" must be 1-{limit} characters with no control characters')
    return value


def _number(value: Any, field: str, low: float, high: float, whole: bool) -> float | int:
    # bool is an int in Python: true must not pass for a threshold of 1
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ActionError(400, f'"{field}" must be a number')
    if whole and math.isfinite(value) and value != int(value):
        raise ActionError(400, f'"{field}" must be a whole number')
    if not low <= value <= high or (field == "threshold" and low == 0.0 and high == 1.0 and value == 0):
        bounds = "above 0 and at most 1" if (low, high) == (0.0, 1.0) else f"{low:g} to {high:g}"
        raise ActionError(400, f'"{field}" must be {bounds}, not {value:g}')
    return int(value) if whole else float(value)


def webhook(value: Any, index: int) -> dict[str, str]:
    """One delivery target: an http(s) URL and the body's format."""
    if not isinstance(value, dict) or set(value) - {"url", "format"}:
        raise ActionError(400, f'webhooks[{index}] must be {{"url": "https://...", '
                               '"format": "json" or "slack"}')
    url = value.get("url")
    if not isinstance(url, str) or len(url) > URL_LIMIT or CONTROL.search(url) or " " in url:
        raise ActionError(400, f"webhooks[{index}].url must be an http(s) URL of at most {URL_LIMIT} "
                               "characters")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok, parts = False, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ActionError(400, f"webhooks[{index}].url must be an http(s) URL with a host")
    fmt = value.get("format", "json")
    if fmt not in FORMATS:
        raise ActionError(400, f'webhooks[{index}].format must be "json" (plain) or "slack"')
    return {"url": url, "format": fmt}


def parse_rule(body: Any) -> dict[str, Any]:
    """A rule from the API's JSON, checked whole: unknown fields, kinds and out-of-range values are
    refused with a message naming them, never dropped or clamped."""
    if not isinstance(body, dict):
        raise ActionError(400, 'send a JSON object: {"name", "kind", "threshold", "window", "webhooks", ...}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ActionError(400, f"unknown field(s) {', '.join(map(repr, unknown))[:300]}; "
                               f"a rule takes {', '.join(sorted(FIELDS))}")
    kind_name = body.get("kind")
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise ActionError(400, f'"kind" must be one of {", ".join(KINDS)}')
    rule: dict[str, Any] = {"name": _text(body.get("name"), "name", NAME_LIMIT), "kind": kind_name,
                            "task": None, "queue": None, "entry": None}
    for field in ("task", "queue", "entry"):
        if field != kind.target and body.get(field) is not None:
            raise ActionError(400, f'a {kind_name} rule takes no "{field}"')
    if kind.target is not None:
        value = body.get(kind.target)
        if value is None and kind.required:
            raise ActionError(400, f'a {kind_name} rule needs "{kind.target}"')
        rule[kind.target] = None if value is None else _text(value, kind.target, TARGET_LIMIT)
    if kind.threshold is None:
        if body.get("threshold") is not None:
            raise ActionError(400, f'a {kind_name} rule takes no "threshold"')
        rule["threshold"] = None
    else:
        raw = body.get("threshold", kind.default)
        if raw is None:
            raise ActionError(400, f'a {kind_name} rule needs "threshold" ({kind.unit})')
        rule["threshold"] = _number(raw, "threshold", *kind.threshold, kind.whole)
    low, high = COUNT_WINDOW if kind.counts else HOLD_WINDOW
    if body.get("window") is None and kind.counts:
        raise ActionError(400, f'a {kind_name} rule needs "window": the seconds it counts over '
                               f'({low}-{high})')
    rule["window"] = _number(body.get("window", 0), "window", low, high, True)
    if kind_name == "failure_rate":
        rule["min_count"] = _number(body.get("min_count", MIN_COUNT_DEFAULT), "min_count", 1, 1_000_000, True)
    elif body.get("min_count") is not None:
        raise ActionError(400, 'only a failure_rate rule takes "min_count"')
    else:
        rule["min_count"] = None  # every field set, so a replaced rule keeps nothing of its old kind
    hooks = body.get("webhooks", [])
    if not isinstance(hooks, list) or len(hooks) > MAX_WEBHOOKS:
        raise ActionError(400, f'"webhooks" must be a list of at most {MAX_WEBHOOKS} targets')
    rule["webhooks"] = [webhook(hook, i) for i, hook in enumerate(hooks)]
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ActionError(400, '"enabled" must be true or false')
    rule["enabled"] = enabled
    return rule


def masked(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule as a viewer sees it: a webhook URL often is its own secret (Slack's are), so only
    its scheme and host are shown."""
    hooks = [{"url": f"{urlsplit(h['url']).scheme}://{urlsplit(h['url']).hostname}/…", "format": h["format"]}
             for h in rule["webhooks"]]
    return {**rule, "webhooks": hooks}


def valid_rule_id(rule_id: str) -> str:
    if not RULE_ID.fullmatch(rule_id):
        raise ActionError(400, "malformed alert rule id: it looks like alert-<12 hex digits>")
    return rule_id


class Rules:
    """The rules in Redis: create, replace, delete, read."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def all(self) -> list[dict[str, Any]]:
        rules = [json.loads(raw) for raw in self.client.hvals(self.keys.alert_rules)]
        return sorted(rules, key=lambda rule: (rule["created_at"], rule["id"]))

    def get(self, rule_id: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.keys.alert_rules, rule_id)
        return json.loads(raw) if raw else None

    def create(self, who: str, rule: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        stored = {"id": f"alert-{secrets.token_hex(6)}", **rule, "created_at": now, "updated_at": now,
                  "created_by": who}
        # HSETNX under a count check in one script would be exact; the cap is a bound on an
        # operator's mistakes, so a rule over it from two operators at once is harmless.
        if self.client.hlen(self.keys.alert_rules) >= MAX_RULES:
            raise ActionError(409, f"at most {MAX_RULES} alert rules: delete one first")
        self.client.hset(self.keys.alert_rules, stored["id"], json.dumps(stored))
        return stored

    def replace(self, rule_id: str, rule: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Replace a rule's settings; returns (old, new). The evaluator resolves a firing state
        kept for a condition the rule no longer has (``condition_of``)."""
        old = self.get(rule_id)
        if old is None:
            raise ActionError(404, f"no alert rule with id {rule_id!r}")
        new = {**old, **rule, "updated_at": time.time()}
        self.client.hset(self.keys.alert_rules, rule_id, json.dumps(new))
        return old, new

    def delete(self, rule_id: str) -> dict[str, Any]:
        old = self.get(rule_id)
        if old is None:
            raise ActionError(404, f"no alert rule with id {rule_id!r}")
        self.client.hdel(self.keys.alert_rules, rule_id)
        return old

    def states(self, rule_ids: list[str]) -> list[dict[str, Any]]:
        """Each rule's evaluation state (``ok`` for one not yet evaluated)."""
        if not rule_ids:
            return []
        raws = self.client.hmget(self.keys.alert_states, rule_ids)
        return [json.loads(raw) if raw else {"state": "ok", "since": None} for raw in raws]

    def firing(self) -> int:
        """How many rules fire now."""
        states = self.client.hvals(self.keys.alert_states)
        return sum(1 for raw in states if json.loads(raw).get("state") == "firing")

    def save_states(self, pipe: Any, states: dict[str, dict[str, Any]]) -> None:
        """Write the evaluated states on ``pipe`` (with the notices they call for)."""
        if states:
            pipe.hset(self.keys.alert_states, mapping={k: json.dumps(v) for k, v in states.items()})

    def drop_orphan_states(self) -> None:
        """Drop the states of deleted rules: the evaluator read the rules before a delete, so it may
        have written a state for one."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hkeys(self.keys.alert_states)
        pipe.hkeys(self.keys.alert_rules)
        stored, rules = pipe.execute()
        orphans = set(stored) - set(rules)
        if orphans:
            self.client.hdel(self.keys.alert_states, *orphans)


def condition_of(rule: dict[str, Any]) -> str:
    """What a rule judges, as a fingerprint: a state kept for another condition is not this one's."""
    fields = ("kind", "task", "queue", "entry", "threshold", "window", "min_count", "enabled")
    return json.dumps([rule.get(field) for field in fields])
