"""The Tasks page's bulk action panel in a real browser, against the real stack: a dry run that
counts the tasks a search selects and lists their ids, a run behind a confirmation that names the
action and the count (dismissed: nothing is sent), the job's own bar to 100% with its counts, the
tasks replayed and the audit log; a viewer's page without the panel; a reason with markup shown as
text; an API refusal shown as text in the alert."""

import re
import uuid
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS, Stack, wait_until

from .conftest import VIEWER_TOKEN, log_in_as

pytestmark = pytest.mark.browser
MARKUP = "<img src=x onerror=window.__pwned=1>"


def failed_tasks(stack: Stack, mark: str, count: int) -> list[str]:
    ids = [stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=mark) for _ in range(count)]
    for task_id in ids:
        stack.wait_for(task_id, "failed")
    return ids


def open_tasks(page: Page, stack: Stack, **filters: str) -> None:
    page.goto(f"{stack.base_url}/tasks?{urlencode(filters)}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def open_panel(page: Page):
    """The bulk panel, opened: it is closed until wanted, so the table stays near the top."""
    panel = page.locator("#bulk")
    expect(panel.get_by_role("heading", name="Act on the tasks these filters select")).to_be_visible()
    panel.locator("summary").first.click()
    expect(panel.get_by_role("button", name="Dry run")).to_be_visible()
    return panel


def job_ids(stack: Stack) -> set[str]:
    return {job["id"] for job in stack.api("GET", "/api/bulk").json()["jobs"]}


def audit_of(stack: Stack, job_id: str) -> dict[str, dict]:
    entries = stack.api("GET", "/api/audit", params={"limit": 500}).json()["entries"]
    return {entry["action"]: entry for entry in entries if entry["task"] == job_id}


def test_a_dry_run_then_a_confirmed_replay_of_what_a_search_selects(logged_in_page, stack, js_errors):
    page = logged_in_page
    mark = f"bulk-{uuid.uuid4().hex[:10]}"
    ids = failed_tasks(stack, mark, 3)
    search = f"kwargs:input={mark}"
    open_tasks(page, stack, status="failed", q=search)
    expect(page.locator("#task-rows tr")).to_have_count(3)

    panel = open_panel(page)
    panel.get_by_label("Action").select_option("replay")
    reason = f"the parser is fixed ({mark})"
    panel.get_by_label("Reason").fill(reason)
    panel.get_by_role("button", name="Dry run").click()
    selection = f"selected by status=failed q={search}"
    expect(panel.locator(".bulk-preview-count")).to_have_text(
        f"Dry run: 3 tasks {selection}; 3 can be replayed now.")
    sample = panel.locator(".bulk-sample a")
    expect(sample).to_have_count(3)
    assert set(sample.all_inner_texts()) == set(ids)
    assert {sample.nth(n).get_attribute("href") for n in range(3)} == {f"/tasks/{i}" for i in ids}

    # Dismissing the confirmation sends nothing.
    before = job_ids(stack)
    panel.get_by_role("button", name="Run replay…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text("Replay 3 tasks?")
    expect(page.locator("#confirm-message")).to_contain_text(f"Replay 3 tasks {selection}?")
    expect(page.locator("#confirm-message")).to_contain_text(f"Reason: {reason}")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(panel.locator(".bulk-not-sent")).to_have_text("Replay cancelled: nothing was sent.")
    page.wait_for_timeout(500)
    assert job_ids(stack) == before
    assert {stack.api("GET", f"/api/tasks/{i}").json()["status"] for i in ids} == {"failed"}

    # Confirmed: the job starts, and its own record's bar goes to 100%.
    panel.get_by_role("button", name="Run replay…").click()
    expect(page.locator("#confirm-message")).to_contain_text(f"Replay 3 tasks {selection}?")
    dialog.get_by_role("button", name="Confirm").click()
    job = panel.locator(".bulk-job")
    expect(job).to_have_count(1)
    job_id = job.get_attribute("data-job-id")
    assert job_id and job_id.startswith("bulk-") and job_id not in before
    bar = job.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(bar).to_have_attribute("data-status", "finished")
    state = job.locator(".bulk-job-state")
    expect(state).to_have_text(re.compile(r"^Finished: 3 of 3 tasks gone through; 3 acted, 0 not eligible, "
                                          r"0 errors, 0 uncertain\.$"))
    expect(state).to_have_attribute("role", "status")
    expect(job.locator(".badge")).to_have_text("finished")
    expect(job.get_by_role("link", name="Replay of 3 tasks")).to_have_attribute("href", f"/tasks/{job_id}")
    expect(job.locator(".bulk-cancel")).to_be_hidden()
    expect(panel.get_by_label("Reason", exact=True)).to_have_value("")

    # The tasks are replayed, live in the table too.
    for task_id in ids:
        stack.wait_for(task_id, "replayed")
        expect(page.locator(f'#task-rows tr[data-id="{task_id}"]')).to_have_attribute(
            "data-status", "replayed")

    # Each task's outcome names its replay.
    job.get_by_role("button", name="Show each task’s outcome").click()
    outcomes = job.locator(".bulk-outcome-table tbody tr")
    expect(outcomes).to_have_count(3)
    expect(outcomes.first).to_contain_text("acted: replayed as ")

    audit = wait_until(lambda: (found := audit_of(stack, job_id)) and "bulk-end" in found and found,
                       what="the bulk-end audit entry")
    assert audit["bulk"]["detail"]["reason"] == reason
    assert audit["bulk"]["detail"]["bulk_action"] == "replay" and audit["bulk"]["detail"]["count"] == 3
    assert audit["bulk-end"]["detail"]["status"] == "finished" and audit["bulk-end"]["detail"]["acted"] == 3

    # The recent bulk actions list it.
    page.locator(".bulk-recent-box summary").click()
    recent = page.locator(f'.bulk-recent tr[data-job-id="{job_id}"]')
    expect(recent).to_contain_text("finished")
    expect(recent.locator(".bulk-recent-reason")).to_have_text(reason)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bulk-actions.png"), full_page=True)

    # Pulse's own task page shows the job like any task.
    job.get_by_role("link", name="Replay of 3 tasks").click()
    expect(page.locator("#task-status")).to_have_text("finished")
    expect(page.locator("#task-name")).to_have_text("pulse.bulk.replay")
    assert not js_errors.script_errors()


def test_a_reason_with_markup_is_text_and_runs_nothing(logged_in_page, stack, js_errors):
    page = logged_in_page
    mark = f"markup-{uuid.uuid4().hex[:10]}"
    ids = failed_tasks(stack, mark, 1)
    open_tasks(page, stack, q=f"kwargs:input={mark}")
    expect(page.locator("#task-rows tr")).to_have_count(1)
    panel = open_panel(page)
    panel.get_by_label("Action").select_option("skip")
    panel.get_by_label("Reason").fill(MARKUP)
    panel.get_by_role("button", name="Run skip…").click()
    expect(page.locator("#confirm-title")).to_have_text("Skip 1 task?")
    expect(page.locator("#confirm-message")).to_contain_text(f"Reason: {MARKUP}")
    page.locator("#confirm-ok").click()
    job = panel.locator(".bulk-job")
    expect(job.locator(".bulk-job-state")).to_contain_text("Finished: 1 of 1 task gone through; 1 acted")
    expect(job.locator(".bulk-job-meta")).to_contain_text(f"Reason: {MARKUP}")
    page.locator(".bulk-recent-box summary").click()
    recent = page.locator(f'.bulk-recent tr[data-job-id="{job.get_attribute("data-job-id")}"]')
    expect(recent.locator(".bulk-recent-reason")).to_have_text(MARKUP)
    assert page.locator("main img, dialog img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert stack.api("GET", f"/api/tasks/{ids[0]}").json()["status"] == "skipped"
    assert not js_errors.script_errors()


def test_a_refusal_from_the_api_is_shown_as_text(logged_in_page, stack, js_errors):
    page = logged_in_page
    bad = f"{MARKUP}not-a-group"
    page.goto(f"{stack.base_url}/tasks?{urlencode({'failure_group': bad})}")
    panel = open_panel(page)
    panel.get_by_role("button", name="Dry run").click()
    alert = panel.get_by_role("alert")
    expect(alert).to_contain_text("The dry run was refused (400: malformed failure_group")
    # With a reason, the run is refused the same way, before any confirmation.
    panel.get_by_label("Reason").fill("  ")
    panel.get_by_role("button", name="Run revoke…").click()
    expect(alert).to_have_text("Say why: the reason goes into the audit log with the bulk action.")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not js_errors.script_errors()


def test_a_viewer_has_no_bulk_panel(page, stack, viewer_stack, js_errors):
    mark = f"viewed-{uuid.uuid4().hex[:10]}"
    failed_tasks(stack, mark, 1)
    log_in_as(page, viewer_stack.base_url, VIEWER_TOKEN)
    open_tasks(page, viewer_stack, q=f"kwargs:input={mark}")
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(page.locator("#bulk")).to_have_count(0)
    expect(page.locator(".bulk-form")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Dry run|Run "))).to_have_count(0)
    refused = viewer_stack.api("POST", "/api/bulk", token=VIEWER_TOKEN, json={
        "action": "skip", "filters": {"q": f"kwargs:input={mark}"}, "reason": "a viewer tries"})
    assert refused.status_code == 403, refused.text
    assert not js_errors.script_errors()


def test_the_queue_filter_narrows_the_list_and_the_bulk_selection(logged_in_page, stack, js_errors):
    page = logged_in_page
    mark = f"queued-{uuid.uuid4().hex[:10]}"
    (task_id,) = failed_tasks(stack, mark, 1)
    queue = stack.api("GET", f"/api/tasks/{task_id}").json()["queue"]
    assert queue
    open_tasks(page, stack, queue=queue, q=f"kwargs:input={mark}")
    expect(page.get_by_label("Queue (exact)")).to_have_value(queue)
    expect(page.locator("#task-rows tr")).to_have_count(1)
    panel = open_panel(page)
    panel.get_by_role("button", name="Dry run").click()
    expect(panel.locator(".bulk-preview-count")).to_have_text(
        f"Dry run: 1 task selected by queue={queue} q=kwargs:input={mark}; 0 can be revoked now.")

    page.get_by_label("Queue (exact)").fill(f"{queue}-elsewhere")
    page.wait_for_url(re.compile(r"queue=" + re.escape(f"{queue}-elsewhere")))
    expect(page.locator("#task-rows tr")).to_have_count(0)
    expect(panel.locator(".bulk-preview-count")).to_have_count(0)  # that dry run was for other filters
    assert not js_errors.script_errors()


def test_a_job_still_going_can_be_cancelled_with_a_reason(logged_in_page, stack, js_errors):
    """The cancel control of a job still going. A real job of a few tasks ends before anyone could
    click, so the job's answers are stubbed here (the server's cancel has tests of its own): a
    reason, a confirmation that names the job, then the cancelled state and no cancel control."""
    page = logged_in_page
    mark = f"cancel-{uuid.uuid4().hex[:10]}"
    (task_id,) = failed_tasks(stack, mark, 1)
    job = {"id": "bulk-0123456789abcdef", "action": "skip", "filters": {"q": f"kwargs:input={mark}"},
           "reason": "first try", "who": "operator", "status": "running", "created_at": 1.0e9, "total": 40,
           "done": 10, "acted": 9, "not_eligible": 1, "errors": 0, "uncertain": 0, "percent": 25.0,
           "started_at": 1.0e9, "ended_at": None, "error": None, "resumed": 0, "server": "web",
           "interrupted": False, "url": "/tasks/bulk-0123456789abcdef"}
    cancelled = {**job, "status": "cancelled", "ended_at": 1.0e9 + 5}
    cancels = []

    def bulk_api(route):
        request = route.request
        path = request.url.split("?")[0]
        if request.method == "POST" and path.endswith("/api/bulk"):
            route.fulfill(status=202, json=job)
        elif request.method == "POST" and path.endswith("/cancel"):
            cancels.append(request.post_data_json)
            route.fulfill(json=cancelled)
        elif path.endswith(f"/api/bulk/{job['id']}"):
            route.fulfill(json=cancelled if cancels else job)
        else:
            route.continue_()

    page.route(re.compile(r"/api/bulk(/|$)"), bulk_api)
    open_tasks(page, stack, q=f"kwargs:input={mark}")
    panel = open_panel(page)
    panel.get_by_label("Action").select_option("skip")
    panel.get_by_label("Reason").fill("first try")
    panel.get_by_role("button", name="Run skip…").click()
    page.locator("#confirm-ok").click()
    view = panel.locator(f'.bulk-job[data-job-id="{job["id"]}"]')
    state = view.locator(".bulk-job-state")
    expect(state).to_have_text(
        "Running: 10 of 40 tasks gone through; 9 acted, 1 not eligible, 0 errors, 0 uncertain.")

    view.get_by_label("Reason to cancel").fill("   ")
    view.get_by_role("button", name="Cancel this bulk action…").click()
    expect(page.locator("#confirm-dialog")).to_be_hidden()  # no reason: no confirmation
    expect(view.get_by_role("alert")).to_have_text(
        "Say why you cancel it: the reason goes into the audit log.")
    view.get_by_label("Reason to cancel").fill("wrong filter")
    view.get_by_role("button", name="Cancel this bulk action…").click()
    expect(page.locator("#confirm-title")).to_have_text("Cancel this bulk skip?")
    expect(page.locator("#confirm-message")).to_have_text(
        f"Stop the skip of 40 tasks ({job['id']})? The 30 not gone through yet are left as they are; "
        "those already skipped stay so. Reason: wrong filter")
    page.locator("#confirm-ok").click()
    expect(state).to_have_text(re.compile(r"^Cancelled: 10 of 40 tasks"))
    expect(view.locator(".badge")).to_have_text("cancelled")
    expect(view.locator(".bulk-cancel")).to_be_hidden()
    assert cancels == [{"reason": "wrong filter"}]
    assert stack.api("GET", f"/api/tasks/{task_id}").json()["status"] == "failed"  # only stubs were asked
    assert not js_errors.script_errors()
