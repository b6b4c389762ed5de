"""The alerts page (/alerts) in a real browser: an operator creates a rule through the form and
watches it fire and its notice reach a real local webhook receiver; the server's refusal is shown
next to the form; markup in a rule shows as text; edit, disable, send test and delete; a viewer
reads the rules and states without a control and with webhook URLs cut to their host.

A server of its own with fast alerting and no worker (so no queue has a consumer) on Redis
database 3 (shared with tests/integration/test_registry_api.py, each flushing it first).
"""

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS, Stack, fresh_server, wait_until
from tests.webhook_receiver import Receiver

from .conftest import log_in_as

pytestmark = pytest.mark.browser

DB = 3
VIEWER = "alerts-page-viewer-token-0123"
FAST = {"PULSE_ALERT_INTERVAL": "0.5", "PULSE_ALERT_TIMEOUT": "2", "PULSE_WORKER_CHECK_INTERVAL": "1"}
RED, AMBER, GREEN = "rgb(192, 57, 43)", "rgb(138, 101, 0)", "rgb(23, 128, 74)"  # pulse.css, light theme


@pytest.fixture(scope="module")
def alerts_server(redis_url) -> Iterator[Stack]:
    with fresh_server(redis_url, DB, "web-alerts-page", PULSE_VIEWER_TOKEN=VIEWER, **FAST) as stack:
        yield stack


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver().start()
    yield hook
    hook.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_rule(stack: Stack, **body) -> dict:
    response = stack.api("POST", "/api/alerts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def open_alerts(page: Page, stack: Stack, token: str) -> None:
    log_in_as(page, stack.base_url, token)
    page.get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("link", name="Alerts")).to_have_attribute("aria-current", "page")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#alerts-summary")).to_have_text(re.compile(r"^\d+ rules?\b"))


def card(page: Page, rule_id: str):
    return page.locator(f'#rules article.rule[data-rule="{rule_id}"]')


def card_named(page: Page, name: str):
    return page.locator("#rules article.rule").filter(has=page.get_by_role("heading", name=name, exact=True))


def background(locator) -> str:
    return locator.evaluate("node => getComputedStyle(node).backgroundColor")


def wait_for_reads(page: Page, reads: int = 2) -> None:
    """Let the page re-read the rules ``reads`` times (each read stamps the server's time)."""
    stamp = page.locator("#alerts-updated")
    for _ in range(reads):
        expect(stamp).not_to_have_attribute("datetime", stamp.get_attribute("datetime") or "")


def test_an_operator_creates_a_rule_that_fires_and_sees_its_delivery(page, alerts_server, receiver,
                                                                       js_errors):
    name, queue = unique("nobody consumes"), unique("orphan-queue")
    open_alerts(page, alerts_server, alerts_server.token)
    form = page.locator("#rule-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Condition").select_option("queue_no_consumers")
    # The form shows only what this kind takes: a queue, no threshold, a hold time.
    expect(form.get_by_label("Queue")).to_be_visible()
    expect(form.get_by_label("Task name")).to_be_hidden()
    expect(form.get_by_label("Periodic entry")).to_be_hidden()
    expect(page.locator("#rule-threshold-field")).to_be_hidden()
    expect(page.locator("#rule-window-label")).to_have_text("Hold for (seconds)")
    expect(page.locator("#rule-window-hint")).to_contain_text("0 (at once) to 604800")
    form.get_by_label("Queue").fill(queue)
    form.get_by_label("Hold for (seconds)").fill("0")
    form.get_by_role("button", name="Add a webhook").click()
    form.get_by_label("Webhook 1 URL").fill(receiver.url)
    form.get_by_role("button", name="Create rule").click()

    expect(page.locator("#rule-form-outcome")).to_have_text(f"Created the rule “{name}”.")
    expect(page.locator("#rule-form-warnings")).to_contain_text(
        f"no task has been sent to a queue named '{queue}'")
    expect(form.get_by_label("Name", exact=True)).to_have_value("")  # the form is ready for the next rule
    rule = card_named(page, name)
    expect(rule.locator(".rule-condition")).to_have_text(f"Fires when queue {queue} has no consumer")
    expect(rule.locator(".rule-hooks")).to_have_text(f"json {receiver.url}")
    badge = rule.locator(".rule-state")
    expect(badge).to_have_text("firing")
    assert background(badge) == RED
    expect(rule.locator(".rule-detail")).to_have_text(f"queue {queue} has 0 consumer(s)")
    expect(rule.locator(".rule-value")).to_have_text("0 consumers")
    expect(rule.locator(".rule-since")).to_have_text(re.compile(r"^(.+ ago|just now) \(.+\)$"))
    expect(page.locator("#alerts-summary")).to_contain_text(re.compile(r"\d+ firing"))

    rule.get_by_text("Delivery history").click()
    delivery = rule.locator('.history-table tr[data-event="delivery"]')
    expect(delivery.locator(".history-outcome")).to_have_text("delivered")
    expect(delivery.locator(".history-event")).to_have_text("delivery of the firing notice")
    expect(delivery.locator(".history-url")).to_have_text("http://127.0.0.1/… (json)")
    expect(delivery.locator(".history-attempt")).to_have_text("1")
    expect(delivery.locator(".history-status")).to_have_text("200")
    # Newest first: the delivery, then the firing notice that queued it.
    expect(rule.locator(".history-table tbody tr")).to_have_count(2)
    expect(rule.locator(".history-table tbody tr").nth(1)).to_have_attribute("data-event", "firing")
    rule_id = rule.get_attribute("data-rule")
    wait_until(lambda: any(b["rule"]["id"] == rule_id for b in receiver.taken("firing")), 10, 0.1,
               "the receiver to take the firing notice")

    # Re-reads redraw nothing: the same card, its pane still open, a half-typed rule still there.
    form.get_by_label("Name", exact=True).fill("a rule being typed")
    rule.evaluate("node => { node.dataset.marked = 'yes'; }")
    wait_for_reads(page)
    expect(rule).to_have_attribute("data-marked", "yes")
    expect(rule.locator(".rule-history")).to_have_attribute("open", "")
    expect(form.get_by_label("Name", exact=True)).to_have_value("a rule being typed")
    page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)
    assert not js_errors.script_errors()


def test_a_rule_the_server_refuses_shows_its_message_and_creates_nothing(page, alerts_server, js_errors):
    before = len(alerts_server.api("GET", "/api/alerts").json()["rules"])
    open_alerts(page, alerts_server, alerts_server.token)
    form = page.locator("#rule-form")
    form.get_by_label("Name", exact=True).fill(unique("too high a rate"))
    form.get_by_label("Condition").select_option("failure_rate")
    expect(form.get_by_label("Task name")).to_be_visible()
    expect(form.get_by_label("Queue")).to_be_hidden()
    expect(page.locator("#rule-threshold-field label")).to_have_text(
        "Threshold (fraction of finished tasks that failed)")
    expect(page.locator("#rule-threshold-hint")).to_contain_text("above 0 and at most 1")
    expect(page.locator("#rule-window-label")).to_have_text("Window (seconds)")
    expect(page.locator("#rule-min-count-field")).to_be_visible()
    form.get_by_label("Task name").fill("tasks.demo.count")
    form.get_by_label("Threshold (fraction of finished tasks that failed)").fill("2")
    form.get_by_label("Window (seconds)").fill("300")
    form.get_by_role("button", name="Create rule").click()

    expect(page.locator("#rule-form-error")).to_have_text(
        'Not created (400: "threshold" must be above 0 and at most 1, not 2)')
    expect(form.get_by_label("Threshold (fraction of finished tasks that failed)")).to_have_value("2")
    expect(page.locator("#rule-form-outcome")).to_have_text("")
    wait_for_reads(page, 1)
    assert len(alerts_server.api("GET", "/api/alerts").json()["rules"]) == before
    expect(page.locator("#rules article.rule")).to_have_count(before)

    # A count kind without its window: the server says what it needs.
    form.get_by_label("Threshold (fraction of finished tasks that failed)").fill("0.5")
    form.get_by_label("Window (seconds)").fill("")
    form.get_by_role("button", name="Create rule").click()
    expect(page.locator("#rule-form-error")).to_contain_text('a failure_rate rule needs "window"')
    assert len(alerts_server.api("GET", "/api/alerts").json()["rules"]) == before
    assert not js_errors.script_errors()


def test_markup_in_a_rule_shows_as_text(page, alerts_server, js_errors):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    name = f'<img src=x onerror="window.__pwned = true; alert(1)"> {uuid.uuid4().hex[:6]}'
    task = "<script>window.__pwned = true; alert(2)</script>"
    open_alerts(page, alerts_server, alerts_server.token)
    form = page.locator("#rule-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Condition").select_option("long_running")
    form.get_by_label("Task name").fill(task)
    form.get_by_label("Threshold (seconds)").fill("60")
    form.get_by_role("button", name="Create rule").click()

    expect(page.locator("#rule-form-warnings")).to_have_text(f"no task named '{task}' has been recorded yet")
    rule = card_named(page, name)
    expect(rule.locator(".rule-title")).to_have_text(name)
    expect(rule.locator(".rule-condition")).to_have_text(f"Fires when a {task} task runs longer than 1 min")
    expect(rule.locator(".rule-state")).to_have_text("ok")
    expect(rule.locator(".rule-detail")).to_have_text(f"no {task} is running")
    rule.get_by_role("button", name=re.compile(r"^Edit ")).click()
    expect(page.locator("#rule-form-title")).to_have_text(f"Edit the rule “{name}”")
    expect(form.get_by_label("Task name")).to_have_value(task)
    expect(page.locator("#main img, #main script:not([src])")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert not js_errors.script_errors()


def test_a_viewer_reads_rules_and_states_without_controls(page, alerts_server, receiver, js_errors):
    queue = unique("viewer-queue")
    hooks = [{"url": receiver.url + "?secret=s3cr3t", "format": "slack"}]
    firing = add_rule(alerts_server, name=unique("firing"), kind="queue_no_consumers", queue=queue,
                      webhooks=hooks)
    pending = add_rule(alerts_server, name=unique("pending"), kind="queue_no_consumers", queue=queue,
                       window=3600)
    unknown = add_rule(alerts_server, name=unique("unknown"), kind="periodic_missed", entry="no-such-entry")
    disabled = add_rule(alerts_server, name=unique("disabled"), kind="no_worker", window=60, enabled=False)
    open_alerts(page, alerts_server, VIEWER)

    expect(card(page, firing["id"]).locator(".rule-state")).to_have_text("firing")
    expect(card(page, pending["id"]).locator(".rule-state")).to_have_text("pending")
    expect(card(page, unknown["id"]).locator(".rule-state")).to_have_text("unknown")
    expect(card(page, disabled["id"]).locator(".rule-state")).to_have_text("disabled")
    assert background(card(page, firing["id"]).locator(".rule-state")) == RED
    assert background(card(page, pending["id"]).locator(".rule-state")) == AMBER
    expect(card(page, pending["id"]).locator(".rule-condition")).to_have_text(
        f"Fires when queue {queue} has no consumer for 1 h")
    expect(card(page, unknown["id"]).locator(".rule-detail")).to_have_text(
        "no periodic entry named no-such-entry")
    expect(card(page, disabled["id"]).locator(".rule-enabled")).to_have_text("disabled")
    expect(card(page, disabled["id"]).locator(".rule-condition")).to_have_text(
        "Fires when no worker is online for 1 min")
    # The webhook's URL cut to its host: its path and query are often its secret.
    expect(card(page, firing["id"]).locator(".rule-hooks")).to_have_text("slack http://127.0.0.1/…")
    expect(page.locator("#rules")).not_to_contain_text("s3cr3t")

    expect(page.locator("#rule-form")).to_have_count(0)
    expect(page.locator("#main button")).to_have_count(0)
    # The history is for viewers too, with the URL cut as well.
    rule = card(page, firing["id"])
    rule.get_by_text("Delivery history").click()
    delivery = rule.locator('.history-table tr[data-event="delivery"]')
    expect(delivery.locator(".history-outcome")).to_have_text("delivered")
    expect(delivery.locator(".history-url")).to_have_text("http://127.0.0.1/… (slack)")
    page.screenshot(path=str(ARTIFACTS / "alerts-viewer.png"), full_page=True)
    assert not js_errors.script_errors()


def test_an_operator_edits_disables_tests_and_deletes_a_rule(page, alerts_server, receiver, js_errors):
    name, renamed, queue = unique("edit me"), unique("edited"), unique("edit-queue")
    rule_id = add_rule(alerts_server, name=name, kind="queue_age", queue=queue, threshold=600,
                       webhooks=[{"url": receiver.url}])["id"]
    open_alerts(page, alerts_server, alerts_server.token)
    rule = card(page, rule_id)
    expect(rule.locator(".rule-condition")).to_have_text(
        f"Fires when the oldest message of queue {queue} has waited more than 10 min")
    expect(rule.locator(".rule-state")).to_have_text("ok")
    assert background(rule.locator(".rule-state")) == GREEN
    # ok since the rule was made: dated from it
    expect(rule.locator(".rule-since")).to_have_text(re.compile(r"^(.+ ago|just now) \(.+\)$"))
    expect(rule.locator(".rule-value")).to_have_text("0 s")  # an empty queue

    rule.get_by_role("button", name=re.compile(r"^Edit ")).click()
    form = page.locator("#rule-form")
    expect(page.locator("#rule-form-title")).to_have_text(f"Edit the rule “{name}”")
    expect(form.get_by_label("Name", exact=True)).to_have_value(name)
    expect(form.get_by_label("Condition")).to_have_value("queue_age")
    expect(form.get_by_label("Queue")).to_have_value(queue)
    expect(form.get_by_label("Threshold (seconds)")).to_have_value("600")
    expect(form.get_by_label("Webhook 1 URL")).to_have_value(receiver.url)
    form.get_by_label("Name", exact=True).fill(renamed)
    form.get_by_label("Threshold (seconds)").fill("120")
    form.get_by_label("Hold for (seconds)").fill("30")
    form.get_by_role("button", name="Save rule").click()
    expect(page.locator("#rule-form-outcome")).to_have_text(f"Saved the rule “{renamed}”.")
    expect(page.locator("#rule-form-title")).to_have_text("New rule")
    expect(rule.locator(".rule-title")).to_have_text(renamed)
    expect(rule.locator(".rule-condition")).to_have_text(
        f"Fires when the oldest message of queue {queue} has waited more than 2 min for 30 s")
    saved = alerts_server.api("GET", f"/api/alerts/{rule_id}").json()
    assert (saved["name"], saved["threshold"], saved["window"]) == (renamed, 120, 30)

    rule.get_by_role("button", name=re.compile(r"^Disable ")).click()
    expect(rule.locator(".rule-state")).to_have_text("disabled")
    expect(rule.locator(".rule-enabled")).to_have_text("disabled")
    expect(rule.get_by_role("button", name=re.compile(r"^Enable "))).to_be_visible()
    saved = alerts_server.api("GET", f"/api/alerts/{rule_id}").json()
    assert (saved["enabled"], saved["threshold"], saved["webhooks"]) == (False, 120, [{"url": receiver.url,
                                                                                     "format": "json"}])
    rule.get_by_role("button", name=re.compile(r"^Enable ")).click()
    expect(rule.locator(".rule-state")).to_have_text("ok")
    expect(rule.locator(".rule-enabled")).to_have_text("enabled")

    rule.get_by_role("button", name=re.compile(r"^Send a test notice ")).click()
    expect(rule.locator(".rule-outcome")).to_have_text(
        "A test notice is queued for 1 webhook; the history shows its delivery.")
    expect(rule.locator(".rule-history")).to_have_attribute("open", "")
    expect(rule.locator('.history-table tr[data-event="test"] .history-event')).to_have_text("test notice")
    delivery = rule.locator('.history-table tr[data-event="delivery"]')
    expect(delivery.locator(".history-event")).to_have_text("delivery of the test notice")
    expect(delivery.locator(".history-outcome")).to_have_text("delivered")
    wait_until(lambda: any(b["rule"]["id"] == rule_id for b in receiver.taken("test")), 10, 0.1,
               "the receiver to take the test notice")

    dialog = page.locator("#confirm-dialog")
    rule.get_by_role("button", name=re.compile(r"^Delete ")).click()
    expect(dialog.locator("#confirm-title")).to_have_text(f"Delete the rule “{renamed}”?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(rule.locator(".rule-outcome")).to_have_text("Delete cancelled.")
    rule.get_by_role("button", name=re.compile(r"^Delete ")).click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(rule).to_have_count(0)
    expect(page.locator("#alerts-outcome")).to_have_text(f"Deleted the rule “{renamed}”.")
    assert alerts_server.api("GET", f"/api/alerts/{rule_id}").status_code == 404
    wait_for_reads(page, 1)
    expect(rule).to_have_count(0)
    assert not js_errors.script_errors()
