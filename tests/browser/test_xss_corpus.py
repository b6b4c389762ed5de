"""A corpus of HTML and script payloads through every field a task controls, on every page.

The hostile tasks (tests/hostile_tasks.py) put markup in their name, arguments, keyword names,
result, progress message, failure type, message and details, retry reason and queue, and run on
a worker whose very hostname is markup. Each payload would call ``window.__xss(n)`` if it ever
ran. On every page (login, overview, tasks, each task, workers, the widget's embed page with a
per-task token, the error page) nothing runs: no call, no dialog, no Content-Security-Policy
violation, no element the markup would have made; and the payloads are on screen, literally, as
text. The absurd values of the same module render there without a script error.
"""

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from celery.utils.saferepr import saferepr
from playwright.sync_api import Page, expect

from pulse.record.safejson import MAX_KEY
from tests.conftest import Stack, db_url, producer_app, wait_until
from tests.hostile_tasks import (
    EXPOSED_KEY,
    HIDDEN_KEY,
    PAYLOADS,
    RELEASE_KEY,
    XSS_NAME,
    XSS_QUEUE,
    hostile_text,
    release_key,
)
from tests.integration.test_absurd_values import hostile_stack

from .conftest import log_in

pytestmark = pytest.mark.browser

XSS_DB = 10
HOSTNAME = hostile_text("worker")
LONELY_QUEUE = hostile_text("lonely-queue")  # a queue no worker consumes: the overview warns about it
WATCH = """
window.__xssHits = [];
window.__xss = (n) => window.__xssHits.push(n);
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));
"""
# Elements or attributes that only the payloads would have created, searched in every shadow root.
HOSTILE_DOM = """() => {
  const selector = 'img[src="x"], svg[onload], iframe, details[ontoggle], math, mglyph, b, '
    + '[onerror], [onload], [onmouseover], [ontoggle], a[href^="javascript:" i]';
  const roots = [document];
  const found = [];
  for (let i = 0; i < roots.length; i++) {
    for (const node of roots[i].querySelectorAll('*')) if (node.shadowRoot) roots.push(node.shadowRoot);
    for (const node of roots[i].querySelectorAll(selector)) found.push(node.outerHTML.slice(0, 120));
    for (const node of roots[i].querySelectorAll('script')) {
      if (!node.src || node.textContent.includes('__xss')) found.push(node.outerHTML.slice(0, 120));
    }
  }
  return found;
}"""
# The text on screen: the document's, every shadow root's, and the title.
SHOWN_TEXT = """() => {
  const roots = [document];
  const parts = [document.title];
  for (let i = 0; i < roots.length; i++) {
    for (const node of roots[i].querySelectorAll('*')) if (node.shadowRoot) roots.push(node.shadowRoot);
    parts.push(i === 0 ? document.body.textContent : roots[i].textContent);
  }
  return parts.join('\\n');
}"""


@pytest.fixture(scope="module")
def stack(redis_url) -> Iterator[Stack]:
    with hostile_stack(db_url(redis_url, XSS_DB), HOSTNAME, "worker-xss", "web-xss") as running:
        yield running


@pytest.fixture(scope="module")
def hostile(stack) -> Iterator[dict[str, str]]:
    """Every hostile task, ended, plus one held running (so the workers page shows it)."""
    with producer_app(stack.env) as app:
        kwargs = {hostile_text("kwarg-key"): hostile_text("kwargs")}
        ids = {
            "held": app.send_task(XSS_NAME, args=[hostile_text("args")], kwargs={**kwargs, "hold": 120},
                                  queue=XSS_QUEUE).id,
            "named": app.send_task(XSS_NAME, args=[hostile_text("args")], kwargs=kwargs, queue=XSS_QUEUE).id,
            "failed": app.send_task("hostile.xss_fail").id,
            "raised": app.send_task("hostile.xss_raise").id,
            "retried": app.send_task("hostile.xss_retry").id,
            "lonely": app.send_task("hostile.swallow", queue=LONELY_QUEUE).id,  # waits, unconsumed
        }
        client = app.backend.client
        try:
            stack.wait_for(ids["held"], "running")
            for key, status in (("named", "finished"), ("failed", "failed"), ("raised", "failed"),
                                ("retried", "finished")):
                stack.wait_for(ids[key], status)
            yield ids
        finally:
            client.set(RELEASE_KEY, 1)


@dataclass
class Watched:
    """A page that records every payload call, dialog and CSP violation (see WATCH)."""

    page: Page
    dialogs: list[str] = field(default_factory=list)

    def assert_harmless(self, *texts: str) -> None:
        """Nothing ran or was built from the payloads, and each of ``texts`` is on screen, literally."""
        page = self.page
        page.wait_for_timeout(300)  # an injected onerror or onload would have fired by now
        assert page.evaluate("window.__xssHits") == [], page.url
        assert page.evaluate("window.__csp") == [], page.url
        assert self.dialogs == [], page.url
        assert page.evaluate(HOSTILE_DOM) == [], page.url
        shown = page.evaluate(SHOWN_TEXT)
        for text in texts:
            assert text in shown, f"{text[:20]!r}... not shown literally on {page.url}"


@pytest.fixture
def watched(page) -> Watched:
    page.add_init_script(WATCH)
    watch = Watched(page)
    page.on("dialog", lambda dialog: (watch.dialogs.append(dialog.message), dialog.dismiss()))
    return watch


def as_repr(field: str) -> str:
    """A field's payload as Python's repr shows it (in the retry reason)."""
    return repr(hostile_text(field))


def as_arg(field: str) -> str:
    """A field's payload as Celery's saferepr of the arguments shows it."""
    return saferepr(hostile_text(field))


def as_json(field: str, limit: int | None = None) -> str:
    """A field's payload (its first ``limit`` characters) as JSON.stringify shows it (a result)."""
    return json.dumps(hostile_text(field)[:limit], ensure_ascii=False)


def test_the_detectors_see_a_payload_that_gets_in(watched, stack, js_errors):
    """The checks below are only worth something if they fire when markup does get in."""
    watched.page.goto(f"{stack.base_url}/login")
    watched.page.evaluate("(html) => document.body.insertAdjacentHTML('beforeend', html)", PAYLOADS[0])
    with pytest.raises(AssertionError):
        watched.assert_harmless()
    assert watched.page.evaluate(HOSTILE_DOM), "the injected <img> was not found"
    assert watched.page.evaluate("window.__csp"), "the CSP did not report the blocked handler"
    assert js_errors.script_errors(), "the blocked handler left no console error"


def test_login_and_error_pages_run_nothing(watched, stack, js_errors):
    page = watched.page
    page.goto(f"{stack.base_url}/login?next={quote('javascript:window.__xss(90)')}")
    watched.assert_harmless()
    page.fill("#token", stack.token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(stack.base_url + "/")
    watched.assert_harmless()
    for path in ("/tasks/", "/embed/"):
        response = page.goto(stack.base_url + path + quote(PAYLOADS[0], safe=""))
        assert response.status == 400
        watched.assert_harmless()
    assert not js_errors.script_errors()


def test_every_page_shows_the_payloads_as_text(watched, stack, hostile, js_errors):
    page = watched.page
    text = hostile_text
    log_in(page, stack)
    expect(page.locator(f'li.task[data-id="{hostile["failed"]}"]')).to_be_visible()
    watched.assert_harmless(text("name"), text("message"), text("exc-message"), text("detail"),
                            text("lonely-queue"))

    page.goto(stack.base_url + "/tasks")
    expect(page.locator(f'#task-rows tr[data-id="{hostile["raised"]}"]')).to_be_visible()
    watched.assert_harmless(text("name"), text("raised"))

    pages = {
        # Celery cuts the arguments' repr at 1,024 characters: the kwargs value is cut short.
        "held": (text("name"), as_arg("args"), as_arg("kwarg-key"), as_arg("kwargs")[:400], text("message"),
                 text("queue"), text("worker")),
        "named": (text("name"), as_json("result-key", MAX_KEY), as_json("result"), text("queue"),
                  text("worker")),
        # Detail names, like a result's keys, are cut at MAX_KEY characters.
        "failed": (text("message"), text("exc-message"), text("detail-key")[:MAX_KEY], text("detail"),
                   text("hidden-key")[:MAX_KEY], text("hidden")),
        "raised": (text("raised"),),
        "retried": (as_repr("retry"),),
    }
    for key, texts in pages.items():
        page.goto(f"{stack.base_url}/tasks/{hostile[key]}")
        expect(page.locator("#task-status")).not_to_have_text("unknown")
        expect(page.locator("#task-name")).not_to_be_empty()
        watched.assert_harmless(*texts)
        if key == "failed":
            expect(page.locator("#exc-type")).to_have_text(PAYLOADS[0] + PAYLOADS[2])

    page.goto(stack.base_url + "/workers")
    expect(page.locator(f'tr.active-task[data-id="{hostile["held"]}"]')).to_be_visible()
    watched.assert_harmless(text("worker"), text("name"), as_arg("args"))

    # Both queue names are over the API's 200 characters: listed as text, without peek or purge.
    page.goto(stack.base_url + "/queues")
    lonely = page.locator("#queues tbody tr").filter(has_text="[lonely-queue]")
    expect(lonely.locator(".depth")).to_have_text("1")
    expect(lonely.locator(".unaddressable")).to_be_visible()
    watched.assert_harmless(text("lonely-queue"), text("queue"))
    assert not js_errors.script_errors()


def test_the_widget_shows_the_payloads_as_text(watched, stack, hostile, js_errors):
    page = watched.page
    exposed = (hostile_text("exc-message"), EXPOSED_KEY[:MAX_KEY], hostile_text("detail"))
    for key, texts in (("failed", exposed), ("held", (hostile_text("message"),))):
        token = stack.api("POST", f"/api/tasks/{hostile[key]}/token", json={"ttl": 600}).json()["token"]
        page.goto(f"{stack.base_url}/embed/{hostile[key]}?token={token}")
        expect(page.locator("pulse-progress")).to_have_attribute("data-status", "failed" if key == "failed"
                                                                 else "running")
        watched.assert_harmless(*texts)
        if key == "failed":  # a per-task token sees only the exposed details
            shown = page.evaluate(SHOWN_TEXT)
            assert HIDDEN_KEY[:MAX_KEY] not in shown and hostile_text("hidden") not in shown
    assert not js_errors.script_errors()


# Progress cases of tests/hostile_tasks.py whose bars and charts are worth a look.
ABSURD_PROGRESS = ("sequence", "huge_message", "above_total", "tiny_total", "unprintable", "huge_int",
                   "bytes_message", "nan")
BARS = """() => [...document.querySelectorAll('[role=progressbar]')].map((bar) => [
  bar.getAttribute('aria-valuenow'), bar.firstElementChild.style.width])"""
CHART = "() => document.querySelector('#progress-chart polyline')?.getAttribute('points') ?? ''"


def assert_sane_bars(page: Page) -> None:
    for value, width in page.evaluate(BARS):
        assert value is None or 0 <= int(value) <= 100, (page.url, value)
        assert width in ("", "0%") or 0 <= float(width.rstrip("%")) <= 100, (page.url, width)


def test_absurd_values_render_sanely(watched, stack, js_errors):
    page = watched.page
    with producer_app(stack.env) as app:
        held = [app.send_task("hostile.progress", args=[case]).id for case in ABSURD_PROGRESS]
        ended = [app.send_task("hostile.result", args=["huge"]).id,
                 app.send_task("hostile.result", args=["wide"]).id,
                 app.send_task("hostile.fail_giant").id,
                 app.send_task("hostile.raise_huge", args=[2_000_000]).id]
        try:
            for task_id in held:
                wait_until(lambda task_id=task_id: stack.api("GET", f"/api/tasks/{task_id}").json()
                           ["progress"], 30, 0.1, f"task {task_id} to report")
            for task_id in ended:
                stack.wait_for(task_id, "finished", "failed", timeout=60)
            log_in(page, stack)
            for task_id in held + ended:
                expect(page.locator(f'li.task[data-id="{task_id}"]')).to_be_visible()
            assert_sane_bars(page)
            for task_id in held + ended:
                page.goto(f"{stack.base_url}/tasks/{task_id}")
                expect(page.locator("#task-status")).not_to_have_text("unknown")
                assert_sane_bars(page)
                points = [float(n) for pair in page.evaluate(CHART).split() for n in pair.split(",")]
                assert all(math.isfinite(n) for n in points), (task_id, points)
                assert all(0 <= y <= 120 for y in points[1::2]), (task_id, points)  # inside the box
        finally:
            for task_id in held:
                app.backend.client.set(release_key(task_id), 1)
    watched.assert_harmless()
    assert not js_errors.script_errors()
