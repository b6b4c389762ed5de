"""The task page's log pane in a real browser: the lines follow live, a reload neither loses nor
repeats one, Pause holds new lines back, the level and the search narrow what is shown, and a
line with markup is text."""

import pytest
from playwright.sync_api import Page, expect

from .conftest import TIMEOUT_MS

pytestmark = pytest.mark.browser
MARKUP = "<img src=x onerror=window.__pwned=1>"


def open_task(page: Page, stack, task_id: str) -> None:
    page.goto(f"{stack.base_url}/tasks/{task_id}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def seqs(page: Page) -> list[int]:
    return page.locator("#log-box .log-line").evaluate_all("lines => lines.map(l => Number(l.dataset.seq))")


def test_the_log_pane_follows_live_and_survives_a_reload(logged_in_page, stack, js_errors):
    page = logged_in_page
    task_id = stack.launch("tasks.demo.count", total=60, delay=0.05)
    open_task(page, stack, task_id)
    lines = page.locator("#log-box .log-line")
    expect(lines.first).to_contain_text("counting to 60", timeout=TIMEOUT_MS)
    expect(page.locator("#log-box .log-line").nth(10)).to_be_visible(timeout=TIMEOUT_MS)  # arriving live

    page.reload()  # mid-run: the backlog, then the pushes, numbered without a gap or a repeat
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    stack.wait_for(task_id, "finished")
    expect(lines.last).to_contain_text("step 60 of 60", timeout=TIMEOUT_MS)
    assert seqs(page) == list(range(1, 62))
    expect(page.locator("#log-box .log-status")).to_contain_text("61 lines")

    page.select_option("#log-box .log-level", "WARNING")
    expect(page.locator("#log-box .log-line:visible")).to_have_count(0)
    page.select_option("#log-box .log-level", "DEBUG")
    page.fill("#log-box .log-search", "step 4")
    expect(page.locator("#log-box .log-line:visible")).to_have_count(11)  # 4, 40-49
    assert not js_errors.script_errors()


def test_pause_holds_new_lines_and_markup_is_text(logged_in_page, stack, js_errors):
    page = logged_in_page
    task_id = stack.launch("tasks.demo.fail_with_details", step=8, delay=0.3, input=MARKUP)
    open_task(page, stack, task_id)
    lines = page.locator("#log-box .log-line")
    expect(lines.first).to_contain_text("processed record 1", timeout=TIMEOUT_MS)
    page.click("#log-box .log-pause")
    expect(page.locator("#log-box .log-pause")).to_have_attribute("aria-pressed", "true")
    held = lines.count()
    stack.wait_for(task_id, "failed")
    page.wait_for_timeout(1000)
    assert lines.count() == held  # nothing added while paused
    expect(page.locator("#log-box .log-status")).to_contain_text("held while paused")
    page.click("#log-box .log-pause")
    expect(lines.last).to_contain_text(f"record 8 could not be parsed: '{MARKUP}'")
    expect(lines.last).to_have_attribute("data-level", "ERROR")
    assert page.locator("#log-box img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not js_errors.script_errors()
