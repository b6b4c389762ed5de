"""Bulk actions by filter, through the real stack: a dry run, then a job that any server carries out,
with a live record of its own, idempotent per task, surviving a killed server, on Redis and RabbitMQ."""

import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from pulse import devstack
from pulse.record.registry import as_text
from tasks.celery import make_celery

from ..conftest import Stack, db_url, flush_db, own_server, own_worker, producer_app, wait_until
from .test_openapi import assert_documented

pytestmark = pytest.mark.integration

RESTART_DB = 5
# A filter that selects no task: a hostile request that were wrongly accepted would act on nothing.
NOTHING = {"q": "id:no-task-has-this-id"}
AMQP_DB = 6


def mark() -> str:
    return uuid.uuid4().hex[:12]


def finished_job(stack: Stack, job_id: str, timeout: float = 60.0) -> dict:
    def ended():
        job = stack.api("GET", f"/api/bulk/{job_id}").json()
        return job if job["status"] in ("finished", "cancelled", "failed") else None

    return wait_until(ended, timeout, 0.2, f"bulk action {job_id} to end")


def start(stack: Stack, action: str, filters: dict, reason: str = "clean-up after the incident", **extra):
    body = {"action": action, "filters": filters, "reason": reason, **extra}
    return stack.api("POST", "/api/bulk", json=body)


def failed_tasks(stack: Stack, label: str, count: int) -> list[str]:
    ids = [stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=label)
           for _ in range(count)]
    for task_id in ids:
        stack.wait_for(task_id, "failed")
    return ids


def replays_of(redis_url: str, prefix: str, originals: list[str]) -> Counter:
    """How many records name each original as ``replay_of`` (a scan of the registry)."""
    client = redis.Redis.from_url(redis_url)
    counts: Counter = Counter()
    try:
        for key in client.scan_iter(match=f"{prefix}t:*", count=1000):
            value = client.hget(key, "replay_of")
            if value is not None:
                counts[as_text(value).strip('"')] += 1
    finally:
        client.close()
    return Counter({task_id: counts[task_id] for task_id in originals})


def test_a_dry_run_then_a_replay_of_what_a_search_selects(stack):
    label = mark()
    ids = failed_tasks(stack, label, 3)
    filters = {"status": "failed", "q": f"kwargs:input={label}"}

    preview = stack.api("GET", "/api/bulk/preview", params={"action": "replay", **filters})
    body = assert_documented("GET", "/api/bulk/preview", preview)
    assert body == {"action": "replay", "matched": 3, "more": False, "cap": 10_000, "eligible": 3,
                    "sample": ids}  # oldest first

    started = start(stack, "replay", filters, reason="gateway fixed <b>at 10:02</b>")
    job = assert_documented("POST", "/api/bulk", started)
    assert started.status_code == 202 and started.headers["Location"] == f"/api/bulk/{job['id']}"
    assert job["total"] == 3 and job["status"] in ("queued", "running", "finished")
    done = finished_job(stack, job["id"])
    assert (done["status"], done["acted"], done["not_eligible"], done["errors"], done["uncertain"]) == \
        ("finished", 3, 0, 0, 0)
    assert done["percent"] == 100.0 and done["done"] == 3
    assert_documented("GET", "/api/bulk/{job_id}", stack.api("GET", f"/api/bulk/{job['id']}"))

    for task_id in ids:
        task = stack.api("GET", f"/api/tasks/{task_id}").json()
        assert task["status"] == "replayed" and task["replayed_by"]
    outcomes = stack.api("GET", f"/api/bulk/{job['id']}/outcomes").json()["outcomes"]
    assert set(outcomes) == set(ids) and all(o.startswith("acted: replayed as ") for o in outcomes.values())

    # Dogfooded: the job is a task record with Pulse's own progress.
    record = stack.api("GET", f"/api/tasks/{job['id']}").json()
    assert (record["name"], record["status"]) == ("pulse.bulk.replay", "finished")
    assert record["progress"]["percent"] == 100
    assert record["result"] == {"acted": 3, "not_eligible": 0, "errors": 0, "uncertain": 0}

    audit = stack.api("GET", "/api/audit", params={"limit": 200}).json()["entries"]
    began = next(e for e in audit if e["action"] == "bulk" and e["task"] == job["id"])
    assert began["detail"]["reason"] == "gateway fixed <b>at 10:02</b>" and began["detail"]["count"] == 3
    assert began["detail"]["filters"] == filters and began["who"].startswith("operator (token)")
    ended = next(e for e in audit if e["action"] == "bulk-end" and e["task"] == job["id"])
    assert ended["detail"]["status"] == "finished" and ended["detail"]["acted"] == 3
    assert any(j["id"] == job["id"] for j in stack.api("GET", "/api/bulk").json()["jobs"])


def test_concurrent_bulk_actions_on_the_same_tasks_act_on_each_at_most_once(stack):
    label = mark()
    ids = failed_tasks(stack, label, 4)
    filters = {"status": "failed", "q": f"kwargs:input={label}"}
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(start(stack, "replay", filters)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = [finished_job(stack, answer.json()["id"]) for answer in answers if answer.status_code == 202]
    assert jobs and all(answer.status_code in (202, 409) for answer in answers)
    assert sum(job["acted"] for job in jobs) == 4
    assert replays_of(stack.redis_url, "pulse:", ids) == Counter(dict.fromkeys(ids, 1))


def test_skip_terminate_and_forget(stack):
    label = mark()
    failed = failed_tasks(stack, label, 2)
    skip = finished_job(stack, start(stack, "skip", {"q": f"kwargs:input={label}"}).json()["id"])
    assert skip["acted"] == 2
    assert {stack.api("GET", f"/api/tasks/{i}").json()["status"] for i in failed} == {"skipped"}

    total = 900_000 + random.randrange(99_999)  # a value of its own to select them by
    running = [stack.launch("tasks.demo.count", total=total, delay=0.05) for _ in range(2)]
    stack.wait_for(running[0], "running")
    terminate = finished_job(stack, start(stack, "terminate", {"q": f"kwargs:total={total}"}).json()["id"])
    assert terminate["acted"] == 2
    for task_id in running:
        stack.wait_for(task_id, "revoked", timeout=30)

    value = f"forget-{label}"
    with producer_app(stack.env) as app:
        echoed = app.send_task("tasks.demo.echo", args=[value]).id
    stack.wait_for(echoed, "finished")
    forget = finished_job(stack, start(stack, "forget", {"q": f"args:{value}"}).json()["id"])
    assert forget["acted"] == 1
    assert stack.api("GET", f"/api/tasks/{echoed}").json()["status"] == "expired"


def test_what_the_action_cannot_apply_to_is_counted_not_eligible(stack):
    label = mark()
    ids = failed_tasks(stack, label, 2)
    stack.api("POST", f"/api/tasks/{ids[0]}/skip")
    preview = stack.api("GET", "/api/bulk/preview", params={"action": "replay", "q": f"kwargs:input={label}"})
    assert (preview.json()["matched"], preview.json()["eligible"]) == (2, 1)
    job = finished_job(stack, start(stack, "replay", {"q": f"kwargs:input={label}"}).json()["id"])
    assert (job["acted"], job["not_eligible"]) == (1, 1)
    outcomes = stack.api("GET", f"/api/bulk/{job['id']}/outcomes").json()["outcomes"]
    assert outcomes[ids[0]] == "not eligible: it is skipped"


@pytest.mark.parametrize("body, message", [
    ({"action": "explode", "filters": NOTHING, "reason": "x"}, "action must be one of"),
    ({"action": "skip", "filters": [], "reason": "x"}, '"filters" must be a JSON object'),
    ({"action": "skip", "filters": {"status": "melted"}, "reason": "x"}, "unknown status"),
    ({"action": "skip", "filters": {"name": 7}, "reason": "x"}, "name must be text"),
    ({"action": "skip", "filters": {"q": 'kwargs:"x'}, "reason": "x"}, "unclosed quote"),
    ({"action": "skip", "filters": NOTHING}, "a reason is required"),
    ({"action": "skip", "filters": NOTHING, "reason": "   "}, "a reason is required"),
    ({"action": "skip", "filters": NOTHING, "reason": "x" * 501}, "at most 500"),
    ({"action": "skip", "filters": NOTHING, "reason": "x", "cap": 0}, "cap must be"),
    ({"action": "skip", "filters": NOTHING, "reason": "x", "cap": 10**9}, "cap must be"),
    ({"action": "skip", "filters": NOTHING, "reason": "x", "cap": "10"}, "cap must be"),
    ({"action": "skip", "filters": NOTHING, "reason": "x", "cap": True}, "cap must be"),
    ({"action": "skip", "filters": {"failure_group": "%%%"}, "reason": "x"}, "malformed failure_group"),
    ({"action": "skip", "filters": {"stauts": "failed"}, "reason": "x"}, "unknown filter 'stauts'"),
    ({"action": "skip", "filters": {}, "reason": "x"}, "at least one filter"),
    ({"action": "skip", "filters": {"name": "", "q": ""}, "reason": "x"}, "at least one filter"),
])
def test_hostile_requests_are_answered_400_saying_why(stack, body, message):
    answer = stack.api("POST", "/api/bulk", json=body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    assert_documented("POST", "/api/bulk", answer)


def test_a_filter_that_selects_everything_is_refused_above_the_cap_and_nothing_runs(stack):
    before = len(stack.api("GET", "/api/bulk").json()["jobs"])
    answer = start(stack, "forget", {"since": 0}, cap=1)
    assert answer.status_code == 409 and "more than 1 tasks" in answer.json()["error"]
    assert_documented("POST", "/api/bulk", answer)
    nothing = start(stack, "forget", {"q": f"kwargs:input={mark()}"})
    assert nothing.status_code == 409 and "selects no task" in nothing.json()["error"]
    params = {"action": "forget", "since": "0", "cap": "1"}
    preview = stack.api("GET", "/api/bulk/preview", params=params).json()
    assert preview["matched"] == 1 and preview["more"] is True
    assert len(stack.api("GET", "/api/bulk").json()["jobs"]) == before


@pytest.mark.parametrize("path, status", [("/api/bulk/not-a-job", 400),
                                          ("/api/bulk/bulk-0123456789abcdef", 404),
                                          ("/api/bulk/bulk-0123456789abcdef/outcomes", 404)])
def test_unknown_and_malformed_job_ids(stack, path, status):
    answer = stack.api("GET", path)
    assert answer.status_code == status, answer.text


def test_an_ended_job_cannot_be_cancelled(stack):
    label = mark()
    failed_tasks(stack, label, 1)
    job = finished_job(stack, start(stack, "skip", {"q": f"kwargs:input={label}"}).json()["id"])
    assert stack.api("POST", f"/api/bulk/{job['id']}/cancel", json={}).status_code == 400
    refused = stack.api("POST", f"/api/bulk/{job['id']}/cancel", json={"reason": "too late"})
    assert refused.status_code == 409 and "already finished" in refused.json()["error"]


# -- a server stops half way ---------------------------------------------------------------------


def seed_failed(url: str, count: int, queue: str) -> list[str]:
    """``count`` failed records of tasks.demo.echo, their arguments kept (replayable), written
    straight into the registry (no worker needed: their replays go to a queue nobody consumes)."""
    registry = make_celery({"REDIS_URL": url}).pulse.registry
    pipe, ids, now = registry.pipeline(), [], time.time() - count
    for number in range(count):
        task_id = f"seed-{number:05d}-{uuid.uuid4().hex[:6]}"
        registry.write(task_id, "failed", fields={
            "name": "tasks.demo.echo", "state": "FAILURE", "queue": queue, "args": f"({number},)",
            "kwargs": "{}", "call": {"args": [number], "kwargs": {}},
            "failure": {"exc_type": "ValueError", "exc_message": "seeded", "traceback": None, "details": {}},
        }, now=now + number, client=pipe)
        ids.append(task_id)
    registry.execute(pipe)
    registry.client.close()
    return ids


@pytest.fixture
def restart_db(redis_url) -> Iterator[str]:
    url = db_url(redis_url, RESTART_DB)
    flush_db(url)
    yield url
    flush_db(url)


def test_a_job_whose_server_is_killed_is_resumed_by_the_next_and_acts_on_each_task_at_most_once(restart_db):
    queue = f"nowhere-{mark()}"
    ids = seed_failed(restart_db, 2500, queue)
    with own_server(restart_db, "web-bulk-a") as (proc, first):
        job = start(first, "replay", {"status": "failed", "name": "tasks.demo.echo"}, cap=5000).json()
        wait_until(lambda: first.api("GET", f"/api/bulk/{job['id']}").json()["done"] >= 200, 60, 0.05,
                   "the job to be under way")
        devstack.stop(proc, sig=signal.SIGKILL)  # no goodbye: its lease is left to run out
    client = redis.Redis.from_url(restart_db)
    at_kill = int(client.hget(f"pulse:bulk:{job['id']}", "pos"))
    assert 0 < at_kill < 2500 and as_text(client.hget(f"pulse:bulk:{job['id']}", "status")) == "running"

    with own_server(restart_db, "web-bulk-b") as (_proc, second):
        interrupted = second.api("GET", f"/api/bulk/{job['id']}").json()
        assert interrupted["status"] in ("running", "finished")
        done = finished_job(second, job["id"], timeout=120)
        record = second.api("GET", f"/api/tasks/{job['id']}").json()
    assert done["status"] == "finished" and done["resumed"] == 1
    assert done["acted"] + done["not_eligible"] + done["errors"] + done["uncertain"] == 2500
    assert done["uncertain"] <= 1 and done["errors"] == 0  # at most the task it was on when killed
    counts = replays_of(restart_db, "pulse:", ids)
    assert max(counts.values()) == 1 and sum(counts.values()) >= done["acted"]
    # One message per replay, none twice. The one task that may be uncertain can have its message
    # sent without its replay recorded (killed between the publish and the record's write).
    assert sum(counts.values()) <= client.llen(queue) <= sum(counts.values()) + done["uncertain"]
    assert record["status"] == "finished" and record["progress"]["percent"] == 100
    client.close()


def test_a_cancelled_job_stops_and_says_so(restart_db):
    seed_failed(restart_db, 1500, f"nowhere-{mark()}")
    with own_server(restart_db, "web-bulk-cancel") as (_proc, stack):
        job = start(stack, "skip", {"status": "failed"}).json()
        cancelled = stack.api("POST", f"/api/bulk/{job['id']}/cancel", json={"reason": "wrong filter"})
        assert cancelled.status_code == 200, cancelled.text
        ended = finished_job(stack, job["id"])
        record = stack.api("GET", f"/api/tasks/{job['id']}").json()
        audit = stack.api("GET", "/api/audit", params={"limit": 20}).json()["entries"]
    assert ended["status"] == "cancelled" and ended["acted"] < 1500
    assert record["status"] == "revoked"
    assert any(e["action"] == "bulk-cancel" and e["detail"]["reason"] == "wrong filter" for e in audit)


# -- RabbitMQ --------------------------------------------------------------------------------------


def test_on_rabbitmq_a_bulk_replay_and_revoke(redis_url, rabbitmq_url):
    url = db_url(redis_url, AMQP_DB)
    flush_db(url)
    try:
        with own_server(url, "web-bulk-amqp", BROKER_URL=rabbitmq_url) as (_proc, stack), \
                own_worker(url, "bulkamqp", BROKER_URL=rabbitmq_url):
            label = mark()
            ids = failed_tasks(stack, label, 2)
            filters = {"q": f"kwargs:input={label}", "status": "failed"}
            job = finished_job(stack, start(stack, "replay", filters).json()["id"])
            assert job["acted"] == 2
            for task_id in ids:
                replay = stack.api("GET", f"/api/tasks/{task_id}").json()["replayed_by"]
                stack.wait_for(replay, "failed")  # run again by the worker, through RabbitMQ

            total = 800_000 + random.randrange(99_999)
            queued = [stack.launch("tasks.demo.count", total=total, delay=0.05) for _ in range(3)]
            stack.wait_for(queued[0], "running")
            terminate = start(stack, "terminate", {"q": f"kwargs:total={total}"})
            revoke = finished_job(stack, terminate.json()["id"])
            assert revoke["acted"] == 3
            for task_id in queued:
                stack.wait_for(task_id, "revoked", timeout=30)
    finally:
        flush_db(url)


def test_the_failure_inbox_groups_failures_and_a_group_is_acted_on_through_a_bulk_action(stack):
    name, label = "tasks.demo.fail_with_details", mark()
    ids = failed_tasks(stack, label, 2)

    def group():
        inbox = assert_documented("GET", "/api/failures", stack.api("GET", "/api/failures"))
        return next((g for g in inbox["groups"] if g["name"] == name and g["exc_type"] == "ValueError"), None)

    before = group()
    assert before["count"] >= 2 and before["last_seen"] >= before["first_seen"]
    assert [t["id"] for t in before["sample"][:2]] == ids[::-1]  # the newest first
    assert {t["message"] for t in before["sample"][:2]} == {"record 1 could not be parsed"}
    listed = stack.api("GET", "/api/tasks", params={"failure_group": before["id"], "limit": 500}).json()
    assert set(ids) <= {t["id"] for t in listed["tasks"]}

    # The group, narrowed to this test's own tasks (other tests' failures share it).
    filters = {"failure_group": before["id"], "q": f"kwargs:input={label}"}
    preview = stack.api("GET", "/api/bulk/preview", params={"action": "skip", **filters}).json()
    assert (preview["matched"], preview["eligible"]) == (2, 2)
    job = finished_job(stack, start(stack, "skip", filters).json()["id"])
    assert job["acted"] == 2
    after = group()
    assert (after["count"] if after else 0) == before["count"] - 2
    assert stack.api("GET", f"/api/tasks/{ids[0]}").json()["status"] == "skipped"


def test_a_bulk_action_record_is_cancelled_not_revoked(stack):
    label = mark()
    failed_tasks(stack, label, 1)
    job = finished_job(stack, start(stack, "skip", {"q": f"kwargs:input={label}"}).json()["id"])
    stack.api("POST", f"/api/tasks/{job['id']}/skip")  # nothing to skip: a finished job
    # A running one would be revocable by its status; the answer names the way to stop it instead.
    client = redis.Redis.from_url(stack.redis_url)
    try:
        client.hset(f"pulse:t:{job['id']}", "status", "running")
        refused = stack.api("POST", f"/api/tasks/{job['id']}/revoke")
    finally:
        client.hset(f"pulse:t:{job['id']}", "status", "finished")
        client.close()
    assert refused.status_code == 409 and f"/api/bulk/{job['id']}/cancel" in refused.json()["error"]
