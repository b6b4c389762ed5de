"""Periodic tasks against real processes: the demo app's beat_schedule listed without any beat,
run now (audited, matched to its entry by the name it carries), a real `celery beat` whose runs
are matched to their entry, a failed last run, and who may do what.

The server, worker and beat get DEMO_COUNT_EVERY=1: the demo's count entry is then due every second.
"""

import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from pulse import devstack

from ..conftest import _log, db_url, flush_db, own_server, own_worker, server_env, wait_until
from .test_openapi import assert_documented

pytestmark = pytest.mark.integration

DB = 12  # shared with other modules, each flushing it first
VIEWER = "viewer-token-periodic-0123456789"
COUNT, HOURLY = "demo-count", "hourly-import-check"
COUNT_KWARGS = {"total": 20, "delay": 0.05}
RUN = "/api/periodic/{entry}/run"


@pytest.fixture(scope="module")
def periodic(redis_url) -> Iterator:
    url = db_url(redis_url, DB)
    flush_db(url)
    with own_worker(url, "worker-periodic", concurrency=2), \
            own_server(url, "web-periodic", PULSE_VIEWER_TOKEN=VIEWER, DEMO_COUNT_EVERY="1") as (_, stack):
        yield stack
    flush_db(url)


def entries(stack, token: str | None = "") -> dict[str, dict]:
    response = stack.api("GET", "/api/periodic", token=token)
    body = assert_documented("GET", "/api/periodic", response)
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in body["entries"]}


def run_now(stack, entry: str, **kwargs):
    return stack.api("POST", RUN.format(entry=quote(entry, safe="")), **kwargs)


def test_the_schedule_is_listed_without_any_beat(periodic):
    before = time.time()
    listed = entries(periodic)
    assert set(listed) == {COUNT, HOURLY}
    count, hourly = listed[COUNT], listed[HOURLY]
    assert (count["task"], count["schedule"]) == ("tasks.demo.count", "every 1 s")
    assert count["kwargs"] == COUNT_KWARGS and count["args"] == []
    assert hourly["task"] == "tasks.demo.fail_with_details"
    assert hourly["schedule"] == "crontab: at minute 0 past every hour (0 * * * *)"
    # Nothing ran yet: estimated from now. The next full hour, in the app's timezone (UTC).
    assert hourly["last_runs"] == [] and hourly["next_run_from"] == "now" and not hourly["last_failed"]
    assert hourly["next_run_at"] == pytest.approx((before // 3600 + 1) * 3600, abs=1)
    assert before <= count["next_run_at"] <= time.time() + 1.5


def test_a_viewer_reads_and_cannot_run(periodic):
    assert set(entries(periodic, token=VIEWER)) == {COUNT, HOURLY}
    response = run_now(periodic, COUNT, token=VIEWER, json={"reason": "viewer"})
    assert response.status_code == 403 and "read-only" in response.json()["error"]
    assert_documented("POST", RUN, response)
    for token in (None, "not-a-token"):
        assert run_now(periodic, COUNT, token=token, json={"reason": "x"}).status_code == 401
        assert periodic.api("GET", "/api/periodic", token=token).status_code == 401


@pytest.mark.parametrize("body", [None, {}, {"reason": ""}, {"reason": " \t "}, {"reason": "x" * 501}])
def test_run_now_needs_a_reason(periodic, body):
    response = run_now(periodic, COUNT, json=body)
    assert response.status_code == 400 and "reason" in response.json()["error"]
    assert_documented("POST", RUN, response)


@pytest.mark.parametrize("entry", ["x" * 201, "line\nfeed", "nul\x00", "tab\tx", "esc\x1b[31m", "del\x7f"])
def test_a_hostile_entry_name_is_answered_400(periodic, entry):
    response = run_now(periodic, entry, json={"reason": "hostile"})
    assert response.status_code == 400 and "malformed entry name" in response.json()["error"]
    assert_documented("POST", RUN, response)


def test_an_unknown_entry_is_answered_404(periodic):
    for entry in ("no-such-entry", "<img src=x onerror=alert(1)>", "a/b"):
        response = run_now(periodic, entry, json={"reason": "unknown"})
        assert response.status_code == 404, (entry, response.text)
        assert_documented("POST", RUN, response)


def test_run_now_sends_the_entry_and_its_run_shows_up_matched_by_its_name(periodic):
    response = run_now(periodic, HOURLY, json={"reason": "checking the import by hand"})
    sent = assert_documented("POST", RUN, response)
    assert response.status_code == 202 and response.headers["Location"] == sent["url"]
    assert sent["page"] == f"/tasks/{sent['id']}"
    failed = periodic.wait_for(sent["id"], "failed")
    assert failed["periodic_entry"] == HOURLY and failed["failure"]["details"]["step"] == 2
    hourly = entries(periodic)[HOURLY]
    last = hourly["last_runs"][0]
    assert (last["id"], last["status"], last["matched_by"], last["periodic_entry"]) == \
        (sent["id"], "failed", "name", HOURLY)
    assert hourly["last_failed"] is True and hourly["next_run_from"] == "last run"

    response = run_now(periodic, COUNT, json={"reason": "a count, now"})
    assert response.status_code == 202, response.text
    counted = periodic.wait_for(response.json()["id"], "finished")
    count = entries(periodic)[COUNT]
    assert count["last_runs"][0]["id"] == counted["id"] and count["last_failed"] is False

    audit = periodic.api("GET", "/api/audit", params={"limit": 10}).json()["entries"]
    runs = [entry for entry in audit if entry["action"] == "run-periodic"]
    assert [(entry["task"], entry["detail"]["entry"], entry["detail"]["reason"], entry["detail"]["outcome"])
            for entry in runs[:2]] == [(counted["id"], COUNT, "a count, now", "sent"),
                                       (sent["id"], HOURLY, "checking the import by hand", "sent")]
    assert all(entry["who"].startswith("operator (token)") and entry["detail"]["run_now"] for entry in runs)


def test_a_real_beat_sends_runs_that_the_view_matches_to_their_entry(periodic, tmp_path):
    env = server_env(periodic.redis_url, 0, DEMO_COUNT_EVERY="1")
    with _log("beat-periodic") as log:
        beat = devstack.start_beat(env, tmp_path / "beat-schedule", log=log)
        try:
            def beat_run():
                count = entries(periodic)[COUNT]
                return next((run for run in count["last_runs"] if run["periodic_entry"] is True
                             and run["status"] == "finished"), None)

            run = wait_until(beat_run, 60, 0.5, "a run sent by beat to finish")
        finally:
            devstack.stop(beat)
    assert beat.returncode is not None
    # Celery 5.7's beat marks its messages (celery_beat_task) without naming the entry: the run is
    # matched by its task name and arguments.
    assert run["matched_by"] == "arguments" and run["name"] == "tasks.demo.count"
    record = periodic.api("GET", f"/api/tasks/{run['id']}").json()
    assert record["periodic_entry"] is True and record["kwargs"] == repr(COUNT_KWARGS)
    # A launch of the same task with other arguments is no run of the entry.
    other = periodic.launch("tasks.demo.count", total=1, delay=0.01)
    periodic.wait_for(other, "finished")
    assert other not in {r["id"] for r in entries(periodic)[COUNT]["last_runs"]}
