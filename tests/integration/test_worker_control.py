"""Worker control (``/api/workers/<name>/...``) against a real server and real workers.

A prefork worker and a threads worker serve the whole module; a third one (prefork, autoscaling,
with pool restarts allowed) is frozen, then shut down, in a test of its own. Every answer is
checked against the OpenAPI description; every command against the audit log.
"""

import os
import signal
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from ..conftest import Stack, db_url, fresh_server, own_server, own_worker, producer_app, wait_until
from .test_openapi import assert_documented

pytestmark = pytest.mark.integration

# Shared with test_worker_garbage, which runs in the same session one module at a time and flushes
# it first: flushed here before and after.
CONTROL_DB = 14
VIEWER = "viewer-token-for-worker-control-0123456789"
WAIT = 1.5  # the server's bound on a reply (pulse.server.model.control.TIMEOUT)
ONE = "/api/workers/{name}"


@pytest.fixture(scope="module")
def control_stack(redis_url) -> Iterator[Stack]:
    with fresh_server(redis_url, CONTROL_DB, "web-control", PULSE_VIEWER_TOKEN=VIEWER) as stack:
        yield stack


def seen(stack: Stack, name: str) -> str:
    """The full hostname of worker ``name@...`` once the server's monitor has it online."""
    def online() -> str | None:
        for worker in stack.api("GET", "/api/workers").json()["workers"]:
            if worker["hostname"].startswith(f"{name}@") and worker["online"]:
                return worker["hostname"]
        return None
    return wait_until(online, 30, 0.2, f"the monitor to see {name}")


@pytest.fixture(scope="module")
def prefork(control_stack) -> Iterator[str]:
    with own_worker(control_stack.redis_url, "ctlprefork", concurrency=2):
        yield seen(control_stack, "ctlprefork")


@pytest.fixture(scope="module")
def threads(control_stack) -> Iterator[str]:
    with own_worker(control_stack.redis_url, "ctlthreads", concurrency=2, pool="threads"):
        yield seen(control_stack, "ctlthreads")


def path_of(worker: str, suffix: str = "") -> str:
    return f"/api/workers/{quote(worker, safe='@')}{suffix}"


def send(stack: Stack, worker: str, suffix: str, token: str | None = "", reason: str | None = "a test",
         **body) -> requests.Response:
    """POST a command; the answer is checked against the description of its route."""
    payload = {**body, **({"reason": reason} if reason is not None else {})}
    response = stack.api("POST", path_of(worker, suffix), token=token, json=payload)
    if response.status_code != 401:
        assert_documented("POST", ONE + suffix, response)
    return response


def reports(stack: Stack, worker: str, token: str | None = "") -> requests.Response:
    response = stack.api("GET", path_of(worker), token=token)
    assert_documented("GET", ONE, response)
    return response


def pool(stack: Stack, worker: str) -> dict:
    answer = reports(stack, worker)
    assert answer.status_code == 200, answer.text
    return answer.json()["pool"]


def audited(stack: Stack, action: str, worker: str) -> list[dict]:
    entries = stack.api("GET", "/api/audit", params={"limit": 1000}).json()["entries"]
    return [entry for entry in entries if entry["action"] == action and entry["task"] == worker]


def test_a_worker_reports_its_pool_queues_tasks_and_configuration(control_stack, prefork, threads):
    stack = control_stack
    answer = reports(stack, prefork)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["answered"], body["no_answer"], body["online"]) == ([prefork], [], True)
    assert body["waited"] < WAIT
    assert body["pool"]["kind"] == "prefork" and body["pool"]["size"] == 2
    assert len(body["pool"]["processes"]) == 2 and body["pool"]["autoscaler"] is None
    got = body["reports"]
    names = {task["name"] for task in got["registered"]}
    assert {"tasks.demo.count", "tasks.demo.crash"} <= names
    assert [queue["name"] for queue in got["active_queues"]] == ["celery"]
    assert got["stats"]["pool"]["max-concurrency"] == 2
    assert isinstance(got["conf"], dict)
    assert (got["active"], got["reserved"], got["scheduled"]) == ([], [], [])
    password = stack.redis_url.split(":")[2].split("@")[0]
    assert password and password not in answer.text, "the worker's configuration leaked the broker password"

    threaded = pool(stack, threads)
    assert (threaded["kind"], threaded["size"], threaded["processes"]) == ("threads", 2, None)


def test_pool_grow_and_shrink_change_the_prefork_pool(control_stack, prefork):
    stack = control_stack
    grown = send(stack, prefork, "/pool/grow", n=1, reason="more room for the nightly batch")
    assert grown.status_code == 200, grown.text
    body = grown.json()
    assert (body["outcome"], body["answered"], body["no_answer"]) == ("ok", [prefork], [])
    assert body["replies"] == {prefork: {"ok": "pool will grow"}}
    wait_until(lambda: pool(stack, prefork)["size"] == 3, 20, 0.3, "a third pool process")

    shrunk = send(stack, prefork, "/pool/shrink", n=1, reason="batch done")
    assert (shrunk.status_code, shrunk.json()["outcome"]) == (200, "ok"), shrunk.text
    wait_until(lambda: pool(stack, prefork)["size"] == 2, 20, 0.3, "back to two pool processes")

    emptied = send(stack, prefork, "/pool/shrink", n=2)  # would leave no process: not sent
    assert (emptied.status_code, emptied.json()["outcome"]) == (409, "refused")
    assert "would leave none" in emptied.json()["error"]
    assert pool(stack, prefork)["size"] == 2

    entry = audited(stack, "worker-pool-grow", prefork)[0]
    assert entry["detail"]["reason"] == "more room for the nightly batch"
    assert (entry["detail"]["outcome"], entry["detail"]["arguments"]) == ("ok", {"n": 1})
    assert entry["detail"]["replies"] == {prefork: "pool will grow"}
    assert entry["who"].startswith("operator (token)")
    outcomes = [e["detail"]["outcome"] for e in audited(stack, "worker-pool-shrink", prefork)]
    assert outcomes[:2] == ["refused", "ok"]  # newest first


def test_a_threads_pool_refuses_what_it_cannot_do_with_409(control_stack, threads):
    stack = control_stack
    for suffix, body, why in [("/pool/grow", {"n": 1}, "threads pool, whose size is fixed"),
                              ("/pool/shrink", {"n": 1}, "threads pool, whose size is fixed"),
                              ("/pool/restart", {}, "threads pool, which cannot restart"),
                              ("/pool/autoscale", {"max": 3, "min": 1}, "autoscale is off")]:
        answer = send(stack, threads, suffix, **body)
        assert answer.status_code == 409, (suffix, answer.text)
        assert answer.json()["outcome"] == "refused" and why in answer.json()["error"], answer.text
        assert answer.json()["answered"] == []  # nothing was sent
    assert audited(stack, "worker-pool-grow", threads)[0]["detail"]["outcome"] == "refused"
    assert pool(stack, threads)["size"] == 2


def test_a_pool_restart_is_refused_without_worker_pool_restarts(control_stack, prefork):
    answer = send(control_stack, prefork, "/pool/restart")
    assert answer.status_code == 409, answer.text
    assert "worker_pool_restarts" in answer.json()["error"]


def active_queues(stack: Stack, worker: str) -> set[str]:
    return {queue["name"] for queue in reports(stack, worker).json()["reports"]["active_queues"]}


def test_a_consumer_is_added_and_cancelled(control_stack, prefork, threads):
    stack, queue = control_stack, "ctl-extra"
    added = send(stack, prefork, "/consumers/add", queue=queue, reason="drain the extra queue")
    assert (added.status_code, added.json()["replies"]) == (200, {prefork: {"ok": f"add consumer {queue}"}})
    wait_until(lambda: queue in active_queues(stack, prefork), 10, 0.3, "the worker to consume the queue")
    assert queue not in active_queues(stack, threads)
    # It consumes the queue for real: a task sent there runs on it, and shows in its reports meanwhile.
    with producer_app(stack.env) as app:
        running = app.send_task("tasks.demo.count", kwargs={"total": 30, "delay": 0.1}, queue=queue).id
        later = app.send_task("tasks.demo.count", kwargs={"total": 1}, queue=queue, countdown=60).id
    task = stack.wait_for(running, "running")
    assert task["worker"] == prefork
    def scheduled() -> dict | None:
        got = reports(stack, prefork).json()["reports"]
        return got if got["scheduled"] else None

    got = wait_until(scheduled, 10, 0.3, "the countdown task in the worker's schedule")
    assert running in [request["id"] for request in got["active"]]
    assert [entry["request"]["id"] for entry in got["scheduled"]] == [later]
    stack.api("POST", f"/api/tasks/{later}/revoke")

    cancelled = send(stack, prefork, "/consumers/cancel", queue=queue, reason="extra queue drained")
    assert (cancelled.status_code, cancelled.json()["outcome"]) == (200, "ok")
    wait_until(lambda: queue not in active_queues(stack, prefork), 10, 0.3, "the worker to stop consuming")
    added = audited(stack, "worker-add-consumer", prefork)
    assert [entry["detail"]["arguments"] for entry in added] == [{"queue": queue}]
    assert audited(stack, "worker-cancel-consumer", prefork)[0]["detail"]["reason"] == "extra queue drained"


def registered(stack: Stack, worker: str, task: str) -> dict:
    tasks = reports(stack, worker).json()["reports"]["registered"]
    return next(entry for entry in tasks if entry["name"] == task)


def test_rate_and_time_limits_are_acknowledged(control_stack, prefork):
    stack, task = control_stack, "tasks.demo.crash"
    rated = send(stack, prefork, "/rate-limit", task=task, rate_limit="10/m")
    assert rated.status_code == 200, rated.text
    assert rated.json()["replies"][prefork] == {"ok": "new rate limit set successfully"}
    assert registered(stack, prefork, task)["rate_limit"] == "10/m"
    limited = send(stack, prefork, "/time-limit", task=task, soft=30, hard=60)
    assert (limited.status_code, limited.json()["outcome"]) == (200, "ok"), limited.text
    assert registered(stack, prefork, task) == {"name": task, "rate_limit": "10/m", "time_limit": "60.0",
                                                "soft_time_limit": "30.0"}
    assert send(stack, prefork, "/rate-limit", task=task, rate_limit="0").status_code == 200
    assert send(stack, prefork, "/time-limit", task=task, soft=None, hard=None).status_code == 200
    assert registered(stack, prefork, task) == {"name": task, "rate_limit": "0", "time_limit": None,
                                                "soft_time_limit": None}

    unknown = send(stack, prefork, "/rate-limit", task="no.such.task", rate_limit="1/s")
    assert (unknown.status_code, unknown.json()["outcome"]) == (409, "error")
    assert "unknown task" in unknown.json()["error"]
    for suffix, body in [("/rate-limit", {"task": task, "rate_limit": "fast"}),
                         ("/rate-limit", {"task": task}),
                         ("/time-limit", {"task": task, "soft": 60, "hard": 30}),
                         ("/time-limit", {"task": task, "hard": -1}),
                         ("/time-limit", {"task": task, "hard": 1e12}),
                         ("/time-limit", {"task": "", "hard": 1}),
                         ("/pool/grow", {"n": 0}), ("/pool/grow", {"n": 10_000}), ("/pool/grow", {"n": True}),
                         ("/pool/autoscale", {"max": 1, "min": 2}),
                         ("/consumers/add", {"queue": "a\nb"}), ("/consumers/add", {"queue": "q" * 256})]:
        assert send(stack, prefork, suffix, **body).status_code == 400, (suffix, body)
    outcomes = [e["detail"]["outcome"] for e in audited(stack, "worker-rate-limit", prefork)]
    assert outcomes[:3] == ["error", "ok", "ok"]


def test_a_reason_is_required(control_stack, prefork):
    stack = control_stack
    for reason in (None, "", "   ", "x" * 501, 42):
        answer = send(stack, prefork, "/pool/grow", reason=reason)
        assert answer.status_code == 400, (reason, answer.text)
        assert '"reason" is required' in answer.json()["error"]
    response = stack.api("POST", path_of(prefork, "/pool/grow"), data="not json",
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert send(stack, prefork, "/pool/grow", n=1, reason="x" * 500).status_code == 200
    assert send(stack, prefork, "/pool/shrink", n=1, reason="undo").status_code == 200


def test_a_viewer_reads_everything_and_changes_nothing(control_stack, prefork):
    stack = control_stack
    assert reports(stack, prefork, token=VIEWER).status_code == 200
    before = len(stack.api("GET", "/api/audit", params={"limit": 1000}).json()["entries"])
    for suffix, body in [("/pool/grow", {"n": 1}), ("/pool/shrink", {"n": 1}),
                         ("/pool/autoscale", {"max": 2, "min": 1}), ("/pool/restart", {}), ("/shutdown", {}),
                         ("/consumers/add", {"queue": "q"}), ("/consumers/cancel", {"queue": "celery"}),
                         ("/rate-limit", {"task": "tasks.demo.count", "rate_limit": "1/s"}),
                         ("/time-limit", {"task": "tasks.demo.count", "hard": 1})]:
        answer = send(stack, prefork, suffix, token=VIEWER, **body)
        assert answer.status_code == 403, (suffix, answer.text)
        assert send(stack, prefork, suffix, token=None, **body).status_code == 401
    assert len(stack.api("GET", "/api/audit", params={"limit": 1000}).json()["entries"]) == before
    wait_until(lambda: pool(stack, prefork)["size"] == 2, 20, 0.3, "two pool processes, as before")


@pytest.mark.parametrize("name", ['<img src=x onerror="alert(1)">@vm', "<script>@host", "a b@host",
                                  "tab\t@host", "line\nfeed@host", "nul\x00@host", "no-at-sign",
                                  "two@at@signs", "é@host", "x" * 251 + "@host", "@host", "name@"])
def test_a_malformed_worker_name_is_answered_400(control_stack, name):
    stack = control_stack
    answer = reports(stack, name)
    assert answer.status_code == 400, answer.text
    assert "malformed worker name" in answer.json()["error"] and "<" not in answer.json()["error"]
    assert send(stack, name, "/pool/grow", n=1).status_code == 400


def test_a_worker_never_seen_is_answered_404(control_stack):
    assert reports(control_stack, "ghost@nowhere").status_code == 404
    assert send(control_stack, "ghost@nowhere", "/shutdown").status_code == 404
    assert send(control_stack, "ghost@nowhere", "/shutdown", reason=None).status_code == 404  # 404 first


def test_autoscale_restart_silence_and_shutdown(control_stack):
    """A worker of its own: its autoscale range changes, its pool restarts (it allows it), frozen it
    is listed under no answer within the bound while the server answers others, then it shuts down."""
    stack = control_stack
    with own_worker(stack.redis_url, "ctldoomed", concurrency=3, app="tests.control_tasks",
                    options=("--autoscale=3,1",)) as proc:
        doomed = seen(stack, "ctldoomed")
        assert pool(stack, doomed)["autoscaler"] == {"max": 3, "min": 1, "qty": 0}
        grow = send(stack, doomed, "/pool/grow", n=1)
        assert grow.status_code == 409 and "autoscale range instead" in grow.json()["error"]

        scaled = send(stack, doomed, "/pool/autoscale", max=4, min=2, reason="busy day")
        assert scaled.status_code == 200, scaled.text
        assert scaled.json()["replies"] == {doomed: {"ok": "autoscale now max=4 min=2"}}
        wait_until(lambda: (lambda p: p["autoscaler"]["max"] == 4 and p["size"] >= 2)(pool(stack, doomed)),
                   20, 0.3, "the new autoscale range")

        restarted = send(stack, doomed, "/pool/restart", reason="new code deployed")
        assert restarted.status_code == 200, restarted.text
        assert restarted.json()["replies"] == {doomed: {"ok": "reload started"}}

        os.kill(proc.pid, signal.SIGSTOP)
        try:
            answers: list[requests.Response] = []
            caller = threading.Thread(target=lambda: answers.append(send(
                stack, doomed, "/rate-limit", task="tasks.demo.count", rate_limit="5/s",
                reason="probing a frozen worker")))
            started = time.monotonic()
            caller.start()
            health: list[float] = []
            while caller.is_alive():  # the server answers others while that call waits on the worker
                asked = time.monotonic()
                assert requests.get(stack.base_url + "/healthz", timeout=5).status_code == 200
                health.append(time.monotonic() - asked)
                time.sleep(0.1)
            took = time.monotonic() - started
            caller.join()
            silent = answers[0]
            assert silent.status_code == 504, silent.text
            body = silent.json()
            assert (body["outcome"], body["answered"], body["no_answer"]) == ("no answer", [], [doomed])
            assert WAIT <= took < WAIT + 2.0 and "did not answer within 1.5 s" in body["error"]
            assert len(health) >= 5 and max(health) < 0.5, health
            assert reports(stack, doomed).status_code == 504
            unsent = send(stack, doomed, "/shutdown", reason="frozen")
            assert unsent.status_code == 504 and "shutdown was not sent" in unsent.json()["error"]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        entry = audited(stack, "worker-rate-limit", doomed)[0]
        assert (entry["detail"]["outcome"], entry["detail"]["no_answer"]) == ("no answer", [doomed])

        stopped = send(stack, doomed, "/shutdown", reason="decommissioned")
        assert stopped.status_code == 202, stopped.text
        assert stopped.json()["outcome"] == "sent" and stopped.json()["replies"] == {doomed: {"ok": "pong"}}
        assert proc.wait(30) == 0  # a warm shutdown: it exits by itself, cleanly
        wait_until(lambda: not any(w["hostname"] == doomed and w["online"]
                                   for w in stack.api("GET", "/api/workers").json()["workers"]),
                   10, 0.2, "the worker offline")
        gone = send(stack, doomed, "/pool/restart")
        assert (gone.status_code, gone.json()["no_answer"]) == (504, [doomed])
        shutdowns = audited(stack, "worker-shutdown", doomed)
        assert [entry["detail"]["outcome"] for entry in shutdowns] == ["sent", "no answer"]
        assert audited(stack, "worker-autoscale", doomed)[0]["detail"]["reason"] == "busy day"


def test_worker_control_works_the_same_on_rabbitmq(redis_url, rabbitmq_url):
    """Celery's remote control over AMQP (a fanout exchange, reply queues of their own)."""
    url = db_url(redis_url, CONTROL_DB)
    with own_server(url, "web-control-amqp", BROKER_URL=rabbitmq_url) as (_proc, stack), \
            own_worker(url, "ctlamqp", concurrency=1, BROKER_URL=rabbitmq_url):
        worker = seen(stack, "ctlamqp")
        assert (pool(stack, worker)["kind"], pool(stack, worker)["size"]) == ("prefork", 1)
        grown = send(stack, worker, "/pool/grow", n=1, reason="amqp")
        assert (grown.status_code, grown.json()["replies"]) == (200, {worker: {"ok": "pool will grow"}})
        wait_until(lambda: pool(stack, worker)["size"] == 2, 20, 0.3, "a second pool process")
        added = send(stack, worker, "/consumers/add", queue="ctl-amqp", reason="amqp")
        assert added.status_code == 200, added.text
        wait_until(lambda: "ctl-amqp" in active_queues(stack, worker), 10, 0.3, "the new consumer")
        assert send(stack, "ghost@nowhere", "/pool/grow").status_code == 404
