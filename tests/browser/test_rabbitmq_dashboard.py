"""The dashboard live in Chromium with RabbitMQ as the broker: a private RabbitMQ node, Redis as result
backend and registry (database 2, shared with tests/integration/test_rabbitmq.py and flushed before
and after by each), a worker and a server (eventlet) of this module's own, stopped by PID."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.conftest import Stack, db_url, flush_db, own_server, own_worker, wait_until

# The private node's fixture: session-scoped, skipped with the reason (failed under CI=true) when
# this machine cannot run RabbitMQ.
from .conftest import TIMEOUT_MS, log_in, watch_bar_to_100
from .test_dashboard import launch, row

pytestmark = pytest.mark.browser

DB = 2
WORKER = "amqppageworker"


@pytest.fixture(scope="module")
def amqp_page_stack(redis_url, rabbitmq_url) -> Iterator[Stack]:
    url = db_url(redis_url, DB)
    flush_db(url)
    try:
        with own_server(url, "web-amqp-page", BROKER_URL=rabbitmq_url, PULSE_ASYNC_MODE="eventlet") as (
                _proc, stack), own_worker(url, WORKER, concurrency=2, BROKER_URL=rabbitmq_url):
            def online() -> bool:
                listed = stack.api("GET", "/api/workers").json()["workers"]
                return any(w["hostname"].startswith(f"{WORKER}@") and w["online"] for w in listed)

            wait_until(online, 20, 0.2, "the server to hear the worker")
            yield stack
    finally:
        flush_db(url)


def test_a_count_bar_fills_live_on_rabbitmq(page, amqp_page_stack, js_errors):
    stack = amqp_page_stack
    health = stack.api("GET", "/healthz").json()
    assert health["monitor"]["connected"] is True, health
    log_in(page, stack)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)

    task_id = launch(page, "tasks.demo.count", {"total": 20, "delay": 0.1})
    task = row(page, task_id)
    bar = task.locator(".bar[role=progressbar]")
    expect(bar).to_be_attached(timeout=TIMEOUT_MS)
    watch_bar_to_100(bar)
    expect(task).to_have_attribute("data-status", "finished")
    expect(task.locator(".result-value")).to_have_text("20")

    # One more, launched through the API: the page hears of it over the socket alone.
    other = stack.launch("tasks.demo.count", total=15, delay=0.1)
    other_bar = row(page, other).locator(".bar[role=progressbar]")
    expect(other_bar).to_be_attached(timeout=TIMEOUT_MS)
    watch_bar_to_100(other_bar)
    data = stack.api("GET", f"/api/tasks/{other}").json()
    assert data["status"] == "finished" and data["result"] == 15
    assert data["worker"].startswith(f"{WORKER}@")
    assert not js_errors.script_errors()
