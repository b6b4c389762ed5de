"""The periodic tasks page (/periodic) in a real browser: the demo's entries, run now through the
confirmation that names the entry, the link to the task it sent; a viewer gets no run button."""

import re

import pytest
from playwright.sync_api import Page, expect

from pulse import devstack
from tests.conftest import ARTIFACTS, start_server

from .conftest import TIMEOUT_MS, log_in_as

pytestmark = pytest.mark.browser
VIEWER_TOKEN = "viewer-token-periodic-page-0123"


def entry(page: Page, name: str):
    return page.locator(f'#periodic section.entry[data-entry="{name}"]')


def open_periodic(page: Page, base_url: str) -> None:
    page.goto(base_url + "/periodic")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#periodic-summary")).to_contain_text("2 entries")


def test_run_now_through_the_confirmation_and_on_to_the_task(logged_in_page, stack, js_errors):
    page = logged_in_page
    page.get_by_role("link", name="Periodic").click()
    page.wait_for_url(stack.base_url + "/periodic")
    expect(page.locator("#periodic-summary")).to_contain_text("2 entries")
    count, hourly = entry(page, "demo-count"), entry(page, "hourly-import-check")
    expect(count.locator(".entry-schedule")).to_have_text("every 5 min")
    expect(count.locator(".entry-task")).to_have_text("tasks.demo.count")
    expect(count.locator(".entry-args")).to_have_text("delay=0.05, total=20")  # Flask's JSON sorts keys
    expect(count.locator(".entry-next")).to_have_text(re.compile(r"in |due now"))
    expect(hourly.locator(".entry-schedule")).to_have_text("crontab: at minute 0 past every hour (0 * * * *)")

    # No reason, no run: the page asks for one.
    count.get_by_role("button", name="Run now").click()
    expect(page.locator("#confirm-dialog")).not_to_be_visible()
    count.get_by_label("Reason").fill("browser test: run it now")
    count.get_by_role("button", name="Run now").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-title")).to_contain_text("demo-count")
    expect(dialog.locator("#confirm-message")).to_contain_text("browser test: run it now")
    dialog.get_by_role("button", name="Confirm").click()

    link = page.locator("#periodic-outcome a")
    expect(link).to_have_count(1, timeout=TIMEOUT_MS)
    task_id = link.inner_text()
    # The run shows up in the entry's last runs, matched by the name it carries.
    run = count.locator(f'.entry-runs tr[data-id="{task_id}"]')
    expect(run).to_contain_text("entry name")
    page.screenshot(path=str(ARTIFACTS / "periodic.png"), full_page=True)
    link.click()
    page.wait_for_url(f"{stack.base_url}/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text(re.compile("scheduled|running|finished"))
    assert not js_errors.script_errors()


def test_a_viewer_sees_the_schedule_without_a_run_button(page, stack, js_errors):
    proc, log, viewer = start_server(stack.redis_url, "web-viewer-periodic", PULSE_VIEWER_TOKEN=VIEWER_TOKEN)
    try:
        log_in_as(page, viewer.base_url, VIEWER_TOKEN)
        open_periodic(page, viewer.base_url)
        expect(entry(page, "demo-count").locator(".entry-schedule")).to_have_text("every 5 min")
        expect(page.locator("#periodic button:enabled")).to_have_count(0)
        expect(page.get_by_role("button", name="Run now")).to_have_count(0)
        assert not js_errors.script_errors()
    finally:
        devstack.stop(proc)
        log.close()
