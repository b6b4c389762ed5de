"""Browser fixtures: Debian's Chromium driven headless through Playwright, against the real stack.

Playwright's own browser downloads are never used: Chromium is /usr/bin/chromium, and every test
here is skipped (with the reason) when it is missing.
"""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 30_000  # the machine has 2 cores and runs Redis, a worker and the server too
# expect() assertions have their own 5 s default, too short on a loaded 2-core machine.
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class JsErrors:
    """What went wrong in the page's JavaScript: uncaught exceptions and console.error calls."""

    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def script_errors(self) -> list[str]:
        """Uncaught exceptions, plus console errors that are not a non-2xx resource load.

        "Failed to load resource" is how Chromium logs any 4xx answer (a refused login is a 401
        by design), so it is not a script error.
        """
        console = [text for text in self.console_errors if not text.startswith("Failed to load resource")]
        return self.page_errors + console


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def js_errors() -> JsErrors:
    return JsErrors()


@pytest.fixture
def page(browser, js_errors):
    """A page in a fresh context: no cookies shared with any other test."""
    context = browser.new_context(color_scheme="light")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: js_errors.page_errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and js_errors.console_errors.append(msg.text))
    yield page
    context.close()


def log_in(page, stack) -> None:
    page.goto(stack.base_url + "/login")
    page.fill("#token", stack.token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(stack.base_url + "/")


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
