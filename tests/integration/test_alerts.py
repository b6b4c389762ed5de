"""Alerts end to end: two real servers on one Redis, a real worker, and real local HTTP receivers
(one that takes notices, one that is down, slow or answers 500). Each notice reaches each receiver
once however many servers run, and a server that dies hands alerting over to the other.

Database 11 (shared with other modules, each flushing it first); everything is stopped by PID.
"""

import re
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from pulse import devstack
from tests.webhook_receiver import Receiver

from ..conftest import Stack, db_url, flush_db, own_server, own_worker, wait_until

pytestmark = pytest.mark.integration

DB = 11
ALONE_DB = 15  # the no-worker test's own (shared with other modules, each flushing it first)
FAST = {"PULSE_ALERT_INTERVAL": "0.5", "PULSE_ALERT_TIMEOUT": "1", "PULSE_WORKER_CHECK_INTERVAL": "1",
        "DEMO_COUNT_EVERY": "3"}


@pytest.fixture(scope="module")
def url(redis_url) -> Iterator[str]:
    url = db_url(redis_url, DB)
    flush_db(url)
    yield url
    flush_db(url)


@pytest.fixture(scope="module")
def worker(url) -> Iterator[None]:
    with own_worker(url, "alertworker", concurrency=2, **FAST):
        yield


@pytest.fixture(scope="module")
def pair(url, worker) -> Iterator[tuple[Stack, Stack]]:
    with own_server(url, "web-alert-a", **FAST) as (_a, first), \
            own_server(url, "web-alert-b", **FAST) as (_b, second):
        yield first, second


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    yield hook
    hook.stop()


def add_rule(stack: Stack, **body) -> str:
    response = stack.api("POST", "/api/alerts", json={"name": "test rule", **body})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def delete_rule(stack: Stack, rule_id: str) -> None:
    assert stack.api("DELETE", f"/api/alerts/{rule_id}").status_code == 200


def notices(receiver: Receiver, rule_id: str) -> list[str]:
    """The statuses of the notices of ``rule_id`` the receiver took, in order (plain bodies)."""
    return [b["status"] for b in receiver.taken() if b.get("rule", {}).get("id") == rule_id]


def test_a_long_running_task_fires_and_resolves_once_on_each_receiver_with_two_servers(pair, receiver):
    first, second = pair
    slack = Receiver().start()
    try:
        rule_id = add_rule(first, kind="long_running", task="tasks.demo.count", threshold=2,
                           webhooks=[{"url": receiver.url}, {"url": slack.url, "format": "slack"}])
        task_id = first.launch("tasks.demo.count", total=12, delay=0.5)  # about 6 s
        wait_until(lambda: notices(receiver, rule_id) == ["firing"], 20, 0.1, "the firing notice")
        firing = receiver.taken("firing")[-1]
        assert firing["value"] > 2 and task_id in firing["detail"]
        assert second.api("GET", f"/api/alerts/{rule_id}").json()["state"]["state"] == "firing"
        first.wait_for(task_id, "finished")
        wait_until(lambda: notices(receiver, rule_id) == ["firing", "resolved"], 20, 0.1, "resolved")
        wait_until(lambda: len(slack.taken()) == 2, 10, 0.1, "both Slack bodies")
        time.sleep(2.0)  # a second server's copy, if any, would have arrived by now
        assert notices(receiver, rule_id) == ["firing", "resolved"]
        assert [b["text"].split(":")[0] for b in slack.taken()] == ["FIRING", "RESOLVED"]
        assert slack.taken()[0]["attachments"][0]["color"] == "danger"
        history = second.api("GET", f"/api/alerts/{rule_id}/history").json()["history"]
        delivered = Counter((e["status"], e["format"]) for e in history if e.get("outcome") == "delivered")
        assert delivered == {("firing", "json"): 1, ("firing", "slack"): 1, ("resolved", "json"): 1,
                             ("resolved", "slack"): 1}
        delete_rule(second, rule_id)
    finally:
        slack.stop()


def test_a_receiver_that_answers_500_or_is_slow_or_down_gets_the_notice_later(pair, receiver):
    first, _ = pair
    receiver.answer = 500
    flaky = add_rule(first, kind="queue_no_consumers", queue="pulse-alerts-nobody",
                     webhooks=[{"url": receiver.url}])
    wait_until(lambda: len(receiver.attempts) >= 2, 20, 0.1, "two refused attempts")
    receiver.answer = 200
    wait_until(lambda: notices(receiver, flaky) == ["firing"], 20, 0.1, "the notice after the 500s")
    history = first.api("GET", f"/api/alerts/{flaky}/history").json()["history"]
    assert [e["http_status"] for e in history if e["event"] == "delivery"][-1] == 500
    assert history[0]["outcome"] == "delivered" and history[0]["attempt"] >= 3
    delete_rule(first, flaky)

    down = Receiver()  # not started: connections to its port are refused
    slow = Receiver().start()
    slow.delay = 3.0  # longer than PULSE_ALERT_TIMEOUT
    try:
        rule_id = add_rule(first, kind="queue_no_consumers", queue="pulse-alerts-nobody-2",
                           webhooks=[{"url": down.url}, {"url": slow.url}])
        wait_until(lambda: any(e.get("outcome") == "will retry" and e["url"].startswith("http://127.0.0.1")
                               for e in first.api("GET", f"/api/alerts/{rule_id}/history").json()["history"]
                               if "refused" in (e.get("error") or "").lower()), 20, 0.1, "a refused attempt")
        down.start()
        slow.delay = 0.0
        wait_until(lambda: notices(down, rule_id) == ["firing"], 30, 0.1, "the notice once it is up")
        wait_until(lambda: "firing" in notices(slow, rule_id), 30, 0.1, "the slow receiver's notice")
        history = first.api("GET", f"/api/alerts/{rule_id}/history").json()["history"]
        assert any("timed out" in (e.get("error") or "") for e in history), history
        # A receiver that took a notice too slowly may get it again: with the same id, to drop it by.
        assert len({b["id"] for b in slow.taken()}) == 1
        delete_rule(first, rule_id)
    finally:
        down.stop()
        slow.stop()


def test_a_queue_whose_oldest_message_waits_too_long_fires_until_it_is_purged(pair, receiver):
    first, _ = pair
    queue = "pulse-alerts-waiting"
    rule_id = add_rule(first, kind="queue_age", queue=queue, threshold=1, webhooks=[{"url": receiver.url}])
    first.celery.send_task("tasks.demo.echo", kwargs={"value": 1}, queue=queue)
    wait_until(lambda: notices(receiver, rule_id) == ["firing"], 20, 0.1, "the firing notice")
    assert receiver.taken("firing")[-1]["value"] > 1
    metrics = first.api("GET", "/metrics").text  # the gauge a Prometheus rule would judge
    gauge = re.escape(f'pulse_queue_oldest_message_age_seconds{{queue="{queue}"}} ')
    [age] = re.findall(gauge + r"([0-9.]+)", metrics)
    assert float(age) > 1
    purged = first.api("POST", f"/api/queues/{queue}/purge", json={"reason": "alert test"})
    assert purged.status_code == 200 and purged.json()["purged"] == 1
    wait_until(lambda: notices(receiver, rule_id) == ["firing", "resolved"], 20, 0.1, "the resolved notice")
    delete_rule(first, rule_id)


def test_failures_of_a_task_name_fire_a_failure_count_rule(pair, receiver):
    first, _ = pair
    rule_id = add_rule(first, kind="failure_count", task="tasks.demo.fail_with_details", threshold=2,
                       window=60, webhooks=[{"url": receiver.url, "format": "json"}])
    for _ in range(2):
        first.wait_for(first.launch("tasks.demo.fail_with_details", step=1, delay=0.01), "failed")
    wait_until(lambda: notices(receiver, rule_id) == ["firing"], 20, 0.1, "the firing notice")
    firing = receiver.taken("firing")[-1]
    assert firing["value"] >= 2 and "tasks.demo.fail_with_details" in firing["detail"]
    delete_rule(first, rule_id)


def test_a_missed_periodic_run_fires_and_the_next_run_resolves_it(pair, receiver):
    first, _ = pair
    rule_id = add_rule(first, kind="periodic_missed", entry="demo-count", threshold=1,
                       webhooks=[{"url": receiver.url}])
    # beat is not running: one run of the entry, then none (DEMO_COUNT_EVERY=3 s)
    ran = first.api("POST", "/api/periodic/demo-count/run", json={"reason": "alert test"})
    assert ran.status_code in (200, 202), ran.text
    try:
        wait_until(lambda: notices(receiver, rule_id) == ["firing"], 30, 0.1, "the missed-run notice")
    except AssertionError:
        print(first.api("GET", f"/api/alerts/{rule_id}").json(), first.api("GET", "/api/periodic").json())
        raise
    assert "demo-count" in receiver.taken("firing")[-1]["detail"]
    first.api("POST", "/api/periodic/demo-count/run", json={"reason": "alert test"})
    wait_until(lambda: notices(receiver, rule_id) == ["firing", "resolved"], 30, 0.1, "the resolved notice")
    delete_rule(first, rule_id)


def test_no_worker_fires_and_resolves_and_a_dead_alerting_server_hands_over(redis_url, receiver):
    url = db_url(redis_url, ALONE_DB)  # no worker of the other tests here
    flush_db(url)
    with own_server(url, "web-alert-c", **FAST) as (proc_c, third):
        rule_id = add_rule(third, kind="no_worker", window=1, webhooks=[{"url": receiver.url}])
        wait_until(lambda: third.api("GET", "/api/alerts").json()["evaluated_by"], 20, 0.1, "a leader")
        with own_server(url, "web-alert-d", **FAST) as (_d, fourth):  # started second: not the leader
            wait_until(lambda: notices(receiver, rule_id) == ["firing"], 30, 0.1, "the firing notice")
            devstack.stop(proc_c, signal.SIGKILL)
            with own_worker(url, "alertworker2", **FAST):
                wait_until(lambda: notices(receiver, rule_id) == ["firing", "resolved"], 40, 0.2,
                           "the resolved notice from the remaining server")
                time.sleep(1.0)  # a copy from the dead server's last moments would have arrived
                assert notices(receiver, rule_id) == ["firing", "resolved"]
                assert fourth.api("GET", f"/api/alerts/{rule_id}").json()["state"]["state"] == "ok"
                delete_rule(fourth, rule_id)
    flush_db(url)
