"""The failure inbox (/failures) in a real browser: groups by task name and exception type with their
counts, times and newest failures, a count that grows live, a link to the group's tasks; "Skip
group" and "Replay group" through a dry run and a confirmation that names the group and the count,
the job's bar to 100%, the group gone (or renewed by the replays) live; a viewer's page read-only.
A server and a worker of their own on Redis database 9, so the groups hold this module's tasks only."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ARTIFACTS, Stack, db_url, fresh_server, own_worker, wait_until

from .conftest import log_in_as

pytestmark = pytest.mark.browser

DB = 9
VIEWER = "failures-page-viewer-token-0123"
DETAILED = "tasks.demo.fail_with_details"
CRASH = "tasks.demo.crash"


@pytest.fixture(scope="module")
def inbox(redis_url) -> Iterator[Stack]:
    with fresh_server(redis_url, DB, "web-failures-page", PULSE_VIEWER_TOKEN=VIEWER) as stack, \
            own_worker(db_url(redis_url, DB), "failpageworker", concurrency=2):
        yield stack


def fail(stack: Stack, name: str, count: int = 1) -> list[str]:
    kwargs = {"step": 1, "delay": 0.01} if name == DETAILED else {}
    ids = [stack.launch(name, **kwargs) for _ in range(count)]
    for task_id in ids:
        stack.wait_for(task_id, "failed")
    return ids


def group_of(stack: Stack, name: str) -> dict | None:
    groups = stack.api("GET", "/api/failures").json()["groups"]
    return next((group for group in groups if group["name"] == name), None)


def open_inbox(page: Page, stack: Stack, token: str) -> None:
    log_in_as(page, stack.base_url, token)
    page.goto(stack.base_url + "/failures")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.get_by_role("link", name="Failures")).to_have_attribute("aria-current", "page")


def test_an_operator_sees_a_group_grow_live_and_skips_it(page, inbox, js_errors):
    stack = inbox
    detailed = fail(stack, DETAILED, 2)
    crashed = fail(stack, CRASH)
    group = group_of(stack, DETAILED)
    label = f"{DETAILED} · ValueError"
    open_inbox(page, stack, stack.token)

    row = page.locator(f'#failure-groups tr[data-group="{group["id"]}"]')
    expect(row.locator(".group-count")).to_have_text("2")
    expect(row.locator("th.group-name")).to_have_text(DETAILED)
    expect(row.locator(".group-exc")).to_have_text("ValueError")
    expect(row.locator(".group-last time")).to_have_text(re.compile(r" ago$"))
    expect(row.locator(".group-first .hint")).not_to_be_empty()
    samples = row.locator(".samples li")
    expect(samples).to_have_count(2)
    assert {samples.nth(n).get_attribute("data-id") for n in range(2)} == set(detailed)
    expect(samples.first.get_by_role("link")).to_have_attribute("href", re.compile(r"^/tasks/"))
    expect(samples.first.locator(".sample-message")).to_have_text("record 1 could not be parsed")
    expect(page.locator("#failures-summary")).to_have_text("3 unresolved failures in 2 groups.")

    # One more failure: the count grows without a reload, the newest first among the samples.
    (newest,) = fail(stack, DETAILED)
    expect(row.locator(".group-count")).to_have_text("3")
    expect(samples).to_have_count(3)
    expect(samples.first).to_have_attribute("data-id", newest)
    expect(page.locator("#failures-summary")).to_have_text("4 unresolved failures in 2 groups.")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "failures.png"), full_page=True)

    # "See these tasks": the Tasks page narrowed to the group.
    see = row.get_by_role("link", name=f"See these tasks: group {label}")
    expect(see).to_have_attribute("href", re.compile(r"^/tasks\?failure_group="))
    see.click()
    expect(page.locator("#group-filter-label")).to_have_text(label)
    expect(page.locator("#task-rows tr")).to_have_count(3)
    shown = set(page.locator("#task-rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)"))
    assert shown == {*detailed, newest}
    page.go_back()
    expect(row.locator(".group-count")).to_have_text("3")

    # Skip the group: a dry run, a confirmation naming the group and the count, then the job.
    row.get_by_role("button", name=f"Skip group {label}").click()
    section = page.locator("#group-action")
    expect(section).to_be_visible()
    expect(page.locator("#group-action-title")).to_have_text(f"Act on the group {label}")
    expect(section.get_by_label("Action")).to_have_value("skip")
    expect(section.locator(".bulk-preview-count")).to_have_text(
        f"Dry run: 3 tasks of the failure group {label}; 3 can be skipped now.")
    expect(section.locator(".bulk-sample a")).to_have_count(3)
    expect(section.get_by_label("Reason", exact=True)).to_be_focused()
    section.get_by_label("Reason", exact=True).fill("the parser bug is known; these rows are dropped")
    section.get_by_role("button", name="Run skip…").click()
    expect(page.locator("#confirm-title")).to_have_text("Skip 3 tasks?")
    expect(page.locator("#confirm-message")).to_contain_text(f"Skip 3 tasks of the failure group {label}?")
    page.locator("#confirm-ok").click()
    job = section.locator(".bulk-job")
    expect(job.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(job.locator(".bulk-job-state")).to_have_text(
        re.compile(r"^Finished: 3 of 3 tasks gone through; 3 acted"))

    # The group goes, live; the other stays.
    expect(row).to_have_count(0)
    expect(page.locator("#group-action-title")).to_have_text(f"Act on the group {label} (no failure left)")
    page.screenshot(path=str(ARTIFACTS / "failures-skipped.png"), full_page=True)
    expect(page.locator("#failures-summary")).to_have_text("1 unresolved failure in 1 group.")
    expect(page.locator(f'#failure-groups tr[data-group="{group_of(stack, CRASH)["id"]}"]')).to_be_visible()
    for task_id in (*detailed, newest):
        assert stack.api("GET", f"/api/tasks/{task_id}").json()["status"] == "skipped"
    assert stack.api("GET", f"/api/tasks/{crashed[0]}").json()["status"] == "failed"
    recent = page.locator(f'#bulk-recent tr[data-job-id="{job.get_attribute("data-job-id")}"]')
    expect(recent).to_contain_text("skip")
    assert not js_errors.script_errors()


def test_replaying_a_group_renews_it_with_the_replays(page, inbox, js_errors):
    stack = inbox
    fail(stack, CRASH)  # besides whatever the test before left in the group
    group = group_of(stack, CRASH)
    count = group["count"]
    listed = stack.api("GET", "/api/tasks", params={"failure_group": group["id"], "limit": 200})
    originals = listed.json()["tasks"]
    assert len(originals) == count
    label = f"{CRASH} · ValueError"
    open_inbox(page, stack, stack.token)
    row = page.locator(f'#failure-groups tr[data-group="{group["id"]}"]')
    expect(row.locator(".group-count")).to_have_text(str(count))

    row.get_by_role("button", name=f"Replay group {label}").click()
    section = page.locator("#group-action")
    tasks = "task" if count == 1 else "tasks"
    expect(section.locator(".bulk-preview-count")).to_have_text(
        f"Dry run: {count} {tasks} of the failure group {label}; {count} can be replayed now.")
    section.get_by_label("Reason", exact=True).fill("the downstream service is back")
    section.get_by_role("button", name="Run replay…").click()
    expect(page.locator("#confirm-message")).to_contain_text(
        f"Replay {count} {tasks} of the failure group {label}?")
    page.locator("#confirm-ok").click()
    job = section.locator(".bulk-job")
    expect(job.locator(".bulk-job-state")).to_contain_text(
        f"Finished: {count} of {count} {tasks} gone through")

    # The originals are replayed and leave the group; their replays crash again and enter it.
    replays = set()
    for task in originals:
        done = stack.wait_for(task["id"], "replayed")
        replays.add(done["replayed_by"])
    for replay in replays:
        stack.wait_for(replay, "failed")
    samples = row.locator(".samples li")
    wait_until(lambda: set(samples.evaluate_all("items => items.map(i => i.dataset.id)")) == replays,
               timeout=30, what="the samples to be the replays")
    expect(row.locator(".group-count")).to_have_text(str(count))
    assert not js_errors.script_errors()


def test_a_viewer_sees_the_groups_read_only(page, inbox, js_errors):
    stack = inbox
    fail(stack, DETAILED)
    group = group_of(stack, DETAILED)
    open_inbox(page, stack, VIEWER)
    row = page.locator(f'#failure-groups tr[data-group="{group["id"]}"]')
    expect(row.locator(".group-count")).to_have_text(str(group["count"]))
    expect(row.get_by_role("link", name=re.compile("^See these tasks: group "))).to_be_visible()
    expect(page.locator("#group-action")).to_have_count(0)
    expect(page.locator("#failure-groups button")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Replay|Skip"))).to_have_count(0)
    assert not js_errors.script_errors()
