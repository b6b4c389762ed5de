"""Live task logs through real workers (prefork, threads, eventlet, gevent) and the real server: the lines
of each running task, numbered, read after a number and pushed live, and kept from tokens."""

import threading
import time

import pytest
import requests

from pulse.agent.tokens import mint_token
from pulse.record.logs import KEEP, LINE_LIMIT
from pulse.settings import grant_key_from_env
from tests.hostile_tasks import LOG_FLOOD, ODD_LOG_LINES, RAW_LOG_BYTES

from ..conftest import db_url, flush_db, own_server, own_worker, producer_app, wait_until
from .test_absurd_values import hostile_stack
from .test_openapi import assert_documented

pytestmark = pytest.mark.integration

POOLS_DB = 4


def logs(stack, task_id: str, **params) -> dict:
    answer = stack.api("GET", f"/api/tasks/{task_id}/logs", params=params)
    return assert_documented("GET", "/api/tasks/{task_id}/logs", answer)


def test_a_tasks_lines_are_read_after_a_number_and_pushed_live(stack):
    client = stack.socket()
    pushed: list[dict] = []
    client.on("log", pushed.append)
    try:
        task_id = stack.launch("tasks.demo.count", total=20, delay=0.05)
        assert client.call("subscribe", {"task": task_id}, timeout=10)["task"]["id"] == task_id
        stack.wait_for(task_id, "finished")
        read = wait_until(lambda: (r := logs(stack, task_id))["last"] == 21 and r, 10, 0.1, "all the lines")
        wait_until(lambda: pushed and pushed[-1]["last"] == 21, 10, 0.1, "the last push")
    finally:
        client.disconnect()
    assert [line["message"] for line in read["lines"]] == ["counting to 20",
                                                           *(f"step {n} of 20" for n in range(1, 21))]
    assert [line["seq"] for line in read["lines"]] == list(range(1, 22))
    assert {line["level"] for line in read["lines"]} == {"INFO"} and read["dropped"] == read["lost"] == 0
    assert [line["seq"] for line in logs(stack, task_id, after=18)["lines"]] == [19, 20, 21]
    # The pushes are batches (at most every 0.25 s) and add up to the same lines, in order.
    seen = [line for packet in pushed for line in packet["lines"] or []]
    assert [line["seq"] for line in seen] == list(range(pushed[0]["first"], 22))
    assert len(pushed) < 21


def test_a_failure_logs_its_error_line(stack):
    task_id = stack.launch("tasks.demo.fail_with_details", step=2, delay=0.01, input="<script>x</script>")
    stack.wait_for(task_id, "failed")
    lines = wait_until(lambda: (r := logs(stack, task_id))["last"] == 3 and r["lines"], 10, 0.1, "the lines")
    assert lines[-1]["level"] == "ERROR"
    assert lines[-1]["message"] == "record 2 could not be parsed: '<script>x</script>'"


@pytest.mark.parametrize("bad", ["after=-1", "after=x", "limit=0", "limit=1001", f"after={'9' * 16}"])
def test_bad_numbers_are_answered_400(stack, bad):
    task_id = stack.launch("tasks.demo.count", total=1, delay=0.01)
    answer = stack.api("GET", f"/api/tasks/{task_id}/logs?{bad}")
    assert answer.status_code == 400 and "line number" in answer.json()["error"]


def test_unknown_and_malformed_ids(stack):
    assert stack.api("GET", "/api/tasks/never-seen-0/logs").status_code == 404
    assert stack.api("GET", "/api/tasks/bad%20id/logs").status_code == 400


def test_a_per_task_token_reads_lines_only_of_a_task_that_exposes_them(stack):
    task_id = stack.launch("tasks.demo.count", total=2, delay=0.01)
    stack.wait_for(task_id, "finished")
    token, _expires = mint_token(grant_key_from_env(stack.env), task_id)
    refused = stack.api("GET", f"/api/tasks/{task_id}/logs", token=token)
    assert refused.status_code == 403 and "does not show its log lines" in refused.json()["error"]
    stack.celery.pulse.registry.write(task_id, fields={"logs_exposed": True})
    assert stack.api("GET", f"/api/tasks/{task_id}/logs", token=token).status_code == 200
    other = stack.launch("tasks.demo.count", total=1, delay=0.01)
    assert stack.api("GET", f"/api/tasks/{other}/logs", token=token).status_code == 403


@pytest.mark.parametrize("pool, concurrency", [("prefork", 2), ("threads", 4), ("eventlet", 8),
                                                 ("gevent", 8)])
def test_each_pool_keeps_every_tasks_lines_to_itself(redis_url, pool, concurrency):
    url = db_url(redis_url, POOLS_DB)
    flush_db(url)
    try:
        with own_server(url, f"web-logs-{pool}") as (_proc, stack), \
                own_worker(url, f"logs{pool}", concurrency=concurrency, pool=pool):
            totals = [30 + n for n in range(concurrency)]  # each task's own line count
            ids = [stack.launch("tasks.demo.count", total=total, delay=0.02) for total in totals]
            for task_id in ids:
                stack.wait_for(task_id, "finished", timeout=60)
            spans = []
            for task_id, total in zip(ids, totals, strict=True):
                read = wait_until(lambda t=task_id, n=total: (r := logs(stack, t))["last"] == n + 1 and r,
                                  10, 0.1, f"the lines of {task_id}")
                assert [line["message"] for line in read["lines"]] == [
                    f"counting to {total}", *(f"step {n} of {total}" for n in range(1, total + 1))]
                spans.append((read["lines"][0]["at"], read["lines"][-1]["at"]))
            # They all ran at once: the pool had the tasks' lines interleaved, and kept them apart.
            assert max(start for start, _ in spans) < min(end for _, end in spans)
    finally:
        flush_db(url)


def test_lines_keep_coming_while_many_tasks_log_at_once(stack):
    ids: list[str] = []
    def launch() -> None:
        ids.append(stack.launch("tasks.demo.count", total=40, delay=0.005))

    threads = [threading.Thread(target=launch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 60
    for task_id in ids:
        stack.wait_for(task_id, "finished", timeout=max(1.0, deadline - time.monotonic()))
        wait_until(lambda t=task_id: logs(stack, t)["last"] == 41, 10, 0.1, "every line")


@pytest.fixture(scope="module")
def hostile(redis_url):
    """A thread-pool worker of tests/hostile_tasks.py and a server of their own."""
    url = db_url(redis_url, POOLS_DB)
    try:
        with hostile_stack(url, "hostilelogs", "worker-hostile-logs", "web-hostile-logs") as running, \
                producer_app(running.env) as producer:
            yield running, producer
    finally:
        flush_db(url)


def test_odd_lines_reach_the_api_and_the_page_as_they_were_logged(hostile):
    stack, producer = hostile
    client = stack.socket()
    pushed: list[dict] = []
    client.on("log", pushed.append)
    try:
        task_id = "odd-log-lines-0"
        assert "error" not in client.call("subscribe", {"task": task_id}, timeout=10)
        producer.send_task("hostile.log_lines", args=("odd",), task_id=task_id)
        stack.wait_for(task_id, "finished")
        expected = [*ODD_LOG_LINES, repr(RAW_LOG_BYTES)]
        wait_until(lambda: pushed and pushed[-1]["last"] == len(expected), 10, 0.1, "the pushes")
        read = logs(stack, task_id)
    finally:
        client.disconnect()
    assert [line["message"] for line in read["lines"]] == expected
    assert [line["message"] for packet in pushed for line in packet["lines"]] == expected


def test_a_10_mb_line_is_cut_and_the_task_is_unharmed(hostile):
    stack, producer = hostile
    task_id = producer.send_task("hostile.log_lines", args=("huge",)).id
    assert stack.wait_for(task_id, "finished")["result"] == "huge"
    [line] = logs(stack, task_id)["lines"]
    assert line["message"] == f"{'h' * LINE_LIMIT}… ({10_000_000 - LINE_LIMIT} more characters cut)"


def test_a_flood_of_lines_keeps_the_newest_and_the_server_keeps_up(hostile):
    stack, producer = hostile
    dashboard = stack.socket()
    seen: list[dict] = []
    dashboard.on("tasks", seen.extend)
    assert "error" not in dashboard.call("subscribe", {"dashboard": True}, timeout=10)
    page = stack.socket()
    pushes: list[dict] = []
    page.on("log", pushes.append)
    task_id = "log-flood-0"
    assert "error" not in page.call("subscribe", {"task": task_id}, timeout=10)
    health: list[float] = []
    try:
        producer.send_task("hostile.log_lines", args=("flood",), task_id=task_id)
        deadline = time.monotonic() + 60
        while stack.api("GET", f"/api/tasks/{task_id}").json().get("status") != "finished":
            assert time.monotonic() < deadline, "the flooding task did not finish within 60 s"
            started = time.monotonic()
            requests.get(f"{stack.base_url}/healthz", timeout=10).raise_for_status()
            health.append(time.monotonic() - started)
            time.sleep(0.1)
        wait_until(lambda: any(t["id"] == task_id and t["status"] == "finished" for t in seen), 10, 0.1,
                   "the dashboard to show the flood finished")
        newest = f"flood line {LOG_FLOOD - 1}"
        read = wait_until(lambda: (r := logs(stack, task_id))["lines"] and r["lines"][-1]["message"] == newest
                          and r, 10, 0.1, "the last line")
        connected = dashboard.connected and page.connected
    finally:
        dashboard.disconnect()
        page.disconnect()
    record = stack.api("GET", f"/api/tasks/{task_id}").json()
    assert record["result"] == "flood" and record["runtime"] < 30
    assert [line["message"] for line in read["lines"]] == [
        f"flood line {n}" for n in range(LOG_FLOOD - KEEP, LOG_FLOOD)]
    assert (read["dropped"], read["lost"]) == (LOG_FLOOD - KEEP, 0)
    assert health and max(health) < 2.0, health  # the server answered throughout
    assert connected and pushes and pushes[-1]["last"] == read["last"]
