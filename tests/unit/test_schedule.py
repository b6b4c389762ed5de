"""The periodic tasks (pulse/server/model/schedule.py): schedules in words, next runs, how a run is
matched to its entry, and the API over a real registry (runs recorded by the server's own app)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from celery.schedules import crontab, maybe_schedule

from pulse.server.model.schedule import (
    call_of,
    interval_words,
    matched_by,
    next_run_at,
    schedule_words,
    valid_entry_name,
)

from ..conftest import TOKEN

NOW = datetime(2026, 12, 7, 10, 17, 30, tzinfo=UTC).timestamp()


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


@pytest.fixture
def celery_app():
    app = Celery("schedule-test", set_as_current=False)
    app.conf.timezone = "UTC"
    return app


@pytest.mark.parametrize(("given", "words"), [
    (30, "every 30 s"), (timedelta(seconds=30), "every 30 s"), (300, "every 5 min"),
    (300.0, "every 5 min"), (90, "every 90 s"), (0.5, "every 0.5 s"), (3600, "every 1 h"),
    (timedelta(hours=36), "every 36 h"), (timedelta(days=2), "every 2 d"),
])
def test_an_interval_in_words(celery_app, given, words):
    assert schedule_words(maybe_schedule(given, app=celery_app)) == words


@pytest.mark.parametrize(("cron", "words"), [
    (crontab(), "crontab: every minute (* * * * *)"),
    (crontab(minute=0), "crontab: at minute 0 past every hour (0 * * * *)"),
    (crontab(minute="*/15"), "crontab: at minute */15 past every hour (*/15 * * * *)"),
    (crontab(minute=30, hour=4), "crontab: at minute 30 past hour 4 (30 4 * * *)"),
    (crontab(minute="*", hour=4), "crontab: every minute of hour 4 (* 4 * * *)"),
    (crontab(minute=0, hour=0, day_of_week="mon-fri"),
     "crontab: at minute 0 past hour 0 on day-of-week mon-fri (0 0 * * mon-fri)"),
    (crontab(minute=0, hour=6, day_of_month="1", month_of_year="1,7"),
     "crontab: at minute 0 past hour 6 on day-of-month 1 in month 1,7 (0 6 1 1,7 *)"),
    (crontab(minute=[30, 0]), "crontab: at minute 0,30 past every hour (0,30 * * * *)"),
])
def test_a_crontab_in_words_keeps_its_fields_as_given(cron, words):
    assert schedule_words(cron) == words


def test_other_schedules_are_named_not_guessed():
    assert interval_words(7200) == "every 2 h"
    assert schedule_words(object()) == "custom schedule: object"


def test_the_next_run_of_an_interval_counts_from_the_last_run_else_from_now(celery_app):
    every_5_min = maybe_schedule(300, app=celery_app)
    assert next_run_at(every_5_min, celery_app, None, NOW) == pytest.approx(NOW + 300)
    assert next_run_at(every_5_min, celery_app, NOW - 100, NOW) == pytest.approx(NOW + 200)
    every_30_s = maybe_schedule(timedelta(seconds=30), app=celery_app)
    assert next_run_at(every_30_s, celery_app, NOW - 10, NOW) == pytest.approx(NOW + 20)
    # Overdue (no beat ran it for an hour): due now, never in the past.
    assert next_run_at(every_5_min, celery_app, NOW - 3600, NOW) == NOW


def test_the_next_run_of_a_crontab(celery_app):
    assert next_run_at(crontab(minute=0), celery_app, None, NOW) == at(2026, 12, 7, 11, 0)
    assert next_run_at(crontab(minute=0), celery_app, at(2026, 12, 7, 10, 0), NOW) == at(2026, 12, 7, 11, 0)
    assert next_run_at(crontab(minute=30, hour=4), celery_app, None, NOW) == at(2026, 12, 8, 4, 30)
    assert next_run_at(crontab(minute="*/15"), celery_app, None, NOW) == at(2026, 12, 7, 10, 30)
    # 2026-12-07 is a Monday: the next Sunday is the 13th.
    assert next_run_at(crontab(minute=0, hour=8, day_of_week="sun"), celery_app, None, NOW) == \
        at(2026, 12, 13, 8, 0)


def test_a_crontab_reads_its_hours_in_the_apps_timezone():
    paris = Celery("schedule-paris", set_as_current=False)
    paris.conf.timezone = "Europe/Paris"  # UTC+1 in December: 10:17 UTC is 11:17 there
    assert next_run_at(crontab(minute=0, hour=12), paris, None, NOW) == at(2026, 12, 7, 11, 0)


def test_a_run_belongs_to_its_entry_by_name_where_the_message_named_it_else_by_arguments():
    call = call_of((), {"total": 20})
    assert call == {"args": [], "kwargs": {"total": 20}}
    assert matched_by({"periodic_entry": "nightly", "call": call}, "nightly", call) == "name"
    # Named for another entry: never this one's, whatever its arguments.
    assert matched_by({"periodic_entry": "other", "call": call}, "nightly", call) is None
    # Celery's beat marks without naming the entry; an unmarked run (a launch, an older Celery) alike.
    assert matched_by({"periodic_entry": True, "call": call}, "nightly", call) == "arguments"
    assert matched_by({"call": call}, "nightly", call) == "arguments"
    assert matched_by({"call": {"args": [], "kwargs": {"total": 21}}}, "nightly", call) is None
    assert matched_by({"call": None}, "nightly", call) is None
    # Arguments that are not JSON cannot be compared: only a named run matches then.
    assert call_of((object(),), {}) is None
    assert matched_by({"call": None}, "nightly", None) is None
    assert call_of([1, (2, 3)], None) == {"args": [1, [2, 3]], "kwargs": {}}


@pytest.mark.parametrize(("name", "valid"), [
    ("demo-count", True), ("a/b c", True), ("x" * 200, True), ("", False), ("x" * 201, False),
    ("line\nfeed", False), ("tab\tx", False), ("nul\x00", False), (None, False),
])
def test_entry_names_the_api_takes(name, valid):
    assert valid_entry_name(name) is valid


# The API, in-process, over the demo app's schedule and a real registry


def seed_run(registry, name: str, status: str = "finished", **fields) -> str:
    task_id = f"run-{uuid.uuid4().hex[:12]}"
    registry.write(task_id, status, fields={"name": name, "sent_at": fields.pop("sent_at", NOW), **fields})
    return task_id


def entry_of(client, headers, name: str) -> dict:
    answer = client.get("/api/periodic", headers=headers)
    assert answer.status_code == 200, answer.text
    return next(entry for entry in answer.get_json()["entries"] if entry["name"] == name)


def test_the_api_lists_the_demo_entries_with_their_matched_runs(app, client, auth_headers):
    registry = app.extensions["pulse_registry"]
    count = {"args": [], "kwargs": {"total": 20, "delay": 0.05}}
    by_beat = seed_run(registry, "tasks.demo.count", call=count, periodic_entry=True, sent_at=NOW - 20)
    launched = seed_run(registry, "tasks.demo.count", call=count, sent_at=NOW - 10)
    seed_run(registry, "tasks.demo.count", call={"args": [], "kwargs": {"total": 3}})  # another call
    seed_run(registry, "tasks.demo.count", call=count, periodic_entry="someone-else")
    entry = entry_of(client, auth_headers, "demo-count")
    assert entry["task"] == "tasks.demo.count" and entry["schedule"] == "every 5 min"
    assert entry["kwargs"] == {"total": 20, "delay": 0.05} and entry["args"] == []
    assert [(run["id"], run["matched_by"]) for run in entry["last_runs"]] == \
        [(launched, "arguments"), (by_beat, "arguments")]
    assert entry["last_runs"][1]["periodic_entry"] is True
    assert entry["last_run_at"] == pytest.approx(NOW - 10) and entry["last_failed"] is False
    assert entry["next_run_from"] == "last run" and entry["next_run_at"] >= NOW

    hourly = entry_of(client, auth_headers, "hourly-import-check")
    assert hourly["schedule"] == "crontab: at minute 0 past every hour (0 * * * *)"
    failed = seed_run(registry, "tasks.demo.fail_with_details", "failed",
                      periodic_entry="hourly-import-check")
    hourly = entry_of(client, auth_headers, "hourly-import-check")
    assert [run["id"] for run in hourly["last_runs"]] == [failed] and hourly["last_failed"] is True
    assert hourly["last_runs"][0]["matched_by"] == "name"


def test_run_now_sends_the_entry_marked_with_its_name_and_audits_it(app, client, auth_headers):
    answer = client.post("/api/periodic/demo-count/run", headers=auth_headers,
                         json={"reason": "  the 02:00 run was skipped  "})
    assert answer.status_code == 202, answer.text
    sent = answer.get_json()
    assert sent["entry"] == "demo-count" and answer.headers["Location"] == sent["url"]
    assert sent["page"] == f"/tasks/{sent['id']}" and sent["task"]["periodic_entry"] == "demo-count"
    record = app.extensions["pulse_registry"].get(sent["id"])
    assert record["call"] == {"args": [], "kwargs": {"total": 20, "delay": 0.05}}
    entry = entry_of(client, auth_headers, "demo-count")
    assert entry["last_runs"][0]["id"] == sent["id"] and entry["last_runs"][0]["matched_by"] == "name"
    audit = client.get("/api/audit?limit=1", headers=auth_headers).get_json()["entries"][0]
    assert audit["action"] == "run-periodic" and audit["task"] == sent["id"]
    assert audit["detail"] == {"entry": "demo-count", "name": "tasks.demo.count", "run_now": True,
                               "reason": "the 02:00 run was skipped", "outcome": "sent"}
    assert audit["who"].startswith("operator (token)")


@pytest.mark.parametrize("body", [None, {}, {"reason": ""}, {"reason": "   "}, {"reason": 5},
                                  {"reason": "x" * 501}, ["reason"]])
def test_run_now_needs_a_reason(client, auth_headers, body):
    answer = client.post("/api/periodic/demo-count/run", headers=auth_headers, json=body)
    assert answer.status_code == 400 and "reason" in answer.get_json()["error"]


def test_run_now_of_an_unknown_or_malformed_entry(client, auth_headers):
    reason = {"reason": "test"}
    answer = client.post("/api/periodic/no-such-entry/run", headers=auth_headers, json=reason)
    assert answer.status_code == 404 and "no-such-entry" in answer.get_json()["error"]
    for name in ("x" * 201, "line%0Afeed", "nul%00"):
        answer = client.post(f"/api/periodic/{name}/run", headers=auth_headers, json=reason)
        assert answer.status_code == 400 and "malformed entry name" in answer.get_json()["error"]


def test_run_now_answers_503_and_audits_the_error_when_the_broker_is_unreachable(redis_url):
    from tests.conftest import demo_server

    app = demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "PULSE_ASYNC_MODE": "threading",
                       "PULSE_REGISTRY_PREFIX": f"u{uuid.uuid4().hex[:10]}:"})
    celery_app = app.extensions["pulse_celery"]
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    celery_app.conf.broker_connection_retry = False
    celery_app.conf.broker_connection_max_retries = 0
    celery_app.conf.task_publish_retry = False
    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/api/periodic/demo-count/run", headers=headers, json={"reason": "broker test"})
    assert answer.status_code == 503, answer.text
    audit = client.get("/api/audit?limit=1", headers=headers).get_json()["entries"][0]
    assert audit["action"] == "run-periodic" and audit["task"] is None
    assert audit["detail"]["outcome"] == "error" and "broker" in audit["detail"]["error"]
