"""Browser test helpers: logging in, a logged-in dashboard, watching a bar move to 100.

Chromium itself (the ``browser``, ``page`` and ``js_errors`` fixtures) is in tests/conftest.py.
"""

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from pulse import devstack

# The browser, page and js_errors fixtures live in tests/conftest.py: one Chromium for the whole run
# (tests/faults drives it too, and Playwright's sync API cannot be started twice in one process).
from ..conftest import TIMEOUT_MS, JsErrors, start_server  # noqa: F401 - the tests here import them from this module

VIEWER_TOKEN = "viewer-token-0123456789"


def log_in_as(page, base_url: str, token: str) -> None:
    """Log in through the login form with ``token``; the dashboard is open afterwards."""
    page.goto(base_url + "/login")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(base_url + "/")


def log_in(page, stack) -> None:
    log_in_as(page, stack.base_url, stack.token)


@pytest.fixture
def logged_in_page(page, stack) -> Iterator:
    """The dashboard, logged in through the login form, with its Socket.IO connection live."""
    log_in(page, stack)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
    yield page


def watch_bar_to_100(bar) -> list[int]:
    """Sample a progress bar's aria-valuenow until it reads 100; assert it moved live and never
    went backwards. Returns the values seen."""
    seen: list[str | None] = []
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        seen.append(bar.get_attribute("aria-valuenow"))
        if seen[-1] == "100":
            break
        time.sleep(0.05)
    values = [int(value) for value in seen if value is not None]
    assert values and values[-1] == 100, f"the bar never reached 100; saw {sorted(set(seen), key=str)}"
    assert any(0 < value < 100 for value in values), f"the bar jumped without moving live: {values}"
    assert values == sorted(values), f"the bar went backwards: {values}"
    return values


@pytest.fixture
def viewer_stack(stack) -> Iterator:
    """A second server on the session stack's Redis that also takes VIEWER_TOKEN (read-only)."""
    proc, log, viewer = start_server(stack.redis_url, "web-viewer", PULSE_VIEWER_TOKEN=VIEWER_TOKEN)
    try:
        yield viewer
    finally:
        devstack.stop(proc)
        log.close()
