"""The Tasks table and the task detail page in a real browser, against the real stack."""

import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS, ROOT

from .conftest import TIMEOUT_MS, VIEWER_TOKEN, log_in_as, watch_bar_to_100

pytestmark = pytest.mark.browser
IMG = '<img src=x onerror="window.__pwned=true">'
SCRIPT = "<script>window.__pwned=true</script>"
PAYLOAD = f"{IMG}{SCRIPT}"
NAME_PAYLOAD = f"{IMG}.task"


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def row(page: Page, task_id: str):
    return page.locator(f'#task-rows tr[data-id="{task_id}"]')


def row_statuses(page: Page) -> list[str]:
    return page.locator("#task-rows tr").evaluate_all("rows => rows.map(r => r.dataset.status)")


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0


def confirm_dialog(page: Page):
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    return dialog



def test_filters_search_and_the_url_round_trip(logged_in_page, stack, js_errors):
    page = logged_in_page
    counted = stack.launch("tasks.demo.count", total=3, delay=0.01)
    crashed = stack.launch("tasks.demo.crash")
    detailed = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01)
    stack.wait_for(counted, "finished")
    stack.wait_for(crashed, "failed")
    stack.wait_for(detailed, "failed")

    open_page(page, stack.base_url + "/tasks?status=failed")
    expect(row(page, crashed)).to_be_visible()
    expect(row(page, detailed)).to_be_visible()
    expect(row(page, counted)).to_have_count(0)
    assert set(row_statuses(page)) == {"failed"}
    expect(page.locator("#filter-status")).to_have_value("failed")
    expect(row(page, crashed).locator(".badge")).to_have_attribute("data-status", "failed")

    # Filtering through the form writes the URL, so the view can be shared and reloaded.
    page.fill("#filter-name", "tasks.demo.crash")
    page.wait_for_url(re.compile(r"name=tasks\.demo\.crash"))
    assert query(page) == {"status": ["failed"], "name": ["tasks.demo.crash"]}
    expect(row(page, detailed)).to_have_count(0)
    expect(row(page, crashed)).to_be_visible()
    assert set(row_statuses(page)) == {"failed"}

    page.reload()
    expect(page.locator("#filter-status")).to_have_value("failed")
    expect(page.locator("#filter-name")).to_have_value("tasks.demo.crash")
    expect(row(page, crashed)).to_be_visible()
    expect(row(page, detailed)).to_have_count(0)

    page.go_back()  # the name filter was one history entry: back to status=failed alone
    page.wait_for_url(lambda url: "name=" not in url)
    assert query(page) == {"status": ["failed"]}
    expect(page.locator("#filter-name")).to_have_value("")
    expect(row(page, detailed)).to_be_visible()

    # Search by a piece of an id: that row alone, whatever its status.
    page.click("#filter-clear")
    page.wait_for_url(stack.base_url + "/tasks")
    fragment = counted[4:16]
    page.fill("#filter-q", fragment)
    page.wait_for_url(re.compile("q="))
    assert query(page) == {"q": [fragment]}
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(row(page, counted)).to_be_visible()
    expect(row(page, counted).locator("code.task-id")).to_have_attribute("title", counted)
    link = row(page, counted).locator("a.task-link")
    expect(link).to_have_text("tasks.demo.count")
    expect(link).to_have_attribute("href", f"/tasks/{counted}")
    expect(row(page, counted).locator(".bar[role=progressbar]")).to_have_attribute("aria-valuenow", "100")

    page.select_option("#filter-order", "asc")
    page.wait_for_url(re.compile("order=asc"))
    page.click("#filter-clear")
    expect(page.locator("#task-rows tr").first).to_be_visible()
    shot(page, "tasks")
    assert not js_errors.script_errors()


def test_the_export_links_download_what_the_filters_select(logged_in_page, stack, js_errors):
    """CSV and NDJSON of every task the filters in view select, with the session (no token)."""
    page = logged_in_page
    crashed = stack.launch("tasks.demo.crash")
    stack.wait_for(crashed, "failed")
    open_page(page, stack.base_url + "/tasks?status=failed&name=tasks.demo.crash")
    expect(page.locator("#export-csv")).to_have_attribute(
        "href", "/api/tasks.csv?status=failed&name=tasks.demo.crash")
    with page.expect_download() as download:
        page.click("#export-ndjson")
    text = Path(download.value.path()).read_text()
    assert download.value.suggested_filename.startswith("pulse-tasks-")
    exported = [json.loads(line) for line in text.splitlines()]
    assert crashed in [task["id"] for task in exported]
    assert {(task["status"], task["name"]) for task in exported} == {("failed", "tasks.demo.crash")}
    with page.expect_download() as download:
        page.click("#export-csv")
    header, *lines = Path(download.value.path()).read_text().splitlines()
    assert header.startswith("id,name,status,") and any(line.startswith(crashed) for line in lines)
    assert not js_errors.script_errors()


def test_a_new_task_appears_and_its_bar_moves_live(logged_in_page, stack, js_errors):
    page = logged_in_page
    open_page(page, stack.base_url + "/tasks")
    task_id = stack.launch("tasks.demo.count", total=20, delay=0.1)
    task = row(page, task_id)
    expect(task).to_be_visible()  # no reload: the push inserted it
    expect(page.locator("#task-rows tr").first).to_have_attribute("data-id", task_id)
    bar = task.locator(".bar[role=progressbar]")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuemax", "100")

    watch_bar_to_100(bar)
    expect(task).to_have_attribute("data-status", "finished")
    expect(task.locator(".badge")).to_have_text("finished")
    expect(task.locator(".progress-text")).to_contain_text("100%")
    expect(bar).to_have_attribute("aria-valuetext", re.compile(r"100(\.0)?% — step 20 of 20"))
    assert not js_errors.script_errors()


def test_a_failed_task_shows_its_details_and_traceback(logged_in_page, browser, stack, js_errors):
    page = logged_in_page
    task_id = stack.launch("tasks.demo.fail_with_details", step=2, delay=0.05)
    stack.wait_for(task_id, "failed")
    open_page(page, f"{stack.base_url}/tasks/{task_id}")

    expect(page.locator("#task-status")).to_have_text("failed")
    expect(page.locator("#task-name")).to_have_text("tasks.demo.fail_with_details")
    expect(page.locator("#exc-type")).to_have_text("ValueError")
    expect(page.locator("#exc-message")).to_contain_text("record 2 could not be parsed")
    details = page.locator("#failure-details")
    expect(details).to_be_visible()
    keys = details.locator("tbody th").all_text_contents()
    assert keys == ["step", "input", "hint"], keys
    step = details.locator("tr", has=page.locator("th", has_text=re.compile(r"^step$")))
    expect(step.locator("td")).to_have_text("2")
    hint = details.locator("tr", has=page.locator("th", has_text=re.compile(r"^hint$")))
    expect(hint.locator("td")).to_have_text("check the CSV export settings")
    box = page.locator("details#traceback-box")
    expect(box).to_have_attribute("open", "")
    expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last):")
    expect(page.locator("#traceback")).to_contain_text("ValueError: record 2 could not be parsed")
    expect(page.locator("#field-worker")).not_to_have_text("—")
    expect(page.locator("#field-kwargs")).to_contain_text("'step': 2")
    expect(page.get_by_role("button", name="Replay")).to_be_visible()
    expect(page.get_by_role("button", name="Skip")).to_be_visible()
    expect(page.get_by_role("button", name="Revoke")).to_be_hidden()
    shot(page, "task-failed")
    assert not js_errors.script_errors()

    # The same page in the dark scheme, for a look at the contrast.
    dark = browser.new_context(color_scheme="dark")
    try:
        dark_page = dark.new_page()
        dark_page.set_default_timeout(TIMEOUT_MS)
        log_in_as(dark_page, stack.base_url, stack.token)
        open_page(dark_page, f"{stack.base_url}/tasks/{task_id}")
        expect(dark_page.locator("#task-status")).to_have_text("failed")
        shot(dark_page, "task-failed-dark")
        open_page(dark_page, f"{stack.base_url}/tasks")
        expect(dark_page.locator("#task-rows tr").first).to_be_visible()
        shot(dark_page, "tasks-dark")
    finally:
        dark.close()


def test_the_detail_page_charts_progress_and_lists_the_timeline(logged_in_page, stack, js_errors):
    page = logged_in_page
    task_id = stack.launch("tasks.demo.count", total=20, delay=0.05)
    done = stack.wait_for(task_id, "finished")
    assert len(done["history"]) >= 2
    open_page(page, f"{stack.base_url}/tasks/{task_id}")

    expect(page.locator("#task-status")).to_have_text("finished")
    chart = page.locator("svg#progress-chart")
    expect(chart.locator("polyline")).to_have_count(1)
    expect(chart).to_have_attribute("role", "img")
    expect(chart).to_have_attribute("aria-label", re.compile(r"reports, from \d+ to 20 of 20"))
    expect(page.locator("#bar-slot .bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#result")).to_have_text("20")
    for key, label in (("started_at", "Started"), ("finished_at", "Finished"), ("sent_at", "Sent")):
        item = page.locator(f'#timeline li[data-key="{key}"]')
        expect(item.locator(".when-label")).to_have_text(label)
        expect(item.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(page.locator('#timeline li[data-key="revoke_requested_at"] time')).to_have_text("—")
    shot(page, "task-finished")
    assert not js_errors.script_errors()


def test_replay_and_terminate_from_the_detail_page(logged_in_page, stack, js_errors):
    page = logged_in_page
    posts: list[str] = []
    page.on("request", lambda r: r.method != "GET" and "/api/" in r.url and posts.append(r.url))
    crashed = stack.launch("tasks.demo.crash")
    stack.wait_for(crashed, "failed")
    open_page(page, f"{stack.base_url}/tasks/{crashed}")
    expect(page.locator("#task-status")).to_have_text("failed")

    # Cancel in the dialog does nothing.
    page.get_by_role("button", name="Replay").click()
    dialog = confirm_dialog(page)
    expect(dialog.locator("#confirm-message")).to_contain_text(crashed)
    expect(dialog.locator("#confirm-message")).to_contain_text("tasks.demo.crash")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    time.sleep(0.3)
    assert posts == []
    assert stack.api("GET", f"/api/tasks/{crashed}").json()["status"] == "failed"

    page.get_by_role("button", name="Replay").click()
    confirm_dialog(page).get_by_role("button", name="Confirm").click()
    expect(page.locator("#task-status")).to_have_text("replayed")
    link = page.locator("#action-status a")
    expect(link).to_be_visible()
    new_id = link.text_content()
    assert new_id and new_id != crashed
    replay = stack.wait_for(new_id, "failed")  # a crash replayed crashes again
    assert replay["replay_of"] == crashed
    expect(page.locator("#relations a", has_text=new_id)).to_have_count(1)
    expect(page.get_by_role("button", name="Replay")).to_be_hidden()
    link.click()
    page.wait_for_url(f"{stack.base_url}/tasks/{new_id}")
    expect(page.locator("#task-status")).to_have_text("failed")
    expect(page.locator("#relations a", has_text=crashed)).to_have_attribute("href", f"/tasks/{crashed}")

    running = stack.launch("tasks.demo.count", total=300, delay=0.1)
    stack.wait_for(running, "running")
    open_page(page, f"{stack.base_url}/tasks/{running}")
    expect(page.locator("#task-status")).to_have_text("running")
    expect(page.get_by_role("button", name="Skip")).to_be_hidden()
    page.get_by_role("button", name="Terminate").click()
    dialog = confirm_dialog(page)
    expect(dialog.locator("#confirm-message")).to_contain_text(running)
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#task-status")).to_have_text("revoked")
    expect(page.locator("#field-revoke-reason")).to_have_text("terminated")
    assert stack.api("GET", f"/api/tasks/{running}").json()["status"] == "revoked"

    # An ended task can be forgotten: the record stays, as expired.
    page.get_by_role("button", name="Forget").click()
    confirm_dialog(page).get_by_role("button", name="Confirm").click()
    expect(page.locator("#task-status")).to_have_text("expired")
    expect(page.locator("#action-status")).to_contain_text("expired")
    assert not js_errors.script_errors()


def test_a_viewer_sees_no_actions_and_cannot_forge_one(page, stack, viewer_stack, js_errors):
    crashed = stack.launch("tasks.demo.crash")
    stack.wait_for(crashed, "failed")
    log_in_as(page, viewer_stack.base_url, VIEWER_TOKEN)
    open_page(page, f"{viewer_stack.base_url}/tasks/{crashed}")
    expect(page.locator("#task-status")).to_have_text("failed")
    expect(page.locator("#exc-type")).to_have_text("ValueError")
    expect(page.locator("#actions")).to_have_count(0)
    expect(page.locator("button[data-action]")).to_have_count(0)
    verbs = re.compile("Revoke|Terminate|Replay|Skip|Forget")
    expect(page.get_by_role("button", name=verbs)).to_have_count(0)

    status, body = page.evaluate("""async (id) => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const response = await fetch(`/api/tasks/${id}/skip`, {method: 'POST', credentials: 'same-origin',
          headers: {'X-CSRF-Token': token, 'Content-Type': 'application/json'}, body: '{}'});
        return [response.status, await response.json()];
    }""", crashed)
    assert status == 403, body
    assert "read-only" in body["error"]
    assert stack.api("GET", f"/api/tasks/{crashed}").json()["status"] == "failed"
    assert not js_errors.script_errors()


def test_html_in_task_data_is_shown_as_text(logged_in_page, stack, producer, js_errors):
    page = logged_in_page
    page.add_init_script("window.__pwned = false")
    detailed = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=PAYLOAD)
    echoed = producer.send_task("tasks.demo.echo", args=[PAYLOAD]).id
    unknown = producer.send_task(NAME_PAYLOAD, args=[PAYLOAD]).id
    stack.wait_for(detailed, "failed")
    stack.wait_for(echoed, "finished")
    stack.wait_for(unknown, "failed")

    def harmless():
        expect(page.locator("main img")).to_have_count(0)
        expect(page.locator("main script")).to_have_count(0)
        assert page.evaluate("window.__pwned") is False

    open_page(page, stack.base_url + "/tasks")
    expect(row(page, unknown).locator("a.task-link")).to_have_text(NAME_PAYLOAD)
    expect(row(page, unknown).locator(".progress-text")).to_contain_text(IMG)
    expect(row(page, echoed)).to_be_visible()
    harmless()

    open_page(page, f"{stack.base_url}/tasks/{detailed}")
    value = page.locator("#failure-details tr", has=page.locator("th", has_text=re.compile("^input$")))
    expect(value.locator("td")).to_have_text(PAYLOAD)
    expect(page.locator("#field-kwargs")).to_contain_text(SCRIPT)
    harmless()

    open_page(page, f"{stack.base_url}/tasks/{echoed}")
    expect(page.locator("#task-status")).to_have_text("finished")
    expect(page.locator("#result")).to_contain_text("<img src=x onerror=")
    expect(page.locator("#result")).to_contain_text(SCRIPT)
    expect(page.locator("#field-args")).to_contain_text(IMG)
    harmless()

    open_page(page, f"{stack.base_url}/tasks/{unknown}")
    expect(page.locator("#task-status")).to_have_text("failed")
    expect(page.locator("#task-name")).to_have_text(NAME_PAYLOAD)
    expect(page.locator("#exc-message")).to_contain_text(IMG)
    harmless()
    assert page.title().startswith(NAME_PAYLOAD)
    assert not js_errors.script_errors()


def test_an_unknown_id_says_so_and_keeps_listening(logged_in_page, stack, producer, js_errors):
    page = logged_in_page
    task_id = f"pulse-browser-{time.time_ns()}"
    open_page(page, f"{stack.base_url}/tasks/{task_id}")
    expect(page.locator("#unknown-notice")).to_be_visible()
    expect(page.locator("#unknown-notice")).to_contain_text("No task with this id has been seen")
    expect(page.locator("#task-status")).to_have_text("unknown")
    producer.send_task("tasks.demo.count", kwargs={"total": 3, "delay": 0.05}, task_id=task_id)
    expect(page.locator("#task-status")).to_have_text("finished")
    expect(page.locator("#unknown-notice")).to_be_hidden()
    expect(page.locator("#task-name")).to_have_text("tasks.demo.count")
    assert not js_errors.script_errors()


def test_keyboard_filters_load_more_and_open_a_task(logged_in_page, stack, producer, js_errors):
    page = logged_in_page
    ids = [producer.send_task("tasks.demo.echo", args=[n]).id for n in range(55)]
    stack.wait_for(ids[-1], "finished")
    open_page(page, stack.base_url + "/tasks?name=tasks.demo.echo")
    rows = page.locator("#task-rows tr")
    expect(rows).to_have_count(50)

    def tab_to(selector: str, limit: int) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    page.locator("main h1").click()  # start from the top of the content
    tab_to("#filter-status", 5)
    for selector in ("#filter-name", "#filter-worker", "#filter-q", "#filter-order"):
        page.keyboard.press("Tab")
        assert page.evaluate("s => document.activeElement.matches(s)", selector), selector
    # New tasks arrive live at the top; the table keeps 50 rows and "Load more" picks up the rest.
    newer = [producer.send_task("tasks.demo.echo", args=[n]).id for n in range(5)]
    expect(rows.first).to_have_attribute("data-id", newer[-1])
    expect(rows).to_have_count(50)
    tab_to("#load-more", 60)
    expect(page.locator("#load-more")).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#load-more")).to_be_hidden()
    listed = stack.api("GET", "/api/tasks", params={"name": "tasks.demo.echo", "limit": 500}).json()["tasks"]
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert shown == [task["id"] for task in listed]  # all of them, in the server's order, once each
    assert len(shown) >= 60
    # The button went away: focus moved to the first row it brought, not to the page's start.
    assert page.evaluate("document.activeElement.matches('#task-rows a.task-link')")

    first_id = rows.first.get_attribute("data-id")
    page.locator("main h1").click()
    tab_to("#task-rows tr:first-child a.task-link", 20)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.base_url}/tasks/{first_id}")
    expect(page.locator("#task-name")).to_have_text("tasks.demo.echo")
    assert not js_errors.script_errors()


def test_the_pages_have_no_html_sinks_and_no_inline_script():
    """Cheap guards: task data cannot become markup, and a CSP without inline script will fit."""
    for script in ("static/js/tasks.js", "static/js/task.js"):
        source = (ROOT / script).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script} uses {sink}; render task data with textContent"
    for name in ("tasks.html", "task.html"):
        template = (ROOT / "templates" / name).read_text()
        assert re.findall(r"<script\b[^>]*>", template) and all(
            "src=" in tag for tag in re.findall(r"<script\b[^>]*>", template)), f"{name} has an inline script"
        assert not re.search(r"\son[a-z]+\s*=", template), f"{name} has an inline event handler"


def test_search_inside_tasks_from_the_url_and_live(logged_in_page, stack, js_errors):
    """A search by a keyword argument's value: in the URL, answered by the server, and a new task
    that matches is added live (the page asks the server, it cannot tell from the push alone)."""
    page = logged_in_page
    mark = f"{time.time_ns()}"
    first = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=f"{SCRIPT}-{mark}")
    other = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=f"other-{mark}")
    stack.wait_for(first, "failed")
    stack.wait_for(other, "failed")

    search = f'kwargs:input="{SCRIPT}-{mark}" exc:ValueError'
    open_page(page, stack.base_url + "/tasks")
    page.fill("#filter-q", search)
    page.wait_for_url(re.compile("q="))
    assert query(page) == {"q": [search]}
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(row(page, first)).to_be_visible()

    page.reload()  # the search is in the URL
    expect(page.locator("#filter-q")).to_have_value(search)
    expect(row(page, first)).to_be_visible()
    expect(page.locator("#task-rows tr")).to_have_count(1)

    # Free text finds a value too; then a new matching task arrives while the page is open.
    page.fill("#filter-q", f"other-{mark}")
    expect(row(page, other)).to_be_visible()
    expect(page.locator("#task-rows tr")).to_have_count(1)
    again = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=f"other-{mark}")
    expect(row(page, again)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#task-rows tr")).to_have_count(2)
    unrelated = stack.launch("tasks.demo.count", total=2, delay=0.01)
    stack.wait_for(unrelated, "finished")
    page.wait_for_timeout(1500)  # the page's check of new tasks runs every second
    expect(row(page, unrelated)).to_have_count(0)

    page.locator("#search-help summary").click()
    expect(page.locator("#search-help")).to_contain_text("kwargs:order_id=42")
    assert page.evaluate("window.__pwned === undefined")
    assert not js_errors.script_errors()
