"""The workers page's reports and controls in a real browser: an operator reads a worker's reports
and grows its pool through the confirmation that names it; a viewer reads and has no control; a
worker whose name is markup shows it as text, and the API's refusal of that name as text too."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import (
    ARTIFACTS,
    Stack,
    db_url,
    fresh_server,
    own_worker,
    wait_until,
)

from .conftest import log_in_as

pytestmark = pytest.mark.browser

# Shared with test_worker_garbage and test_worker_control, each flushing it first; flushed after too.
DB = 14
VIEWER = "viewer-token-for-the-workers-page-0123456789"
MARKUP = '<img src=x onerror="window.__pwned=1">'


def online(stack: Stack, prefix: str) -> str:
    def find() -> str | None:
        for worker in stack.api("GET", "/api/workers").json()["workers"]:
            if worker["hostname"].startswith(prefix) and worker["online"]:
                return worker["hostname"]
        return None
    return wait_until(find, 30, 0.2, f"the monitor to see {prefix}")


@pytest.fixture(scope="module")
def page_stack(redis_url) -> Iterator[tuple[Stack, str, str]]:
    with fresh_server(redis_url, DB, "web-workers-page", PULSE_VIEWER_TOKEN=VIEWER) as stack:
        url = db_url(redis_url, DB)
        with own_worker(url, "ctlpage"), own_worker(url, MARKUP, pool="threads"):
            yield stack, online(stack, "ctlpage@"), online(stack, MARKUP + "@")


def open_workers(page: Page, stack: Stack, token: str) -> None:
    log_in_as(page, stack.base_url, token)
    page.goto(stack.base_url + "/workers")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def card_of(page: Page, hostname: str):
    return page.locator("section.worker").filter(has=page.locator(".worker-name", has_text=hostname))


def test_the_operator_reads_reports_and_grows_the_pool_through_a_confirmation(page, page_stack, js_errors):
    stack, worker, hostile = page_stack
    open_workers(page, stack, stack.token)
    card = card_of(page, worker)
    card.locator("details.worker-control > summary").click()
    expect(card.locator("details.worker-control")).to_have_attribute("data-reports", "answered")
    expect(card.locator(".pool-kind")).to_have_text("prefork")
    expect(card.locator(".pool-size")).to_have_text("1")
    expect(card.locator(".report-registered")).to_contain_text("tasks.demo.count")
    expect(card.locator(".report-queues")).to_have_text("celery")

    card.locator("button[data-command=grow]").click()  # no reason typed: nothing is asked or sent
    expect(card.locator(".control-outcome")).to_have_attribute("data-outcome", "invalid")
    expect(page.locator("#confirm-dialog")).not_to_be_visible()

    card.locator("input[name=reason]").fill("browser test: more room")
    card.locator("button[data-command=grow]").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-message")).to_contain_text(f"Add 1 process to the pool of worker {worker}?")
    expect(page.locator("#confirm-message")).to_contain_text("Reason: browser test: more room")
    page.click("#confirm-ok")
    outcome = card.locator(".control-outcome")
    expect(outcome).to_have_attribute("data-outcome", "ok")
    expect(outcome).to_contain_text(f"{worker} answered “pool will grow”")

    def grown() -> bool:
        card.locator(".reports-refresh").click()
        expect(card.locator("details.worker-control")).to_have_attribute("data-reports", "answered")
        return card.locator(".pool-size").inner_text() == "2 (started with 1)"
    wait_until(grown, 20, 0.5, "the page to show two pool processes")
    page.screenshot(path=str(ARTIFACTS / "worker-control.png"), full_page=True)
    entry = stack.api("GET", "/api/audit").json()["entries"][0]
    assert (entry["action"], entry["task"], entry["detail"]["reason"], entry["detail"]["outcome"]) == \
        ("worker-pool-grow", worker, "browser test: more room", "ok")

    # A cancelled confirmation sends nothing.
    card.locator("button[data-command=shrink]").click()
    page.click("#confirm-dialog button[value=cancel]")
    expect(outcome).to_have_attribute("data-outcome", "cancelled")
    assert stack.api("GET", "/api/audit").json()["entries"][0] == entry

    # A worker named with markup: its name and the API's refusal of it are text, nothing runs.
    other = card_of(page, hostile)
    expect(other.locator(".worker-name")).to_have_text(hostile)
    other.locator("details.worker-control > summary").click()
    expect(other.locator(".reports-status")).to_contain_text("Could not ask (400): malformed worker name")
    other.locator("input[name=reason]").fill(MARKUP)
    other.locator("button[data-command=shutdown]").click()
    expect(page.locator("#confirm-message")).to_contain_text(f"Warm shutdown of worker {hostile}")
    page.click("#confirm-ok")
    expect(other.locator(".control-outcome")).to_have_attribute("data-outcome", "http-400")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("section.worker img").count() == 0
    assert not js_errors.script_errors()


def test_a_viewer_reads_the_reports_and_has_no_control(page, page_stack, js_errors):
    stack, worker, _hostile = page_stack
    open_workers(page, stack, VIEWER)
    card = card_of(page, worker)
    card.locator("details.worker-control > summary").click()
    expect(card.locator("details.worker-control")).to_have_attribute("data-reports", "answered")
    expect(card.locator(".pool-kind")).to_have_text("prefork")
    assert page.locator("form.controls").count() == 0
    assert page.locator("button[data-command]").count() == 0
    enabled = page.locator("section.worker button:enabled")
    assert [enabled.nth(i).text_content() for i in range(enabled.count())] == \
        ["Ask again"] * page.locator("section.worker").count()  # re-asking the reports is a read
    assert not js_errors.script_errors()
