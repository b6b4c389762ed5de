"""The analytics page (/analytics) in a real browser: counts, failure rate and percentiles per task
name, the hour and day windows, a name's histograms; a task name with markup shown as text. A
server of its own (with a viewer token, no worker) on Redis database 5; the records are written
through the registry as a producer and a worker write them, with times the test chooses."""

import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from playwright.sync_api import Page, expect

from pulse.record.registry import Registry
from tests.conftest import Stack, db_url, fresh_server

from .conftest import log_in_as

pytestmark = pytest.mark.browser

DB = 5  # shared with tests/integration/test_analytics.py, which flushes it first too
VIEWER = "analytics-page-viewer-token-0123"
MARKUP = '<img src="x" onerror="window.__pwned = true"><script>window.__pwned = true</script>.task'


@pytest.fixture(scope="module")
def analytics_server(redis_url) -> Iterator[tuple[Stack, Registry]]:
    with fresh_server(redis_url, DB, "web-analytics-page", PULSE_VIEWER_TOKEN=VIEWER) as stack:
        client = redis.Redis.from_url(db_url(redis_url, DB))
        try:
            yield stack, Registry(client)
        finally:
            client.close()


def ended(registry: Registry, name: str, runtime: float, status: str = "finished", ago: float = 0.0) -> None:
    end = time.time() - ago
    task_id = uuid.uuid4().hex
    registry.write(task_id, "scheduled", fields={"name": name, "queue": "celery"},
                   fill={"sent_at": end - runtime - 0.02}, now=end - runtime - 0.02)
    registry.write(task_id, "running", fields={"started_at": end - runtime}, now=end - runtime)
    registry.write(task_id, status, fields={"finished_at": end}, now=end)


def open_analytics(page: Page, stack: Stack, token: str) -> None:
    log_in_as(page, stack.base_url, token)
    page.get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("link", name="Analytics")).to_have_attribute("aria-current", "page")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#analytics-updated")).to_have_text(re.compile(r"^Last hour · "))


def name_row(page: Page, name: str):
    return page.locator("#analytics tbody tr").filter(has=page.locator("th.task-name", has_text=name))


def test_a_viewer_reads_the_figures_of_each_name_in_both_windows(page, analytics_server, js_errors):
    stack, registry = analytics_server
    fast, old = f"tasks.fast.{uuid.uuid4().hex[:6]}", f"tasks.old.{uuid.uuid4().hex[:6]}"
    for _ in range(4):
        ended(registry, fast, 0.2)
    ended(registry, fast, 0.2, status="failed")
    ended(registry, old, 30.0, ago=3 * 3600)  # in the last day, not in the last hour
    open_analytics(page, stack, VIEWER)

    row = name_row(page, fast)
    expect(row.locator(".count")).to_have_text("5")
    expect(row.locator(".succeeded")).to_have_text("4")
    expect(row.locator(".failed")).to_have_text("1")
    expect(row.locator(".failure-rate")).to_have_text("20.0%")
    for cell in ("runtime-p50", "runtime-p99", "wait-p50"):
        expect(row.locator(f".{cell}")).to_have_text(re.compile(r"^\d+ ms$"))  # 0.2 s, 0.02 s
    expect(name_row(page, old)).to_have_count(0)

    page.get_by_label("Last day").check()
    expect(page.locator("#analytics-updated")).to_have_text(re.compile(r"^Last day · "))
    expect(name_row(page, old).locator(".count")).to_have_text("1")
    expect(name_row(page, old).locator(".runtime-p50")).to_have_text(re.compile(r"^\d+\.\d s$"))  # 25-50 s
    expect(name_row(page, fast).locator(".count")).to_have_text("5")
    assert not js_errors.script_errors()


def test_a_task_name_with_markup_is_shown_as_text(page, analytics_server, js_errors):
    stack, registry = analytics_server
    for runtime in (0.004, 0.3, 0.3):
        ended(registry, MARKUP, runtime)
    open_analytics(page, stack, stack.token)

    cell = page.locator("#analytics th.task-name").filter(has_text=MARKUP)
    expect(cell).to_have_count(1)
    assert cell.inner_text() == MARKUP
    name_row(page, MARKUP).get_by_role("button", name=f"Show the distribution of {MARKUP}").click()
    expect(page.locator("#histograms")).to_be_visible()
    expect(page.locator("#histograms-name")).to_have_text(MARKUP)
    expect(page.locator("#runtime-chart rect")).to_have_count(2)  # (0.0025, 0.005] and (0.25, 0.5]
    expect(page.locator("#runtime-chart")).to_have_attribute("aria-label", re.compile(r"^Runtime: 3 tasks, "))
    href = page.locator("#histograms-tasks").get_attribute("href")
    assert parse_qs(urlsplit(href).query) == {"name": [MARKUP]}  # the tasks page, filtered by this name
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not js_errors.script_errors()
