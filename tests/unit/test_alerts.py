"""Alert rules: their checks, the state machine, the outbox's retries against a real local receiver,
the API's rights and audit, and one server at a time alerting."""

import json
import time
from types import SimpleNamespace

import pytest

from pulse.server.alerts import webhooks
from pulse.server.alerts.conditions import DISABLED, FIRING, OK, PENDING, UNKNOWN, Judgement, judge, step
from pulse.server.alerts.outbox import ATTEMPTS, Outbox, backoff
from pulse.server.alerts.rules import Rules, parse_rule
from pulse.server.model.actions import ActionError
from pulse.server.upkeep.alerting import Alerting
from tests.conftest import demo_server
from tests.webhook_receiver import Receiver

from ..conftest import TOKEN, wait_until

VIEWER = "viewer-token-0123456789abcdef"
HOOK = "https://hooks.slack.test/services/T000/B000/SECRETSECRET"


def rule(**fields):
    body = {"name": "r", "kind": "no_worker", "window": 0, **fields}
    return {"id": "alert-000000000001", **parse_rule(body)}


def readings(**figures):
    base = {"monitor_connected": True, "workers_online": 1, "consumers": {"celery": ["w1"]},
            "outcomes": lambda name, window: {}, "queue_age": lambda queue: 0.0,
            "longest_running": lambda name: (0.0, None), "periodic_late": lambda entry: (0.0, None)}
    return SimpleNamespace(**{**base, **figures})


# -- The checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"name": "a", "kind": "failure_rate", "task": "t", "threshold": 0.5, "window": 300},
    {"name": "a", "kind": "failure_count", "task": "t", "threshold": 3, "window": 60},
    {"name": "a", "kind": "task_lost", "window": 3600},
    {"name": "a", "kind": "no_worker", "window": 30},
    {"name": "a", "kind": "queue_no_consumers", "queue": "q", "window": 0},
    {"name": "a", "kind": "queue_age", "queue": "q", "threshold": 60},
    {"name": "a", "kind": "long_running", "threshold": 600, "webhooks": [{"url": HOOK, "format": "slack"}]},
    {"name": "a", "kind": "periodic_missed", "entry": "nightly", "threshold": 0},
])
def test_every_kind_takes_a_well_formed_rule(body):
    parsed = parse_rule(body)
    assert parsed["kind"] == body["kind"] and parsed["enabled"] is True
    assert parsed["window"] == body.get("window", 0)


@pytest.mark.parametrize(("body", "said"), [
    ("not an object", "JSON object"),
    ({"name": "a", "kind": "nope", "window": 60}, '"kind" must be one of'),
    ({"name": "a", "kind": "no_worker", "windw": 60}, "unknown field(s) 'windw'"),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": 3}, 'needs "window"'),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": 3, "window": 10}, "60 to 86400"),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": 3, "window": 10**12}, "60 to 86400"),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": 3, "window": float("inf")}, "60 to"),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": 3, "window": float("nan")}, "a number"),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": True, "window": 60}, "a number"),
    ({"name": "a", "kind": "failure_count", "task": "t", "threshold": 2.5, "window": 60}, "whole number"),
    ({"name": "a", "kind": "failure_count", "threshold": 3, "window": 60}, 'needs "task"'),
    ({"name": "a", "kind": "failure_rate", "task": "t", "threshold": 0, "window": 60}, "above 0"),
    ({"name": "a", "kind": "failure_rate", "task": "t", "threshold": 1.5, "window": 60}, "above 0"),
    ({"name": "a", "kind": "no_worker", "window": -1}, "0 to 604800"),
    ({"name": "a", "kind": "no_worker", "threshold": 5}, "takes no \"threshold\""),
    ({"name": "a", "kind": "no_worker", "queue": "q"}, 'takes no "queue"'),
    ({"name": "a", "kind": "queue_age", "queue": "q"}, 'needs "threshold"'),
    ({"name": "a", "kind": "queue_age", "queue": "q" * 256, "threshold": 5}, '"queue" must be 1-255'),
    ({"name": "", "kind": "no_worker"}, '"name" must be 1-100'),
    ({"name": "a\x00b", "kind": "no_worker"}, "control characters"),
    ({"name": "a", "kind": "no_worker", "webhooks": [{"url": "ftp://x.test/"}]}, "http(s) URL"),
    ({"name": "a", "kind": "no_worker", "webhooks": [{"url": "javascript:alert(1)"}]}, "http(s) URL"),
    ({"name": "a", "kind": "no_worker", "webhooks": [{"url": "http:///nohost"}]}, "http(s) URL"),
    ({"name": "a", "kind": "no_worker", "webhooks": [{"url": "http://x.test/" + "a" * 3000}]},
     "at most 2000"),
    ({"name": "a", "kind": "no_worker", "webhooks": [{"url": "http://x.test/", "format": "xml"}]}, "format"),
    ({"name": "a", "kind": "no_worker", "webhooks": [{"url": HOOK}] * 6}, "at most 5"),
    ({"name": "a", "kind": "no_worker", "enabled": "yes"}, "true or false"),
    ({"name": "a", "kind": "no_worker", "min_count": 3}, "only a failure_rate"),
])
def test_a_hostile_rule_is_refused_with_a_message_naming_what_is_wrong(body, said):
    with pytest.raises(ActionError) as caught:
        parse_rule(body)
    assert caught.value.status == 400 and said in str(caught.value)


# -- The judgements and the state machine -----------------------------------------------------------


def test_a_failure_rate_needs_its_minimum_count_and_is_failed_over_finished_and_failed():
    r = rule(kind="failure_rate", task="t", threshold=0.5, window=300, min_count=4)
    few = readings(outcomes=lambda name, window: {"failed": 2, "finished": 1, "lost": 5})
    assert judge(r, few).breached is False  # 3 ended, below the minimum of 4 (lost: task_lost's)
    many = readings(outcomes=lambda name, window: {"failed": 2, "lost": 1, "revoked": 3, "finished": 2})
    judged = judge(r, many)
    assert judged.breached is True and judged.value == 0.5 and "2 of 4" in judged.detail
    count = rule(kind="failure_count", task="t", threshold=3, window=300)
    assert judge(count, readings(outcomes=lambda name, window: {"failed": 2, "lost": 4})).breached is False
    lost = rule(kind="task_lost", window=300)
    assert judge(lost, readings(outcomes=lambda name, window: {"lost": 1})).breached is True


def test_unknown_readings_are_unknown_not_ok():
    assert judge(rule(kind="no_worker"), readings(monitor_connected=False)).breached is None
    assert judge(rule(kind="queue_no_consumers", queue="q"), readings(consumers=None)).breached is None
    assert judge(rule(kind="queue_age", queue="q", threshold=5),
                 readings(queue_age=lambda queue: None)).breached is None
    gone = rule(kind="periodic_missed", entry="gone")
    assert judge(gone, readings(periodic_late=lambda e: None)).breached is None


def test_a_held_condition_is_pending_until_its_window_then_fires_once_and_resolves_once():
    r = rule(kind="no_worker", window=30)
    down, up = Judgement(True, 0, "0 worker(s) online"), Judgement(False, 1, "1 worker(s) online")
    state, notices = step(r, down, {}, 1000.0)
    assert state["state"] == PENDING and notices == []
    state, notices = step(r, down, state, 1029.0)
    assert state["state"] == PENDING and notices == []
    state, notices = step(r, down, state, 1030.0)
    assert state["state"] == FIRING and [n["status"] for n in notices] == ["firing"]
    assert notices[0]["id"] == "alert-000000000001:1:firing"
    state, notices = step(r, down, state, 1040.0)  # still firing: told once
    assert state["state"] == FIRING and notices == []
    state, notices = step(r, Judgement(None, None, "stream down"), state, 1045.0)
    assert state["state"] == FIRING and notices == []  # not knowing is no recovery
    state, notices = step(r, up, state, 1050.0)
    assert state["state"] == OK and [n["id"] for n in notices] == ["alert-000000000001:1:resolved"]
    assert notices[0]["fired_at"] == 1030.0 and notices[0]["resolved_at"] == 1050.0
    state, _ = step(r, down, state, 1060.0)
    state, notices = step(r, down, state, 1090.0)
    assert notices[0]["id"] == "alert-000000000001:2:firing"  # a new episode, a new id


def test_a_count_rule_fires_at_once_and_a_pending_blip_sends_nothing():
    r = rule(kind="failure_count", task="t", threshold=1, window=60)
    state, notices = step(r, Judgement(True, 1, "1 failed"), {}, 10.0)
    assert state["state"] == FIRING and len(notices) == 1
    held = rule(kind="no_worker", window=30)
    state, _ = step(held, Judgement(True, 0, ""), {}, 10.0)
    state, notices = step(held, Judgement(False, 1, ""), state, 20.0)
    assert state["state"] == OK and notices == []


def test_editing_or_disabling_a_firing_rule_resolves_it():
    r = rule(kind="no_worker", window=0)
    state, _ = step(r, Judgement(True, 0, ""), {}, 10.0)
    edited = {**r, "window": 60}
    state2, notices = step(edited, Judgement(True, 0, ""), state, 20.0)
    assert [n["status"] for n in notices] == ["resolved"] and state2["state"] == PENDING
    firing, _ = step(r, Judgement(True, 0, ""), {}, 10.0)
    off, notices = step({**r, "enabled": False}, None, firing, 20.0)
    assert off["state"] == DISABLED and [n["status"] for n in notices] == ["resolved"]


def test_unknown_from_ok_is_shown_as_unknown():
    state, notices = step(rule(), Judgement(None, None, "?"), {}, 5.0)
    assert state["state"] == UNKNOWN and notices == []


# -- Webhook bodies ---------------------------------------------------------------------------------


def test_a_slack_body_shows_markup_as_text_and_the_plain_body_is_the_notice():
    r = rule(kind="long_running", task="<script>alert(1)</script>", threshold=5)
    _, [notice] = step(r, Judgement(True, 9, "<b>t</b> & co"), {}, 1.0)
    slack = json.loads(webhooks.body(notice, "slack"))
    assert slack["text"].startswith("FIRING: r: &lt;b&gt;t&lt;/b&gt; &amp; co")
    assert slack["attachments"][0]["fields"][1]["value"] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    plain = json.loads(webhooks.body(notice, "json"))
    assert plain["source"] == "pulse" and plain["rule"]["task"] == "<script>alert(1)</script>"


# -- The outbox against a real receiver ------------------------------------------------------------


@pytest.fixture
def receiver():
    hook = Receiver().start()
    yield hook
    hook.stop()


def _queue(registry, outbox, url, status="firing"):
    stored = {"id": "alert-00000000000a", **parse_rule({"name": "n", "kind": "no_worker",
                                                         "webhooks": [{"url": url}]})}
    registry.client.hset(registry.keys.alert_rules, stored["id"], json.dumps(stored))
    notice = {"id": f"{stored['id']}:1:{status}", "status": status, "rule": {"id": stored["id"], "name": "n"},
              "value": 0, "detail": "d", "fired_at": 1.0, "resolved_at": None, "at": time.time()}
    pipe = registry.client.pipeline()
    outbox.post(pipe, stored, notice)
    pipe.execute()
    return stored


def _attempt(outbox, timeout=2.0):
    [(delivery, data)] = outbox.claim(time.time() + 10_000, 10)  # due whatever its backoff
    payload = webhooks.body(json.loads(data["notice"]), "json")
    status, error, retry = webhooks.post(data["url"], payload, timeout)
    return outbox.settle(delivery, data, time.time(), status, error, retry)


def test_a_claimed_delivery_is_not_claimed_again_until_its_claim_runs_out(registry, receiver):
    outbox = Outbox(registry)
    _queue(registry, outbox, receiver.url)
    assert len(outbox.claim(time.time(), 10)) == 1
    assert outbox.claim(time.time(), 10) == []  # a second server, at the same moment
    assert len(outbox.claim(time.time() + 61, 10)) == 1  # the first died: due again


def test_a_receiver_that_answers_500_then_200_gets_the_notice_after_a_retry(registry, receiver):
    outbox = Outbox(registry)
    stored = _queue(registry, outbox, receiver.url)
    receiver.answer = 500
    first = _attempt(outbox)
    assert first["outcome"] == "will retry" and first["http_status"] == 500 and "500" in first["error"]
    assert first["next_attempt_at"] - first["at"] == pytest.approx(backoff(1))
    receiver.answer = 200
    second = _attempt(outbox)
    assert second["outcome"] == "delivered" and second["attempt"] == 2
    assert [b["id"] for b in receiver.taken()] == ["alert-00000000000a:1:firing"]
    assert outbox.pending() == 0
    events = [(e["event"], e.get("outcome")) for e in outbox.history(stored["id"])]
    assert events == [("delivery", "delivered"), ("delivery", "will retry"), ("firing", None)]


def test_a_receiver_that_is_down_is_retried_and_given_up_after_the_last_attempt(registry, receiver):
    outbox = Outbox(registry)
    receiver.stop()
    _queue(registry, outbox, receiver.url)
    outcomes = [_attempt(outbox) for _ in range(ATTEMPTS)]
    assert all(o["http_status"] is None and "Connection" in o["error"] for o in outcomes)
    assert [o["outcome"] for o in outcomes] == ["will retry"] * (ATTEMPTS - 1) + ["gave up"]
    assert outbox.pending() == 0
    assert [backoff(n) for n in (1, 2, 3, 10, 11)] == [1, 2, 4, 300, 300]


def test_a_slow_receiver_times_out_and_is_retried_and_a_4xx_is_not(registry, receiver):
    outbox = Outbox(registry)
    _queue(registry, outbox, receiver.url)
    receiver.delay = 1.5
    slow = _attempt(outbox, timeout=0.5)
    assert slow["outcome"] == "will retry" and "timed out" in slow["error"].lower()
    receiver.delay, receiver.answer = 0.0, 404
    refused = _attempt(outbox)
    assert refused["outcome"] == "gave up" and refused["http_status"] == 404


# -- One server at a time ---------------------------------------------------------------------------


def test_one_of_two_servers_alerts_and_a_notice_is_delivered_once(registry, receiver):
    rules, outbox = Rules(registry.client, registry.keys), Outbox(registry)
    hooks = [{"url": receiver.url}]
    rules.create("test", parse_rule({"name": "nobody", "kind": "no_worker", "webhooks": hooks}))
    nobody = readings(workers_online=0)
    servers = [Alerting(registry, rules, outbox, lambda now: nobody, owner, evaluate_every=0.0, timeout=2.0)
               for owner in ("server-a", "server-b")]
    for _ in range(3):
        for server in servers:
            server.step()
    assert [server.leading() for server in servers] == [True, False]
    wait_until(lambda: receiver.taken(), what="the firing notice")
    assert [b["status"] for b in receiver.taken()] == ["firing"]
    registry.client.delete(registry.keys.alert_lease)  # server-a stopped: its lease ran out
    back = readings(workers_online=2)
    servers[1].readings = lambda now: back
    servers[1].step()
    assert servers[1].leading() and not servers[0].leading()
    wait_until(lambda: receiver.taken("resolved"), what="the resolved notice")
    assert [b["status"] for b in receiver.taken()] == ["firing", "resolved"]


def test_a_deleted_rule_leaves_no_state_behind(registry):
    rules, outbox = Rules(registry.client, registry.keys), Outbox(registry)
    stored = rules.create("test", parse_rule({"name": "n", "kind": "no_worker"}))
    alerting = Alerting(registry, rules, outbox, lambda now: readings(), "me", evaluate_every=0.0,
                        timeout=1.0)
    alerting.evaluate(time.time())
    assert rules.states([stored["id"]])[0]["state"] == OK
    rules.delete(stored["id"])
    registry.client.hset(registry.keys.alert_states, stored["id"], "{}")  # written by an evaluation in flight
    alerting.evaluate(time.time())
    assert not registry.client.hexists(registry.keys.alert_states, stored["id"])


# -- The API ----------------------------------------------------------------------------------------


@pytest.fixture
def app(redis_url):
    import uuid

    return demo_server({"PULSE_TOKEN": TOKEN, "PULSE_VIEWER_TOKEN": VIEWER, "REDIS_URL": redis_url,
                        "PULSE_ASYNC_MODE": "threading", "PULSE_AUTH_ATTEMPTS": "100000",
                        "PULSE_REGISTRY_PREFIX": f"u{uuid.uuid4().hex[:10]}:"})


OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
READER = {"Authorization": f"Bearer {VIEWER}"}


def test_the_operator_keeps_rules_and_every_change_is_audited(app):
    client = app.test_client()
    body = {"name": "<img src=x onerror=alert(1)>", "kind": "failure_count", "task": "tasks.never.seen",
            "threshold": 3, "window": 300, "webhooks": [{"url": HOOK, "format": "slack"}]}
    created = client.post("/api/alerts", json=body, headers=OPERATOR)
    assert created.status_code == 201, created.get_json()
    rule_id = created.get_json()["id"]
    assert created.headers["Location"] == f"/api/alerts/{rule_id}"
    assert created.get_json()["warnings"] == ["no task named 'tasks.never.seen' has been recorded yet"]
    listed = client.get("/api/alerts", headers=OPERATOR).get_json()
    assert [r["name"] for r in listed["rules"]] == [body["name"]] and "failure_rate" in listed["kinds"]
    assert listed["rules"][0]["webhooks"][0]["url"] == HOOK and listed["rules"][0]["state"]["state"] == "ok"
    shown = client.get(f"/api/alerts/{rule_id}", headers=READER).get_json()
    assert shown["webhooks"][0]["url"] == "https://hooks.slack.test/…"  # a viewer never sees the secret
    replaced = client.put(f"/api/alerts/{rule_id}", json={**body, "threshold": 5}, headers=OPERATOR)
    assert replaced.status_code == 200 and replaced.get_json()["threshold"] == 5
    tested = client.post(f"/api/alerts/{rule_id}/test", headers=OPERATOR)
    assert tested.status_code == 202 and tested.get_json()["webhooks"] == 1
    history = client.get(f"/api/alerts/{rule_id}/history", headers=READER).get_json()["history"]
    assert history[0]["event"] == "test"
    assert client.delete(f"/api/alerts/{rule_id}", headers=OPERATOR).get_json() == {"deleted": rule_id}
    assert client.get(f"/api/alerts/{rule_id}", headers=OPERATOR).status_code == 404
    audit = [(e["action"], e["detail"]["rule"]) for e in app.extensions["pulse_audit"].read(10)]
    assert audit == [("alert-delete", rule_id), ("alert-test", rule_id), ("alert-update", rule_id),
                     ("alert-create", rule_id)]


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/api/alerts"), ("put", "/api/alerts/alert-000000000000"),
    ("delete", "/api/alerts/alert-000000000000"), ("post", "/api/alerts/alert-000000000000/test"),
])
def test_a_viewer_changes_no_rule(app, method, path):
    body = {"name": "a", "kind": "no_worker"}
    response = getattr(app.test_client(), method)(path, json=body, headers=READER)
    assert response.status_code == 403
    assert app.extensions["pulse_alert_rules"].all() == []


@pytest.mark.parametrize(("method", "path", "status"), [
    ("get", "/api/alerts/nope", 400), ("get", "/api/alerts/alert-00000000000z", 400),
    ("get", "/api/alerts/alert-000000000000", 404), ("put", "/api/alerts/alert-000000000000", 404),
    ("delete", "/api/alerts/alert-000000000000", 404), ("get", "/api/alerts/alert-000000000000/history", 404),
    ("post", "/api/alerts/alert-000000000000/test", 404), ("post", "/api/alerts", 400),
])
def test_malformed_and_unknown_rule_ids_get_a_clear_error(app, method, path, status):
    response = getattr(app.test_client(), method)(path, json={"name": "a", "kind": "no_worker"}
                                                  if method == "put" else None, headers=OPERATOR)
    assert response.status_code == status and response.get_json()["error"]


def test_history_limits_are_checked(app):
    client = app.test_client()
    created = client.post("/api/alerts", json={"name": "a", "kind": "no_worker"}, headers=OPERATOR)
    rule_id = created.get_json()["id"]
    assert client.get(f"/api/alerts/{rule_id}/history?limit=0", headers=OPERATOR).status_code == 400
    assert client.get(f"/api/alerts/{rule_id}/history?limit=x", headers=OPERATOR).status_code == 400
    assert client.post(f"/api/alerts/{rule_id}/test", headers=OPERATOR).status_code == 409  # no webhooks


def test_metrics_export_the_gauges_the_rules_judge(app):
    text = app.test_client().get("/metrics", headers=READER).get_data(as_text=True)
    for name in ("pulse_queue_consumers", "pulse_queue_oldest_message_age_seconds",
                 "pulse_task_longest_running_seconds", "pulse_periodic_overdue_seconds",
                 "pulse_alerts_firing"):
        assert f"# TYPE {name} gauge" in text, name
    assert "pulse_alerts_firing 0.0" in text


def test_outcomes_of_any_task_sum_every_name_counted_apart_and_the_rest(registry):
    from pulse.record.analytics import OTHER, outcome_field
    from pulse.server.model.analytics import Analytics

    now = time.time()
    minute = registry.keys.analytics_minute(int(now // 60))
    registry.client.sadd(registry.keys.analytics_names, "a", "b")
    registry.client.hset(minute, mapping={outcome_field("lost", "a"): 2, outcome_field("lost", "b"): 1,
                                          outcome_field("lost", OTHER): 4, outcome_field("failed", "a"): 7})
    analytics = Analytics(registry)
    assert analytics.outcomes(None, 300, now, statuses=("lost",)) == {"lost": 7}
    assert analytics.outcomes("a", 300, now)["failed"] == 7
    lost_any = rule(kind="task_lost", window=300, threshold=5)
    judged = judge(lost_any, readings(outcomes=lambda name, window: analytics.outcomes(name, window, now)))
    assert judged.breached is True and judged.value == 7 and "any task" in judged.detail


def test_a_rule_replaced_by_another_kind_keeps_nothing_of_the_old_one(registry):
    rules = Rules(registry.client, registry.keys)
    rate = {"name": "n", "kind": "failure_rate", "task": "t", "threshold": 0.5, "window": 60, "min_count": 9}
    stored = rules.create("test", parse_rule(rate))
    _, new = rules.replace(stored["id"], parse_rule({"name": "n", "kind": "no_worker"}))
    assert new["min_count"] is None and new["task"] is None and new["threshold"] is None
