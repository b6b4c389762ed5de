"""The queues page (/queues) in a real browser: a queue with its depth, a peek at its messages, a
purge through the confirmation dialog (which names the queue and the count) down to 0; a viewer's
page without a purge button; a queue name with markup shown as text. A server of its own (with a
viewer token, no worker) on Redis database 13, stopped by PID."""

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS, Stack, fresh_server, producer_app

from .conftest import TIMEOUT_MS, log_in_as

pytestmark = pytest.mark.browser

DB = 13  # shared with test_server_restart, which flushes it first too
VIEWER = "queues-page-viewer-token-0123"
MARKUP = '<img src="x" onerror="window.__pwned = true"><script>window.__pwned = true</script>'


@pytest.fixture(scope="module")
def queues_server(redis_url) -> Iterator[Stack]:
    with fresh_server(redis_url, DB, "web-queues-page", PULSE_VIEWER_TOKEN=VIEWER) as stack:
        yield stack


def open_queues(page: Page, stack: Stack, token: str) -> None:
    log_in_as(page, stack.base_url, token)
    page.goto(stack.base_url + "/queues")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
    expect(page.locator("#queues-updated")).to_have_text(re.compile(r"^Updated "))


def queue_row(page: Page, name: str):
    return page.locator("#queues tbody tr").filter(has=page.locator("th.queue-name", has_text=name))


def send(stack: Stack, queue: str, count: int) -> list[str]:
    with producer_app(stack.env) as app:
        return [app.send_task("tasks.demo.count", args=[n], kwargs={"total": n}, queue=queue).id
                for n in range(count)]


def test_an_operator_sees_peeks_and_purges_a_queue(page, queues_server, js_errors):
    stack, name = queues_server, f"reports-{uuid.uuid4().hex[:6]}"
    ids = send(stack, name, 3)
    open_queues(page, stack, stack.token)
    expect(page.get_by_role("link", name="Queues")).to_have_attribute("aria-current", "page")
    row = queue_row(page, name)
    expect(row.locator(".depth")).to_have_text("3")
    expect(row.locator(".consumers")).to_have_text("none")

    row.get_by_role("button", name=f"Peek at queue {name}").click()
    expect(page.locator("#peek-queue")).to_have_text(name)
    messages = page.locator("#peek-messages tbody tr")
    expect(messages).to_have_count(3)
    assert [messages.nth(n).get_attribute("data-id") for n in range(3)] == ids
    expect(messages.first.locator(".task-name")).to_have_text("tasks.demo.count")
    expect(messages.first.locator(".task-args")).to_have_text("[0] {'total': 0}")
    expect(page.locator("#peek-summary")).to_contain_text("of 3 waiting")
    expect(row.locator(".depth")).to_have_text("3")  # the peek took nothing
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "queues.png"), full_page=True)

    row.get_by_role("button", name=f"Purge queue {name}").click()
    expect(page.locator("#purge-queue")).to_have_text(name)
    page.fill("#purge-reason", "duplicates from a bad deploy")
    page.click("#purge-submit")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text(f"Purge queue {name}?")
    expect(page.locator("#confirm-message")).to_contain_text(f"the 3 messages waiting in queue “{name}”")
    page.click("#confirm-ok")
    expect(page.locator("#purge-status")).to_have_text(f"Purged 3 messages from queue {name}.")
    expect(row.locator(".depth")).to_have_text("0")
    expect(page.locator("#peek-summary")).to_have_text("Nothing is waiting in this queue.")
    entry = stack.api("GET", "/api/audit", params={"limit": 1}).json()["entries"][0]
    assert entry["detail"]["reason"] == "duplicates from a bad deploy" and entry["detail"]["purged"] == 3
    assert not js_errors.script_errors()


def test_a_cancelled_confirmation_purges_nothing(page, queues_server, js_errors):
    stack, name = queues_server, f"keep-{uuid.uuid4().hex[:6]}"
    send(stack, name, 2)
    open_queues(page, stack, stack.token)
    row = queue_row(page, name)
    expect(row.locator(".depth")).to_have_text("2")
    row.get_by_role("button", name=f"Purge queue {name}").click()
    page.fill("#purge-reason", "changed my mind")
    page.click("#purge-submit")
    expect(page.locator("#confirm-message")).to_contain_text("the 2 messages")
    page.locator("#confirm-dialog button[value=cancel]").click()
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    page.wait_for_timeout(500)
    assert stack.api("GET", f"/api/queues/{name}/messages").json()["depth"] == 2
    assert not js_errors.script_errors()


def test_a_viewer_sees_the_queues_without_any_purge_button(page, queues_server, js_errors):
    stack, name = queues_server, f"viewed-{uuid.uuid4().hex[:6]}"
    send(stack, name, 1)
    open_queues(page, stack, VIEWER)
    row = queue_row(page, name)
    expect(row.locator(".depth")).to_have_text("1")
    expect(page.locator(".purge-button")).to_have_count(0)
    expect(page.locator("#purge")).to_have_count(0)
    expect(page.locator("button:enabled", has_text="Purge")).to_have_count(0)
    row.get_by_role("button", name=f"Peek at queue {name}").click()
    expect(page.locator("#peek-messages tbody tr")).to_have_count(1)
    assert not js_errors.script_errors()


def test_a_queue_name_with_markup_is_shown_as_text(page, queues_server, js_errors):
    stack, name = queues_server, f"{MARKUP}{uuid.uuid4().hex[:6]}"
    with producer_app(stack.env) as app:  # no worker here: the task name is never run, only shown
        app.send_task(f"{MARKUP}.task", args=[MARKUP], kwargs={"k": MARKUP}, queue=name)
    open_queues(page, stack, stack.token)
    cell = page.locator("#queues th.queue-name").filter(has_text=name)
    expect(cell).to_have_count(1)
    assert cell.inner_text() == name
    assert cell.locator("img, script").count() == 0
    queue_row(page, name).get_by_role("button", name=f"Peek at queue {name}").click()
    expect(page.locator("#peek-queue")).to_have_text(name)
    peeked = page.locator("#peek-messages tbody tr")
    expect(peeked).to_have_count(1)
    expect(peeked.locator(".task-name")).to_have_text(f"{MARKUP}.task")
    expect(peeked.locator(".task-args")).to_have_text(f"[{MARKUP!r}] {{'k': {MARKUP!r}}}")
    queue_row(page, name).get_by_role("button", name=f"Purge queue {name}").click()
    page.fill("#purge-reason", "<b>markup</b> reason")
    page.click("#purge-submit")
    expect(page.locator("#confirm-title")).to_have_text(f"Purge queue {name}?")
    page.click("#confirm-ok")
    expect(page.locator("#purge-status")).to_have_text(f"Purged 1 message from queue {name}.")
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not js_errors.script_errors()
