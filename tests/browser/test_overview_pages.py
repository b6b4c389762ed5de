"""The overview (/) and workers (/workers) pages in a real browser: live counts and throughput,
queue warnings, workers with their running tasks, recovery after the web server restarts, and
task text that looks like markup shown as text."""

import json
import re
import time

import pytest
import redis
from playwright.sync_api import Page, expect

from pulse import devstack
from tests.conftest import ARTIFACTS, server_env, start_server

from .conftest import TIMEOUT_MS, log_in

pytestmark = pytest.mark.browser
QUEUE = "nobody-listens"
PAYLOAD = '<img src="x" onerror="window.__pwned = true"><script>window.__pwned = true</script>'
PAYLOAD_AS_NAME = '<img src="x" onerror="window.__pwned = true">.task'
# Chromium logs a refused connection as a console error; during an outage that is expected.
OUTAGE_NOISE = ("Failed to load resource", "WebSocket connection to")


def ended_totals(label: str | None) -> tuple[int, int]:
    match = re.search(r"(\d+) finished, (\d+) failed", label or "")
    assert match, f"the chart's aria-label gives no totals: {label!r}"
    return int(match[1]), int(match[2])


def tile(page: Page, status: str):
    return page.locator(f'#count-tiles .tile[data-status="{status}"] .value')


def overview_loaded(page: Page) -> None:
    expect(page.locator("#overview-updated")).to_have_text(re.compile(r"^Updated "))
    expect(page.locator("#throughput-chart")).to_have_attribute(
        "aria-label", re.compile(r"\d+ finished, \d+ failed"))



def session_worker(stack) -> str:
    workers = stack.api("GET", "/api/workers").json()["workers"]
    names = [w["hostname"] for w in workers if w["online"] and w["hostname"].startswith("worker@")]
    assert names, f"the session worker is not online: {workers}"
    return names[0]


def test_overview_counts_and_chart_follow_finishing_tasks(logged_in_page, browser, stack, js_errors):
    page = logged_in_page
    overview_loaded(page)
    chart = page.locator("svg#throughput-chart")
    expect(chart).to_have_attribute("role", "img")
    finished0, failed0 = int(tile(page, "finished").inner_text()), int(tile(page, "failed").inner_text())
    chart_finished0, chart_failed0 = ended_totals(chart.get_attribute("aria-label"))
    rects0 = chart.locator("rect").count()
    page.evaluate("window.__samePage = true")

    for _ in range(2):
        stack.launch("tasks.demo.count", total=3, delay=0.01)
    stack.launch("tasks.demo.crash")

    # The tiles follow the `counts` pushes...
    page.wait_for_function(
        """([finished, failed]) => {
             const count = (status) => Number(document.getElementById(`count-${status}`).textContent);
             return count('finished') >= finished + 2 && count('failed') >= failed + 1;
           }""",
        arg=[finished0, failed0], timeout=TIMEOUT_MS)
    # ...and the chart is re-read because of them (at most every 2 s), well before the 10 s poll.
    page.wait_for_function(
        """([finished, failed]) => {
             const m = /(\\d+) finished, (\\d+) failed/.exec(
               document.getElementById('throughput-chart').getAttribute('aria-label'));
             return m && Number(m[1]) >= finished + 2 && Number(m[2]) >= failed + 1;
           }""",
        arg=[chart_finished0, chart_failed0], timeout=8000)
    rects = chart.locator("rect").count()
    assert rects >= max(1, rects0), f"the chart lost bars: {rects0} -> {rects}"
    expect(chart.locator("rect.failed").first).to_be_attached()
    expect(page.locator("#failure-rate")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    assert page.evaluate("window.__samePage") is True, "the page reloaded"

    # The queue table lists the default queue with its consumer.
    celery_row = page.locator('#queues tr[data-queue="celery"]')
    expect(celery_row).to_be_visible()
    expect(celery_row.locator(".consumers")).to_contain_text("worker@", timeout=TIMEOUT_MS)

    # Each recent task's name leads to its own page.
    first = page.locator("#tasks li.task").first
    task_id = first.get_attribute("data-id")
    expect(first.locator("a.task-name")).to_have_attribute("href", f"/tasks/{task_id}")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    # The same page in the dark scheme, for the eye.
    dark = browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 900})
    try:
        dark_page = dark.new_page()
        dark_page.set_default_timeout(TIMEOUT_MS)
        log_in(dark_page, stack)
        overview_loaded(dark_page)
        dark_page.screenshot(path=str(ARTIFACTS / "overview-dark.png"), full_page=True)
    finally:
        dark.close()
    assert not js_errors.script_errors()


def test_a_queue_nobody_consumes_raises_a_warning(logged_in_page, stack, producer, js_errors):
    page = logged_in_page
    overview_loaded(page)
    app = producer
    broker = redis.Redis.from_url(stack.redis_url)
    try:
        app.send_task("tasks.demo.count", queue=QUEUE)
        row = page.locator(f'#queues tr[data-queue="{QUEUE}"]')
        # No push carries queue depth: the page re-reads the overview every 10 s.
        expect(row.locator(".depth")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=25_000)
        alert = page.get_by_role("alert").filter(has_text=QUEUE)
        expect(alert).to_be_visible(timeout=25_000)
        expect(alert).to_contain_text("no worker consumes it")
        expect(row.locator(".consumers")).to_have_text("none")
        expect(row.locator(".oldest")).to_have_text(re.compile(r"\d"))
        page.screenshot(path=str(ARTIFACTS / "overview-warning.png"))

        broker.delete(QUEUE)  # drained: the warning goes at the next refresh
        expect(alert).to_have_count(0, timeout=25_000)
        expect(row.locator(".depth")).to_have_text("0")
    finally:
        broker.delete(QUEUE)
        broker.close()
    assert not js_errors.script_errors()


def test_workers_page_shows_the_worker_and_its_running_task(logged_in_page, stack, js_errors):
    page = logged_in_page
    hostname = session_worker(stack)
    page.goto(stack.base_url + "/workers")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    card = page.locator(f'section.worker[data-hostname="{hostname}"]')
    expect(card).to_have_attribute("data-online", "true")
    expect(card.locator(".worker-name")).to_have_text(hostname)
    expect(card.locator(".worker-state")).to_have_text("online")
    expect(card.locator(".worker-heartbeat")).to_have_text(re.compile(r" ago$"))
    expect(card.locator(".worker-load")).to_have_text(re.compile(r"^\d+\.\d\d"))
    expect(card.locator(".worker-processed")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#workers-empty")).to_be_hidden()
    processed0 = int(card.locator(".worker-processed").inner_text())

    task_id = stack.launch("tasks.demo.count", total=30, delay=0.1)
    row = card.locator(f'tr.active-task[data-id="{task_id}"]')
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row.locator(".task-name")).to_have_text("tasks.demo.count")
    bar = row.locator(".bar[role=progressbar]")
    # Moving live (and past the switch from indeterminate, so the screenshot shows a settled bar).
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[2-9]\d$"), timeout=TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "workers.png"), full_page=True)

    # The bar fills to 100 (or the finished task has already left the list), then it leaves.
    page.wait_for_function(
        """id => {
             const row = document.querySelector(`tr.active-task[data-id="${id}"]`);
             return !row || row.querySelector('.bar').getAttribute('aria-valuenow') === '100';
           }""", arg=task_id, timeout=TIMEOUT_MS)
    expect(row).to_have_count(0, timeout=TIMEOUT_MS)
    expect(card.locator(".worker-processed")).not_to_have_text(str(processed0), timeout=TIMEOUT_MS)
    assert int(card.locator(".worker-processed").inner_text()) > processed0
    assert not js_errors.script_errors()


def test_the_page_recovers_when_the_web_server_comes_back(page, stack, js_errors):
    proc, log, own = start_server(stack.redis_url, "web-recover")
    port = int(own.base_url.rsplit(":", 1)[1])
    try:
        log_in(page, own)
        connection = page.locator("#connection")
        expect(connection).to_have_attribute("data-state", "live")
        overview_loaded(page)
        page.evaluate("window.__samePage = true")

        devstack.stop(proc)
        expect(connection).to_have_attribute("data-state", "down", timeout=TIMEOUT_MS)
        expect(connection).to_contain_text("disconnected")

        # Launched and finished while this page's server is down (through the session's server).
        task_id = stack.launch("tasks.demo.count", total=5, delay=0.02)
        stack.wait_for(task_id, "finished")
        row = page.locator(f'li.task[data-id="{task_id}"]')
        expect(row).to_have_count(0)

        proc = devstack.start_web(server_env(stack.redis_url, port), port, log=log)
        expect(connection).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
        expect(connection).to_have_text("live")
        expect(row).to_have_attribute("data-status", "finished")
        expect(row.locator(".task-status")).to_have_text("finished")
        expect(row.locator(".bar[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
        expect(row.locator(".result-value")).to_have_text("5")
        expect(page.locator("#overview-updated")).to_have_text(re.compile(r"^Updated "), timeout=TIMEOUT_MS)
        assert page.evaluate("window.__samePage") is True, "the page reloaded instead of reconnecting"
    finally:
        devstack.stop(proc)
        log.close()
    assert not js_errors.page_errors
    assert not [text for text in js_errors.console_errors if not text.startswith(OUTAGE_NOISE)]


def test_markup_in_task_data_is_shown_as_text(page, stack, producer, js_errors):
    page.add_init_script("window.__pwned = false")
    log_in(page, stack)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    app = producer
    # Runs a few seconds, so the workers page shows it with its arguments.
    slow = stack.launch("tasks.demo.fail_with_details", step=4, delay=1.0, input=PAYLOAD)
    page.goto(stack.base_url + "/workers")
    running = page.locator(f'tr.active-task[data-id="{slow}"]')
    expect(running.locator(".task-args")).to_contain_text(PAYLOAD, timeout=TIMEOUT_MS)
    expect(running.locator("img, script")).to_have_count(0)

    failing = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=PAYLOAD)
    echoed = app.send_task("tasks.demo.echo", args=[PAYLOAD]).id
    named = app.send_task(PAYLOAD_AS_NAME, args=[PAYLOAD]).id
    for task_id, status in ((failing, "failed"), (echoed, "finished"), (named, "failed")):
        stack.wait_for(task_id, status)

    page.goto(stack.base_url + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    row = page.locator(f'li.task[data-id="{failing}"]')
    expect(row).to_have_attribute("data-status", "failed")
    detail = row.locator("table.details tr", has=page.locator("th", has_text=re.compile(r"^input$")))
    expect(detail.locator("td")).to_have_text(PAYLOAD)
    expect(row.locator(".task-args")).to_contain_text(PAYLOAD)
    expect(page.locator(f'li.task[data-id="{echoed}"] .result-value')).to_have_text(json.dumps(PAYLOAD))
    named_row = page.locator(f'li.task[data-id="{named}"]')
    expect(named_row.locator(".task-name")).to_have_text(PAYLOAD_AS_NAME)
    expect(named_row.locator(".task-args")).to_contain_text(PAYLOAD)
    expect(page.locator(f'li.task[data-id="{slow}"]')).to_have_attribute("data-status", "failed",
                                                                            timeout=TIMEOUT_MS)

    time.sleep(0.3)  # give an injected onerror the chance to run
    expect(page.locator("main img, main script")).to_have_count(0)
    assert page.evaluate("window.__pwned") is False
    page.goto(stack.base_url + "/workers")
    expect(page.locator("section.worker").first).to_be_visible()
    expect(page.locator("main img, main script")).to_have_count(0)
    assert page.evaluate("window.__pwned") is False
    assert not js_errors.page_errors
    assert not js_errors.script_errors()
