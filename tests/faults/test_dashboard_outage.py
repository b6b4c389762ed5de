"""The dashboard in Chromium through a Redis outage: the header shows it, then "live" again, and
the bars catch up without a reload (a task that went on counting, one that finished after).

The page's Socket.IO connection stays up (only Redis goes away), so what tells the page is the
server's ``monitor`` push; on its return the page must resubscribe for a fresh snapshot, since
whatever happened while the event stream was down sent no push.
"""

import time

import pytest
from playwright.sync_api import expect

from ..browser.conftest import log_in
from ..conftest import TIMEOUT_MS, wait_until
from .conftest import current_of

pytestmark = [pytest.mark.faults, pytest.mark.browser]

OUTAGE = 5.0
RESUME_MS = 10_000  # live again within 10 s of Redis being back
DASHBOARD_SUBSCRIBE = '"subscribe",{"dashboard":true}'


def test_the_header_shows_the_outage_and_the_bars_resync(page, fault, js_errors):
    stack = fault.stack
    subscribes: list[float] = []
    page.on("websocket", lambda ws: ws.on(
        "framesent", lambda payload: DASHBOARD_SUBSCRIBE in str(payload) and subscribes.append(time.time())))
    log_in(page, stack)
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "live")
    page.evaluate("window.__samePage = true")

    going_on = stack.launch("tasks.demo.count", total=600, delay=0.05)  # counts through it all
    ending = stack.launch("tasks.demo.count", total=200, delay=0.05)  # ends a few seconds after
    bars = {task_id: page.locator(f'li.task[data-id="{task_id}"] .bar[role=progressbar]')
            for task_id in (going_on, ending)}
    wait_until(lambda: current_of(stack, ending) >= 5, 30, 0.1, "the tasks to report progress")
    page.wait_for_function("bar => Number(bar.getAttribute('aria-valuenow')) > 0",
                           arg=bars[ending].element_handle())
    subscribed_before = len(subscribes)

    fault.redis.kill()
    expect(connection).to_have_attribute("data-state", "degraded", timeout=TIMEOUT_MS)
    expect(connection).to_contain_text("event stream lost")
    time.sleep(OUTAGE)
    frozen_bar = int(bars[going_on].get_attribute("aria-valuenow"))
    fault.redis.start()

    expect(connection).to_have_attribute("data-state", "live", timeout=RESUME_MS)
    expect(connection).to_have_text("live")
    wait_until(lambda: len(subscribes) > subscribed_before, 5, 0.1, "the page to resubscribe for a snapshot")
    page.wait_for_function("([bar, before]) => Number(bar.getAttribute('aria-valuenow')) > before",
                           arg=[bars[going_on].element_handle(), frozen_bar], timeout=RESUME_MS)

    ended = stack.wait_for(ending, "finished", "failed", timeout=30)
    row = page.locator(f'li.task[data-id="{ending}"]')
    expect(row).to_have_attribute("data-status", ended["status"])
    expect(bars[ending]).to_have_attribute("aria-valuenow", str(round(ended["progress"]["percent"])))
    assert page.evaluate("window.__samePage") is True, "the page reloaded"

    response = stack.api("POST", f"/api/tasks/{going_on}/revoke", json={"terminate": True})
    assert response.status_code == 200, response.text
    stopped = stack.wait_for(going_on, "revoked")
    expect(page.locator(f'li.task[data-id="{going_on}"]')).to_have_attribute("data-status", stopped["status"])
    assert not js_errors.script_errors()
