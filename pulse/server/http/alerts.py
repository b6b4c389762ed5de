"""The HTTP API of alert rules: list with their states, create, replace, delete, test, history.

Reading needs a viewer; every change needs the operator and lands in the audit log. A viewer sees
webhook URLs cut to their host: a Slack webhook's path is its secret.
"""

import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Flask, request

from pulse.record.registry import as_text
from pulse.server.alerts.conditions import test_notice
from pulse.server.alerts.rules import KINDS, masked, parse_rule, valid_rule_id
from pulse.server.http.api import ext
from pulse.server.http.auth import OPERATOR, actor, api_access, caller_role
from pulse.server.model.actions import ActionError

bp = Blueprint("alerts", __name__)
HISTORY_DEFAULT, HISTORY_MOST = 50, 200


def _shown(rule: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {**(rule if caller_role() == OPERATOR else masked(rule)), "state": state}


def _rule(rule_id: str) -> dict[str, Any]:
    rule = ext("pulse_alert_rules").get(valid_rule_id(rule_id))
    if rule is None:
        raise ActionError(404, f"no alert rule with id {rule_id!r}")
    return rule


def _warnings(rule: dict[str, Any]) -> list[str]:
    """Names Pulse has never seen: kept (the task may not be deployed yet), but said."""
    registry = ext("pulse_registry")
    warnings = []
    if rule["task"] is not None and not registry.client.sismember(registry.keys.names, rule["task"]):
        warnings.append(f"no task named {rule['task']!r} has been recorded yet")
    if rule["queue"] is not None and not registry.client.sismember(registry.keys.queues, rule["queue"]):
        warnings.append(f"no task has been sent to a queue named {rule['queue']!r} yet")
    if rule["entry"] is not None and rule["entry"] not in ext("pulse_schedule").entry_names():
        warnings.append(f"the beat schedule has no entry named {rule['entry']!r}")
    return warnings


@bp.get("/api/alerts")
@api_access
def rules() -> dict[str, Any]:
    """Every rule with its state, the kinds of condition, and which server alerts."""
    store = ext("pulse_alert_rules")
    found = store.all()
    states = store.states([rule["id"] for rule in found])
    leader = ext("pulse_registry").client.get(ext("pulse_registry").keys.alert_lease)
    return {"rules": [_shown(rule, state) for rule, state in zip(found, states, strict=True)],
            "kinds": {name: asdict(kind) for name, kind in KINDS.items()},
            "evaluated_by": as_text(leader) if leader else None,
            "pending_deliveries": ext("pulse_alert_outbox").pending(), "now": time.time()}


@bp.post("/api/alerts")
@api_access
def create() -> Any:
    rule = parse_rule(request.get_json(silent=True))
    stored = ext("pulse_alert_rules").create(actor(), rule)
    ext("pulse_audit").append(actor(), "alert-create", None, rule=stored["id"], name=stored["name"],
                              kind=stored["kind"])
    return {**stored, "warnings": _warnings(stored)}, 201, {"Location": f"/api/alerts/{stored['id']}"}


@bp.get("/api/alerts/<rule_id>")
@api_access
def rule(rule_id: str) -> dict[str, Any]:
    found = _rule(rule_id)
    [state] = ext("pulse_alert_rules").states([found["id"]])
    return _shown(found, state)


@bp.put("/api/alerts/<rule_id>")
@api_access
def replace(rule_id: str) -> dict[str, Any]:
    valid_rule_id(rule_id)
    rule = parse_rule(request.get_json(silent=True))
    old, new = ext("pulse_alert_rules").replace(rule_id, rule)
    changed = sorted(field for field in rule if old.get(field) != new.get(field))
    ext("pulse_audit").append(actor(), "alert-update", None, rule=rule_id, name=new["name"], changed=changed)
    return {**new, "warnings": _warnings(new)}


@bp.delete("/api/alerts/<rule_id>")
@api_access
def delete(rule_id: str) -> dict[str, Any]:
    old = ext("pulse_alert_rules").delete(valid_rule_id(rule_id))
    ext("pulse_alert_outbox").forget(rule_id)
    ext("pulse_audit").append(actor(), "alert-delete", None, rule=rule_id, name=old["name"], kind=old["kind"])
    return {"deleted": rule_id}


@bp.post("/api/alerts/<rule_id>/test")
@api_access
def test(rule_id: str) -> Any:
    """Send a test notice to the rule's webhooks now (through the outbox, retried like the rest)."""
    found = _rule(rule_id)
    if not found["webhooks"]:
        raise ActionError(409, "this rule has no webhooks to test")
    notice = test_notice(found, time.time())
    outbox = ext("pulse_alert_outbox")
    pipe = ext("pulse_registry").client.pipeline()
    outbox.post(pipe, found, notice)
    pipe.execute()
    ext("pulse_audit").append(actor(), "alert-test", None, rule=rule_id, notice=notice["id"])
    return {"notice": notice["id"], "webhooks": len(found["webhooks"])}, 202


@bp.get("/api/alerts/<rule_id>/history")
@api_access
def history(rule_id: str) -> dict[str, Any]:
    """The rule's notices and delivery attempts, newest first."""
    _rule(rule_id)
    raw = request.args.get("limit", str(HISTORY_DEFAULT))
    if not raw.isdigit() or not 1 <= int(raw) <= HISTORY_MOST:
        raise ActionError(400, f"limit must be a whole number from 1 to {HISTORY_MOST}")
    return {"id": rule_id, "history": ext("pulse_alert_outbox").history(rule_id, int(raw))}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)  # its ActionError answers come from commands' handler
