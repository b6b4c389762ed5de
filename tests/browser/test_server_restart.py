"""The web server killed and started again on the same port while tasks run: open pages reconnect
by themselves and show the right bars and statuses, with no reload, and the registry has every
task that ran meanwhile. Its own worker, servers and Redis database (13), stopped by PID."""

import signal

import pytest
from playwright.sync_api import Page, expect

from pulse import devstack
from tests.conftest import db_url, flush_db, own_server, own_worker, start_server, wait_until

from .conftest import JsErrors, log_in

pytestmark = pytest.mark.browser

DB = 13
MARK = "window.__pulseNotReloaded"  # set before the restart: a reload would drop it
# Chromium reports a refused WebSocket or fetch as a console error; while the server is down
# those are expected, and are not script errors.
DOWN_NOISE = ("WebSocket connection to", "Failed to load resource")


def dashboard_row(page: Page, task_id: str):
    return page.locator(f'li.task[data-id="{task_id}"]')


def bar_value(bar) -> int:
    value = bar.get_attribute("aria-valuenow")
    return int(value) if value is not None else 0


def record_errors(page: Page, errors: JsErrors) -> None:
    """Collect a second page's script errors with the first's."""
    page.on("pageerror", lambda error: errors.page_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.console_errors.append(message.text))


def polled(page: Page) -> list[str]:
    """Socket.IO requests over HTTP long-polling: the pages should open WebSockets only."""
    return page.evaluate("performance.getEntriesByType('resource').map(e => e.name)"
                         ".filter(name => name.includes('transport=polling'))")


def test_pages_reconnect_to_a_restarted_server_and_show_what_happened_meanwhile(page, redis_url, js_errors):
    url = db_url(redis_url, DB)
    flush_db(url)
    port = devstack.free_port()
    with own_worker(url, "restartpageworker", concurrency=2):
        proc, log, first = start_server(url, "web-restart-page-a", port=port)
        try:
            log_in(page, first)
            task_page = page.context.new_page()
            record_errors(task_page, js_errors)
            long = first.launch("tasks.demo.count", total=40, delay=0.15)
            task_page.goto(f"{first.base_url}/tasks/{long}")
            pages = (page, task_page)
            row_bar = dashboard_row(page, long).locator(".bar[role=progressbar]")
            task_bar = task_page.locator("#bar-slot .bar[role=progressbar]")
            for bar in (row_bar, task_bar):
                wait_until(lambda bar=bar: 0 < bar_value(bar) < 100, 30, 0.05, "a bar to move")
            for one in pages:
                expect(one.locator("#connection")).to_have_attribute("data-state", "live")
                one.evaluate(f"{MARK} = true")

            devstack.stop(proc, signal.SIGKILL)
        finally:
            devstack.stop(proc)
            log.close()
        for one in pages:
            expect(one.locator("#connection")).to_have_attribute("data-state", "down")
        # Nobody watches the events now: the long task goes on, two more run start to end.
        quick = first.celery.send_task("tasks.demo.count", kwargs={"total": 5, "delay": 0.05})
        failing = first.celery.send_task("tasks.demo.fail_with_details", kwargs={"step": 1, "delay": 0.01})
        result = first.celery.AsyncResult(long)
        wait_until(lambda: result.ready() and quick.ready() and failing.ready(), 30, 0.1,
                   "the tasks to end while the server is down")
        assert bar_value(task_bar) < 100  # the page has not heard of the finish yet

        with own_server(url, "web-restart-page-b", port=port) as (_proc, second):
            for one in pages:
                expect(one.locator("#connection")).to_have_attribute("data-state", "live")
            expect(task_page.locator("#task-status")).to_have_text("finished")
            expect(task_bar).to_have_attribute("aria-valuenow", "100")
            expect(task_page.locator("#result")).to_have_text("40")
            for task_id, status in ((long, "finished"), (quick.id, "finished"), (failing.id, "failed")):
                expect(dashboard_row(page, task_id)).to_have_attribute("data-status", status)
            expect(row_bar).to_have_attribute("aria-valuenow", "100")
            expect(dashboard_row(page, failing.id).locator(".exc-message")).to_have_text(
                "record 1 could not be parsed")
            for one in pages:
                assert one.evaluate(MARK) is True, "the page reloaded instead of reconnecting"
                assert polled(one) == []

            # Every task that ran while the server was down is in the registry.
            for task_id, status in ((long, "finished"), (quick.id, "finished"), (failing.id, "failed")):
                data = second.api("GET", f"/api/tasks/{task_id}").json()
                assert data["status"] == status, data
                assert data["worker"].startswith("restartpageworker@")
            assert second.api("GET", f"/api/tasks/{long}").json()["result"] == 40
    errors = [text for text in js_errors.script_errors() if not text.startswith(DOWN_NOISE)]
    assert errors == []
