"""The overview page (/) in a real browser: login, the launch form, live progress bars in the recent
tasks, failures, several tasks at once."""

import json
import re
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS, ROOT

from .conftest import TIMEOUT_MS, watch_bar_to_100

pytestmark = pytest.mark.browser
# The colour of --finished in static/pulse.css, as the browser computes it (the palette may be tuned).
FINISHED_COLOUR = """() => {
  const probe = document.createElement('div');
  probe.style.backgroundColor = 'var(--finished)';
  document.body.append(probe);
  const colour = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return colour;
}"""


def launch(page: Page, name: str, kwargs: dict) -> str:
    """Launch a task through the dashboard's form; returns its id, as the status line shows it."""
    page.select_option("#launch-name", name)
    page.fill("#launch-kwargs", json.dumps(kwargs))
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")) as sent:
        page.click("#launch-button")
    response = sent.value
    assert response.status == 202, response.text()
    task_id = response.json()["id"]
    expect(page.locator("#launch-status")).to_have_text(f"Launched {name} as {task_id}")
    return task_id


def row(page: Page, task_id: str):
    return page.locator(f'li.task[data-id="{task_id}"]')


def test_login_refuses_a_wrong_token(page, stack, js_errors):
    page.goto(stack.base_url + "/login")
    page.fill("#token", "not-the-token-at-all-0000")
    with page.expect_response(lambda r: r.request.method == "POST" and "/login" in r.url) as answer:
        page.click("#login-form button[type=submit]")
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("That token is not valid")
    assert urlsplit(page.url).path == "/login"
    page.goto(stack.base_url + "/")  # still no session: the dashboard sends us back to log in
    assert urlsplit(page.url).path == "/login"
    assert not js_errors.script_errors()


def test_login_link_with_token_fragment_logs_in(page, stack, js_errors):
    page.goto(f"{stack.base_url}/login#token={quote(stack.token)}", wait_until="commit")
    page.wait_for_url(stack.base_url + "/")
    expect(page.locator("#launch-form")).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert stack.token not in page.url
    assert not js_errors.script_errors()


def test_log_out_button_ends_the_session(logged_in_page, stack, js_errors):
    page = logged_in_page
    with page.expect_response(lambda r: r.request.method == "POST" and "/logout" in r.url) as answer:
        page.get_by_role("button", name="Log out").click()
    assert answer.value.status == 302  # the form carries the session's CSRF token
    page.wait_for_url(stack.base_url + "/login")
    page.goto(stack.base_url + "/")
    assert urlsplit(page.url).path == "/login"
    assert not js_errors.script_errors()


def test_count_bar_fills_live_and_turns_green(logged_in_page, stack, js_errors):
    page = logged_in_page
    task_id = launch(page, "tasks.demo.count", {"total": 20, "delay": 0.1})
    task = row(page, task_id)
    bar = task.locator(".bar[role=progressbar]")
    expect(bar).to_be_attached(timeout=TIMEOUT_MS)
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuemax", "100")

    watch_bar_to_100(bar)

    expect(task).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    expect(task.locator(".task-status")).to_have_text("finished")
    expect(task.locator(".result-value")).to_have_text("20")
    fill = bar.locator(".fill")
    finished = page.evaluate(FINISHED_COLOUR)
    red, green, blue = (int(n) for n in re.findall(r"\d+", finished)[:3])
    assert green > red and green > blue, f"--finished is not a green: {finished}"
    expect(fill).to_have_css("background-color", finished)
    # Let the width transition end, so the screenshot shows a full bar.
    full = "fill => fill.offsetWidth >= fill.parentElement.clientWidth"
    page.wait_for_function(full, arg=fill.element_handle())

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.is_file() and shot.stat().st_size > 0
    assert not js_errors.script_errors()


def test_failed_task_shows_custom_details(logged_in_page, stack, js_errors):
    page = logged_in_page
    task_id = launch(page, "tasks.demo.fail_with_details", {"step": 2, "delay": 0.05})
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "failed", timeout=TIMEOUT_MS)

    expect(task.locator(".failure")).to_be_visible()
    expect(task.locator(".exc-type")).to_have_text("ValueError")
    expect(task.locator(".exc-message")).to_contain_text("record 2 could not be parsed")
    details = task.locator("table.details")
    expect(details).to_be_visible()
    step = details.locator("tr", has=page.locator("th", has_text=re.compile(r"^step$")))
    expect(step.locator("td")).to_have_text("2")
    expect(details.locator("th", has_text=re.compile(r"^input$"))).to_have_count(1)
    box = task.locator("details.traceback-box")
    expect(box).to_be_visible()
    expect(box.locator("summary")).to_have_text("Traceback")
    traceback = task.locator(".traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last):")
    expect(traceback).to_contain_text("in fail_with_details")  # the stack ends in the task's own frame
    expect(traceback).to_contain_text("ValueError: record 2 could not be parsed")
    assert not js_errors.script_errors()


def test_several_tasks_each_get_their_own_bar(logged_in_page, stack, js_errors):
    page = logged_in_page
    ids = [launch(page, "tasks.demo.count", {"total": 10, "delay": 0.05}) for _ in range(3)]
    assert len(set(ids)) == 3
    for task_id in ids:
        task = row(page, task_id)
        expect(task).to_have_count(1)
        expect(task.locator(".bar[role=progressbar]")).to_have_attribute(
            "aria-valuenow", "100", timeout=TIMEOUT_MS)
        expect(task).to_have_attribute("data-status", "finished", timeout=TIMEOUT_MS)
    assert not js_errors.script_errors()


def test_task_text_is_never_html():
    """A cheap guard: no page script has a way to turn task data into markup."""
    static = ROOT / "static"
    scripts = sorted((static / "js").rglob("*.js")) + sorted(static.glob("*.js"))
    names = {path.name for path in scripts}
    assert {"common.js", "overview.js", "workers.js"} <= names, names
    assert not (static / "dashboard.js").exists(), "the overview replaced static/dashboard.js"
    for path in scripts:
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in source, (
                f"{path.relative_to(ROOT)} uses {sink}; render task data with textContent")


def test_markup_in_a_failure_message_is_shown_as_text(logged_in_page, stack, js_errors):
    """Live: count's int("<img ...>") fails with a ValueError that quotes the markup back."""
    page = logged_in_page
    page.evaluate("window.__pwned = false")
    markup = '<img src="x" onerror="window.__pwned = true">'
    task_id = launch(page, "tasks.demo.count", {"total": markup})
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "failed", timeout=TIMEOUT_MS)
    expect(task.locator(".exc-message")).to_contain_text(markup)
    expect(task.locator("img")).to_have_count(0)
    assert page.evaluate("window.__pwned") is False
    assert not js_errors.script_errors()
