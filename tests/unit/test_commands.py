"""Operator commands, goals, the audit log and metrics, in-process (no worker consumes db 1)."""

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def registry(app):
    return app.extensions["pulse_registry"]


def failed(registry, task_id, call=True):
    registry.write(task_id, "failed", fields={
        "name": "tasks.demo.count", "state": "FAILURE", "queue": "celery",
        "call": {"args": [], "kwargs": {"total": 1}} if call else None,
        "failure": {"exc_type": "ValueError", "exc_message": "x", "traceback": "tb", "details": {}}})


def post(client, headers, path, body=None):
    if body is None:
        return client.post(path, headers=headers)
    return client.post(path, json=body, headers=headers)


def test_replay_links_both_ways_and_only_once(client, auth_headers, registry):
    failed(registry, "f1")
    response = post(client, auth_headers, "/api/tasks/f1/replay")
    assert response.status_code == 200
    old = response.get_json()
    assert old["status"] == "replayed" and old["failure"]["exc_type"] == "ValueError"
    new = client.get(f"/api/tasks/{old['replayed_by']}", headers=auth_headers).get_json()
    assert new["replay_of"] == "f1" and new["status"] == "scheduled" and new["name"] == "tasks.demo.count"
    again = post(client, auth_headers, "/api/tasks/f1/replay")
    assert again.status_code == 409 and "replayed" in again.get_json()["error"]


def test_replay_needs_kept_arguments(client, auth_headers, registry):
    failed(registry, "f2", call=False)
    response = post(client, auth_headers, "/api/tasks/f2/replay")
    assert response.status_code == 409 and "arguments" in response.get_json()["error"]


def test_skip_once(client, auth_headers, registry):
    failed(registry, "f3")
    skipped = post(client, auth_headers, "/api/tasks/f3/skip").get_json()
    assert skipped["status"] == "skipped" and skipped["is_resolved"] is True
    assert post(client, auth_headers, "/api/tasks/f3/skip").status_code == 409
    assert post(client, auth_headers, "/api/tasks/f3/replay").status_code == 409


def test_revoke_records_the_request_and_refuses_ended_tasks(client, auth_headers, registry):
    registry.write("s1", "scheduled", fields={"name": "tasks.demo.count"})
    data = post(client, auth_headers, "/api/tasks/s1/revoke", {"terminate": True}).get_json()
    assert data["revoke_requested_at"] is not None and data["can_revoke"] is True
    assert post(client, auth_headers, "/api/tasks/s1/revoke", {"signal": "SIGNOPE"}).status_code == 400
    assert post(client, auth_headers, "/api/tasks/s1/revoke", {"terminate": "yes"}).status_code == 400
    registry.write("d1", "finished")
    assert post(client, auth_headers, "/api/tasks/d1/revoke").status_code == 409


def test_forget_keeps_the_story_as_expired_unless_purged(client, auth_headers, registry, app):
    registry.write("d2", "finished",
                   fields={"name": "job", "state": "SUCCESS", "result": 3, "has_result": True})
    app.extensions["pulse_celery"].backend.store_result("d2", 3, "SUCCESS")
    data = client.delete("/api/tasks/d2", headers=auth_headers).get_json()
    assert data["status"] == "expired" and data["name"] == "job"
    assert app.extensions["pulse_celery"].AsyncResult("d2").state == "PENDING"
    assert client.delete("/api/tasks/d2?purge=true", headers=auth_headers).get_json()["purged"] is True
    assert client.get("/api/tasks/d2", headers=auth_headers).status_code == 404
    registry.write("r1", "running")
    assert client.delete("/api/tasks/r1", headers=auth_headers).status_code == 409
    assert client.delete("/api/tasks/r1?purge=maybe", headers=auth_headers).status_code == 400


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/api/tasks/nope/skip"), ("post", "/api/tasks/nope/replay"),
    ("post", "/api/tasks/nope/revoke"), ("delete", "/api/tasks/nope"),
])
def test_actions_on_unknown_and_malformed_ids(client, auth_headers, method, path):
    assert getattr(client, method)(path, headers=auth_headers).status_code == 404
    assert getattr(client, method)(path.replace("nope", "no%20pe"), headers=auth_headers).status_code == 400
    assert getattr(client, method)(path).status_code == 401


def test_goals_deduplicate_launches(client, auth_headers, registry):
    body = {"name": "tasks.demo.count", "kwargs": {"total": 1}, "goal": "nightly-report"}
    first = client.post("/api/tasks", json=body, headers=auth_headers)
    assert first.status_code == 202 and first.get_json()["started"] is True
    again = client.post("/api/tasks", json=body, headers=auth_headers)
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["started"] is False
    forced = client.post("/api/tasks", json={**body, "force": True}, headers=auth_headers)
    assert forced.status_code == 202 and forced.get_json()["id"] != first.get_json()["id"]
    failed(registry, forced.get_json()["id"])
    rerun = client.post("/api/tasks", json=body, headers=auth_headers)
    assert rerun.status_code == 202 and rerun.get_json()["id"] != forced.get_json()["id"]
    goal = client.get("/api/goals/nightly-report", headers=auth_headers).get_json()
    assert goal["task"]["id"] == rerun.get_json()["id"] and goal["status"] == "scheduled"
    assert client.get("/api/goals/never", headers=auth_headers).status_code == 404
    bad = client.post("/api/tasks", json={**body, "goal": ""}, headers=auth_headers)
    assert bad.status_code == 400


def test_a_replay_takes_over_its_goal(client, auth_headers, registry):
    body = {"name": "tasks.demo.count", "kwargs": {"total": 1}, "goal": "g-replay"}
    first = client.post("/api/tasks", json=body, headers=auth_headers).get_json()["id"]
    failed(registry, first)
    rerun = post(client, auth_headers, f"/api/tasks/{first}/replay").get_json()["replayed_by"]
    again = client.post("/api/tasks", json=body, headers=auth_headers)
    assert again.status_code == 200 and again.get_json()["id"] == rerun
    assert client.get("/api/tasks/" + rerun, headers=auth_headers).get_json()["goal"] == "g-replay"


def test_revoke_checks_the_signal_before_the_status(client, auth_headers, registry):
    registry.write("ended", "finished")
    response = post(client, auth_headers, "/api/tasks/ended/revoke", {"signal": "SIGNOPE"})
    assert response.status_code == 400


def test_the_snapshot_follows_recent_activity(app, registry):
    registry.write("long-runner", "running", now=1000.0)
    for number in range(5):
        registry.write(f"quick-{number}", "finished", now=2000.0 + number)
    registry.write("long-runner", "running", fields={"progress": {"current": 9}}, now=3000.0)
    recent = app.extensions["pulse_store"].recent(3)
    assert [t["id"] for t in recent] == ["long-runner", "quick-4", "quick-3"]


def test_wait_on_an_unknown_id_answers_at_once(client, auth_headers):
    started = time.monotonic()
    assert client.get("/api/tasks/never-seen?wait=20", headers=auth_headers).status_code == 404
    assert time.monotonic() - started < 10


def test_every_action_is_audited(client, auth_headers, registry):
    failed(registry, "a1")
    failed(registry, "a2")
    client.post("/api/tasks", json={"name": "tasks.demo.count"}, headers=auth_headers)
    post(client, auth_headers, "/api/tasks/a1/skip")
    post(client, auth_headers, "/api/tasks/a2/replay")
    entries = client.get("/api/audit?limit=10", headers=auth_headers).get_json()["entries"]
    assert [e["action"] for e in entries] == ["replay", "skip", "launch"]
    assert entries[0]["task"] == "a2" and entries[0]["who"].startswith("operator (token)")
    assert client.get("/api/audit?limit=0", headers=auth_headers).status_code == 400
    assert client.get("/api/audit").status_code == 401


def test_list_and_counts_through_the_api(client, auth_headers, registry):
    for number in range(5):
        registry.write(f"l{number}", "finished" if number % 2 else "failed", fields={"name": "job"})
    page = client.get("/api/tasks?limit=2&status=failed", headers=auth_headers).get_json()
    assert [t["id"] for t in page["tasks"]] == ["l4", "l2"] and page["next_cursor"]
    rest = client.get(f"/api/tasks?limit=2&status=failed&cursor={page['next_cursor']}",
                      headers=auth_headers).get_json()
    assert [t["id"] for t in rest["tasks"]] == ["l0"] and rest["next_cursor"] is None
    counts = client.get("/api/tasks/counts", headers=auth_headers).get_json()
    assert counts["by_status"]["failed"] == 3 and counts["total"] == 5
    nan_cursor = "bmFufGpvYi0wMDE"  # base64 of "nan|job-001"
    for bad in ("limit=0", "limit=x", "status=nope", "since=yesterday", "cursor=%%%", "since=nan",
                "until=inf", f"cursor={nan_cursor}"):
        assert client.get(f"/api/tasks?{bad}", headers=auth_headers).status_code == 400, bad


def test_wait_returns_when_the_task_ends(client, auth_headers, registry, app):
    registry.write("w1", "running")

    def finish_soon():
        time.sleep(0.3)
        registry.write("w1", "finished", fields={"state": "SUCCESS"})
        app.extensions["pulse_waiters"].notify(app.extensions["pulse_store"].get_json("w1"))

    threading.Thread(target=finish_soon).start()
    started = time.monotonic()
    data = client.get("/api/tasks/w1?wait=20", headers=auth_headers).get_json()
    assert data["status"] == "finished" and time.monotonic() - started < 10
    registry.write("w2", "running")
    assert client.get("/api/tasks/w2?wait=0.2", headers=auth_headers).get_json()["status"] == "running"
    assert client.get("/api/tasks/w2?wait=soon", headers=auth_headers).status_code == 400


def test_metrics_need_a_token_and_report(client, auth_headers, app):
    assert client.get("/metrics").status_code == 401
    app.extensions["pulse_metrics"].events_seen({"task-succeeded": 1, "nonsense type!": 1, "undecodable": 2})
    text = client.get("/metrics", headers=auth_headers).get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    events = {s.labels["type"]: s.value for s in families["pulse_events_received"].samples
              if s.name.endswith("_total")}
    assert events == {"task-succeeded": 1.0, "other": 1.0, "undecodable": 2.0}
    assert {"pulse_tasks", "pulse_registry_records", "pulse_workers_online", "pulse_monitor_lag_seconds",
            "pulse_connected_clients", "pulse_pushes_sent", "pulse_stalled_clients",
            "pulse_lapsed_token_clients"} <= set(families)
