"""The embeddable widget (static/widget.js) and the iframe embed page, on a host page of another origin.

A tiny HTTP server in the test process stands for the customer's site (127.0.0.1 on its own port,
so another origin than Pulse); its pages include the widget with one script tag. Pulse runs with
PULSE_EMBED_ORIGINS naming that origin only.
"""

import html
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import socketio
from celery import chain, group
from playwright.sync_api import Page, expect

from pulse import devstack
from pulse.agent.tokens import mint_token
from pulse.settings import grant_key_from_env
from tests.conftest import ARTIFACTS, ROOT, Stack, own_server, wait_until

from .conftest import TIMEOUT_MS

pytestmark = pytest.mark.browser
HOSTPAGE = Path(__file__).resolve().parent / "hostpage"
IMG = '<img src=x onerror="window.__pwned=true">'
SCRIPT = "<script>window.__pwned=true</script>"
PAYLOAD = f"{IMG}{SCRIPT}"
NAME = f"{IMG}.task"
FORBIDDEN_JS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\b")


class HostServer:
    """A customer's site on 127.0.0.1:``port``: pages the test puts, and the files in hostpage/."""

    def __init__(self, port: int) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                page = pages.get(self.path.split("?", 1)[0])
                if page is None:
                    super().do_GET()
                    return
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
                pass

        self.origin = f"http://127.0.0.1:{port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=str(HOSTPAGE)))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"host-{port}", daemon=True)
        self.thread.start()

    def put(self, path: str, page: str) -> str:
        """Serve ``page`` at ``path``; returns its URL."""
        self.pages[path] = page
        return self.origin + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def host_page(pulse_url: str, body: str, title: str = "A shop that runs long jobs") -> str:
    """An HTML page of the host site that includes the widget with one script tag."""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{html.escape(title)}</title>
  <link rel="stylesheet" href="/host.css">
  <script src="/host.js"></script>
  <script src="{html.escape(pulse_url)}/widget.js"></script>
</head>
<body>
  <h1>{html.escape(title)}</h1>
  {body}
</body>
</html>"""


def widget(**attrs: str) -> str:
    """A <pulse-progress> tag; attribute values are escaped, names use - for _."""
    text = " ".join(f'{name.replace("_", "-")}="{html.escape(value)}"' for name, value in attrs.items())
    return f"<pulse-progress {text}></pulse-progress>"


@dataclass
class Embed:
    pulse: Stack
    host: HostServer


@pytest.fixture(scope="module")
def embed(redis_url, worker) -> Iterator[Embed]:
    """Pulse with PULSE_EMBED_ORIGINS naming the host site, and the host site itself."""
    host = HostServer(devstack.free_port())
    try:
        # A host clock may run 1 s ahead here (not 30): a revocation covers what is minted in that
        # second too, and the tests below mint anew right after one.
        with own_server(redis_url, "web-embed", PULSE_EMBED_ORIGINS=host.origin,
                        PULSE_TOKEN_RECHECK_INTERVAL="1", PULSE_GRANT_SKEW="1") as (_, pulse):
            yield Embed(pulse, host)
    finally:
        host.close()


def task_token(pulse: Stack, task_id: str, **body) -> str:
    response = pulse.api("POST", f"/api/tasks/{task_id}/token", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["task"] == task_id and data["expires_at"] > time.time()
    return data["token"]


def group_token(pulse: Stack, group_id: str, **body) -> str:
    response = pulse.api("POST", f"/api/groups/{group_id}/token", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["group"] == group_id
    return response.json()["token"]


def part(page: Page, widget_id: str, name: str):
    """A part of a widget's shadow root (Playwright's CSS pierces open shadow roots)."""
    return page.locator(f"#{widget_id} [part~='{name}']")


def events(page: Page, widget_id: str, kind: str | None = None) -> list[dict]:
    recorded = page.evaluate("window.events")
    return [e for e in recorded if e["widget"] == widget_id and (kind is None or e["type"] == kind)]


def wait_for_event(page: Page, widget_id: str, kind: str) -> dict:
    return wait_until(lambda: next(iter(events(page, widget_id, kind)), None), TIMEOUT_MS / 1000, 0.1,
                      f"{kind} from #{widget_id}")


def block_websockets(page: Page) -> None:
    """WebSockets (and any Socket.IO long-polling) to Pulse fail, as behind a strict proxy."""
    page.route("**/socket.io/**", lambda route: route.abort())
    page.route_web_socket("**/socket.io/**", lambda ws: ws.close())


def assert_rising_to_100(recorded: list[dict]) -> None:
    values = [int(e["now"]) for e in recorded if e["type"] == "pulse-progress" and e["now"] is not None]
    assert values and values[-1] == 100, f"the bar never reached 100: {values}"
    assert values == sorted(values), f"the bar went backwards: {values}"
    assert any(0 < value < 100 for value in values), f"no live progress before the end: {values}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0


def test_the_widget_on_another_origin_fills_live(embed, page, js_errors):
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.count", total=30, delay=0.1)
    token = task_token(pulse, task_id)
    url = host.put("/live.html", host_page(pulse.base_url, "<p>Your export is being prepared.</p>"
                                          + widget(id="themed", task=task_id, token=token, label="Export")))
    page.goto(url)

    bar = part(page, "themed", "bar")
    expect(bar).to_have_attribute("role", "progressbar")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(bar).to_have_attribute("aria-valuemax", "100")
    expect(bar).to_have_attribute("aria-label", "Export")
    expect(page.locator("#themed")).to_have_attribute("data-connection", re.compile("live|ended"))
    expect(bar).to_have_attribute("aria-valuenow", "100")
    success = wait_for_event(page, "themed", "pulse-success")
    assert success["id"] == task_id and success["status"] == "finished"

    expect(bar).to_have_attribute("aria-valuetext", re.compile(r"^100% — step 30 of 30$"))
    expect(part(page, "themed", "label")).to_have_text("100%")
    expect(part(page, "themed", "message")).to_have_text("step 30 of 30")
    expect(part(page, "themed", "status")).to_have_text("Done")
    expect(part(page, "themed", "cancel")).to_be_hidden()  # a read-only token
    expect(page.locator("#themed")).to_have_attribute("data-status", "finished")
    recorded = events(page, "themed")
    assert_rising_to_100(recorded)
    assert {e["connection"] for e in recorded} <= {"live", "ended"}, "the widget polled instead of listening"
    assert [e["type"] for e in recorded].count("pulse-success") == 1
    assert not [e for e in recorded if e["type"] == "pulse-failure"]
    assert any(e["eta"] and re.fullmatch(r"about \d+ s left", e["eta"]) for e in recorded), recorded
    state = page.evaluate("document.getElementById('themed').state")
    assert state["id"] == task_id and state["status"] == "finished" and "kwargs" not in state

    # The host's theme reaches inside the shadow root through the custom properties and parts.
    fill = part(page, "themed", "fill")
    assert fill.evaluate("n => getComputedStyle(n).backgroundColor") == "rgb(5, 150, 105)"
    assert bar.evaluate("n => getComputedStyle(n).height") == "14px"
    assert part(page, "themed", "status").evaluate("n => getComputedStyle(n).textTransform") == "uppercase"
    # One Socket.IO client for the page, loaded from the Pulse server.
    scripts = page.locator("script[src*='socket.io-4.8.1.min.js']")
    expect(scripts).to_have_count(1)
    assert scripts.get_attribute("src") == f"{pulse.base_url}/static/vendor/socket.io-4.8.1.min.js"
    shot(page, "widget")
    assert not js_errors.script_errors()


def test_the_widget_polls_when_websockets_are_blocked(embed, page, js_errors):
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.count", total=40, delay=0.1)
    token = task_token(pulse, task_id)
    block_websockets(page)
    page.goto(host.put("/polling.html", host_page(pulse.base_url, widget(id="w", task=task_id, token=token))))

    expect(page.locator("#w")).to_have_attribute("data-connection", re.compile("polling|ended"))
    expect(part(page, "w", "bar")).to_have_attribute("aria-valuenow", "100")
    wait_for_event(page, "w", "pulse-success")
    expect(page.locator("#w")).to_have_attribute("data-connection", "ended")  # polling stopped
    assert_rising_to_100(events(page, "w"))
    assert "live" not in {e["connection"] for e in events(page, "w")}
    assert len(events(page, "w", "pulse-success")) == 1
    assert not js_errors.page_errors


def test_a_token_reads_its_own_task_only(embed):
    pulse = embed.pulse
    task_a = pulse.launch("tasks.demo.count", total=2, delay=0.01)
    task_b = pulse.launch("tasks.demo.count", total=2, delay=0.01)
    pulse.wait_for(task_a, "finished")
    pulse.wait_for(task_b, "finished")
    secret = grant_key_from_env(pulse.env)
    token_a, expires_at = mint_token(secret, task_id=task_a, ttl=600)  # the host application's way
    assert expires_at > time.time() + 500

    response = pulse.api("GET", f"/api/tasks/{task_a}", token=token_a)
    assert response.status_code == 200, response.text
    public = response.json()
    assert public["id"] == task_a and public["status"] == "finished" and public["progress"]["percent"] == 100
    assert public["can_cancel"] is False
    for private in ("args", "kwargs", "worker", "history", "traceback"):
        assert private not in public, f"the public view leaks {private}"
    assert pulse.api("GET", f"/api/tasks/{task_a}?token={token_a}", token=None).status_code == 200
    assert pulse.api("GET", f"/api/tasks/{task_b}", token=token_a).status_code == 403
    assert pulse.api("GET", f"/api/tasks/{task_b}?token={token_a}", token=None).status_code == 403
    # A task token is no operator: no listing, no mutation, no cancel without the right.
    assert pulse.api("GET", "/api/tasks", token=token_a).status_code in (401, 403)
    assert pulse.api("POST", f"/api/tasks/{task_a}/revoke", token=token_a, json={}).status_code in (401, 403)
    assert pulse.api("POST", f"/api/tasks/{task_a}/cancel", token=token_a, json={}).status_code == 403

    client = pulse.socket(auth={"token": token_a})
    try:
        assert client.call("subscribe", {"task": task_a}, timeout=10)["task"]["id"] == task_a
        assert "error" in client.call("subscribe", {"task": task_b}, timeout=10)
        assert "error" in client.call("subscribe", {"dashboard": True}, timeout=10)
    finally:
        client.disconnect()

    expired, _ = mint_token(secret, task_id=task_a, ttl=1, now=time.time() - 5)
    tampered = token_a[:-5] + ("A" if token_a[-5] != "A" else "B") + token_a[-4:]
    garbage = "not-a-token-at-all"
    for bad in (expired, tampered, garbage):
        response = pulse.api("GET", f"/api/tasks/{task_a}", token=bad)
        assert response.status_code == 401, (bad, response.status_code, response.text)
        assert pulse.api("GET", f"/api/tasks/{task_a}?token={bad}", token=None).status_code == 401
        assert_socket_refused(pulse, bad, task_a)
    assert "expired" in pulse.api("GET", f"/api/tasks/{task_a}", token=expired).json()["error"]


def assert_socket_refused(pulse: Stack, token: str, task_id: str) -> None:
    """Refused at connect, or (at the latest) at subscribe."""
    try:
        client = pulse.socket(auth={"token": token})
    except socketio.exceptions.ConnectionError:
        return
    try:
        assert "error" in client.call("subscribe", {"task": task_id}, timeout=10)
    finally:
        client.disconnect()


def test_a_revoked_token_is_refused(embed):
    pulse = embed.pulse
    task_id = pulse.launch("tasks.demo.count", total=2, delay=0.01)
    token = task_token(pulse, task_id)
    assert pulse.api("GET", f"/api/tasks/{task_id}", token=token).status_code == 200
    response = pulse.api("DELETE", f"/api/tasks/{task_id}/tokens")
    assert response.status_code == 200, response.text
    assert pulse.api("GET", f"/api/tasks/{task_id}", token=token).status_code == 403
    assert_socket_refused(pulse, token, task_id)
    time.sleep(1.1)  # past PULSE_GRANT_SKEW: the revocation covers that much of the future
    fresh = task_token(pulse, task_id)  # a token minted after the revocation works
    assert pulse.api("GET", f"/api/tasks/{task_id}", token=fresh).status_code == 200


def test_a_token_revoked_while_the_widget_listens_ends_its_feed(embed, page, js_errors):
    """The server disconnects the socket (pulse.lapses); the widget asks the API and shows why."""
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.count", total=400, delay=0.1)
    token = task_token(pulse, task_id)
    page.goto(host.put("/revoked.html", host_page(pulse.base_url, widget(id="r", task=task_id, token=token))))
    expect(page.locator("#r")).to_have_attribute("data-connection", "live")
    expect(part(page, "r", "bar")).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]"))
    assert pulse.api("DELETE", f"/api/tasks/{task_id}/tokens").status_code == 200
    expect(page.locator("#r")).to_have_attribute("data-connection", "error")
    refused = re.compile(r"^Access to this task was refused \(token revoked")
    expect(part(page, "r", "error")).to_have_text(refused)
    frozen = part(page, "r", "bar").get_attribute("aria-valuenow")
    time.sleep(1.5)  # the task runs on: the bar no longer follows it
    assert part(page, "r", "bar").get_attribute("aria-valuenow") == frozen
    assert pulse.api("POST", f"/api/tasks/{task_id}/revoke").status_code == 200
    assert not js_errors.page_errors


def test_an_origin_not_listed_is_refused(embed, page):
    pulse = embed.pulse
    task_id = pulse.launch("tasks.demo.count", total=10, delay=0.1)
    token = task_token(pulse, task_id)
    stranger = HostServer(devstack.free_port())
    try:
        page_html = host_page(pulse.base_url, widget(id="w", task=task_id, token=token))
        page.goto(stranger.put("/stranger.html", page_html))
        expect(part(page, "w", "error")).to_be_visible()
        expect(page.locator("#w")).to_have_attribute("data-connection", re.compile("polling|error"))
        pulse.wait_for(task_id, "finished")
        time.sleep(1.5)  # a few polling rounds after the end
        assert not events(page, "w", "pulse-success")
        expect(part(page, "w", "bar")).not_to_have_attribute("aria-valuenow", "100")
        expect(part(page, "w", "status")).not_to_have_text("Done")

        # Directly: no CORS grant for the stranger, and the Socket.IO handshake is refused.
        asking = {"Origin": stranger.origin, "Access-Control-Request-Method": "GET",
                  "Access-Control-Request-Headers": "authorization"}
        for method in ("GET", "OPTIONS"):
            url = f"{pulse.base_url}/api/tasks/{task_id}?token={token}"
            response = requests.request(method, url, timeout=10, headers=asking)
            assert "Access-Control-Allow-Origin" not in response.headers, (method, dict(response.headers))
        client = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.connect(pulse.base_url, auth={"token": token}, headers={"Origin": stranger.origin},
                           transports=["websocket"], wait_timeout=10)
        # The listed origin does get them (the control).
        response = requests.get(f"{pulse.base_url}/api/tasks/{task_id}?token={token}", timeout=10,
                                headers={"Origin": embed.host.origin})
        assert response.headers.get("Access-Control-Allow-Origin") == embed.host.origin
        asking = {"Origin": embed.host.origin, "Access-Control-Request-Method": "POST",
                  "Access-Control-Request-Headers": "authorization,content-type"}
        cancel_url = f"{pulse.base_url}/api/tasks/{task_id}/cancel"
        preflight = requests.options(cancel_url, timeout=10, headers=asking)
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers.get("Access-Control-Allow-Origin") == embed.host.origin
        assert "authorization" in preflight.headers.get("Access-Control-Allow-Headers", "").lower()
        listed = pulse.socket(auth={"token": token})  # no Origin header: a server-side client
        listed.disconnect()
    finally:
        stranger.close()


def test_a_group_bar_only_rises_and_ends_at_100(embed, page, producer, js_errors):
    pulse, host = embed.pulse, embed.host
    result = group(producer.signature("tasks.demo.count", kwargs={"total": 10 + i, "delay": 0.1})
                   for i in range(5)).apply_async()
    token = group_token(pulse, result.id)
    page.goto(host.put("/group.html",
                       host_page(pulse.base_url, widget(id="g", group=result.id, token=token))))

    bar = part(page, "g", "bar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    done = wait_for_event(page, "g", "pulse-success")
    assert done["id"] == result.id and done["status"] == "finished"
    assert_rising_to_100(events(page, "g"))
    assert "live" in {e["connection"] for e in events(page, "g")}  # group pushes, not polling
    members = page.locator("#g [part~='member']")
    expect(members).to_have_count(5)
    for index in range(5):
        expect(members.nth(index)).to_have_attribute("data-status", "finished")
        expect(members.nth(index).locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(part(page, "g", "status")).to_have_text("Done")
    state = page.evaluate("document.getElementById('g').state")
    assert state["kind"] == "group" and [m["id"] for m in state["members"]] == [r.id for r in result.results]
    shot(page, "widget-group")
    assert not js_errors.script_errors()


def test_a_chain_whose_second_step_fails_abandons_the_third(embed, page, producer, js_errors):
    pulse, host = embed.pulse, embed.host
    result = chain(
        producer.signature("tasks.demo.count", kwargs={"total": 2, "delay": 0.01}, immutable=True),
        producer.signature("tasks.demo.crash", immutable=True),
        producer.signature("tasks.demo.count", kwargs={"total": 1}, immutable=True),
    ).apply_async()
    steps = [result]
    while steps[0].parent is not None:
        steps.insert(0, steps[0].parent)
    first = steps[0].id

    def settled():
        data = pulse.api("GET", f"/api/groups/{first}").json()
        statuses = [m["status"] for m in data.get("members", [])]
        return data if statuses == ["finished", "failed", "abandoned"] else None

    data = wait_until(settled, 30, 0.2, "the chain to settle")
    assert data["kind"] == "chain" and data["status"] == "failed"
    assert [m["id"] for m in data["members"]] == [step.id for step in steps]

    token = group_token(pulse, first)
    page.goto(host.put("/chain.html", host_page(pulse.base_url, widget(id="c", group=first, token=token))))
    expect(part(page, "c", "status")).to_have_text("Failed")
    expect(part(page, "c", "message")).to_have_text("demo crash: something went wrong")
    members = page.locator("#c [part~='member']")
    expect(members).to_have_count(3)
    statuses = members.evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses == ["finished", "failed", "abandoned"]
    expect(members.nth(2).locator("[part~='member-status']")).to_have_text("Not run: an earlier step failed")
    failure = wait_for_event(page, "c", "pulse-failure")
    assert failure["status"] == "failed"
    assert not events(page, "c", "pulse-success")
    shot(page, "widget-chain")
    assert not js_errors.script_errors()


def test_the_iframe_embed_renders(embed, page, js_errors):
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.count", total=20, delay=0.1)
    token = task_token(pulse, task_id)
    src = f"{pulse.base_url}/embed/{task_id}?token={token}"
    frame_page = requests.get(src, timeout=10)
    assert frame_page.status_code == 200, frame_page.text
    policy = frame_page.headers.get("Content-Security-Policy", "")
    assert f"frame-ancestors {host.origin}" in policy or host.origin in policy, policy
    assert "<script>" not in frame_page.text  # no inline script
    assert f'src="{pulse.base_url}/widget.js"' in frame_page.text

    body = f'<iframe title="Export progress" src="{html.escape(src)}"></iframe>'
    page.goto(host.put("/iframe.html", host_page(pulse.base_url, body)))
    frame = page.frame_locator("iframe")
    bar = frame.locator("pulse-progress [part~='bar']")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(frame.locator("pulse-progress [part~='status']")).to_have_text("Done")
    expect(frame.locator("pulse-progress")).to_have_attribute("task", task_id)
    assert not js_errors.script_errors()


def test_cancel_from_the_widget(embed, page, js_errors):
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.count", total=300, delay=0.1)
    canceller = task_token(pulse, task_id, cancel=True, ttl=600)
    reader = task_token(pulse, task_id)
    labels = {"label_cancel": "Annuler", "label_cancel_requested": "Annulation demandée",
              "label_revoked": "Annulée", "label_running": "En cours"}
    body = (widget(id="owner", task=task_id, token=canceller, **labels)
            + widget(id="viewer", task=task_id, token=reader, **labels))
    page.goto(host.put("/cancel.html", host_page(pulse.base_url, body)))

    expect(part(page, "owner", "status")).to_have_text("En cours")
    expect(part(page, "viewer", "status")).to_have_text("En cours")
    expect(page.locator("#viewer").get_by_role("button")).to_have_count(0)  # hidden: not in the tree
    button = page.locator("#owner").get_by_role("button", name="Annuler")
    expect(button).to_be_visible()
    button.focus()
    page.keyboard.press("Enter")  # a real button: the keyboard works

    expect(part(page, "owner", "status")).to_have_text("Annulée", timeout=TIMEOUT_MS)
    expect(page.locator("#owner")).to_have_attribute("data-status", "revoked")
    expect(part(page, "viewer", "status")).to_have_text("Annulée")
    expect(part(page, "owner", "cancel")).to_be_hidden()
    expect(part(page, "owner", "status")).to_be_focused()  # the keyboard user's place is kept
    texts = page.evaluate("window.statusTexts.owner")
    assert texts[-2:] == ["Annulation demandée", "Annulée"], texts
    assert page.evaluate("window.statusTexts.viewer")[-1] == "Annulée"
    data = pulse.wait_for(task_id, "revoked")
    assert data["revoke_requested_at"] is not None
    assert data["progress"]["percent"] < 100
    assert pulse.api("POST", f"/api/tasks/{task_id}/cancel", token=reader, json={}).status_code == 403
    assert not js_errors.script_errors()


def test_the_widget_follows_a_replay(embed, page, js_errors):
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.fail_with_details", step=1, delay=0.01)
    pulse.wait_for(task_id, "failed")
    token = task_token(pulse, task_id)
    page.goto(host.put("/replay.html", host_page(pulse.base_url, widget(id="r", task=task_id, token=token))))
    expect(part(page, "r", "status")).to_have_text("Failed")
    expect(part(page, "r", "message")).to_have_text("record 1 could not be parsed")
    wait_for_event(page, "r", "pulse-failure")

    response = pulse.api("POST", f"/api/tasks/{task_id}/replay")
    assert response.status_code == 200, response.text
    replay_id = response.json()["replayed_by"]
    expect(page.locator("#r")).to_have_attribute("data-followed", replay_id)
    wait_until(lambda: any(e["id"] == replay_id for e in events(page, "r", "pulse-failure")), 30, 0.1,
               "the replay's failure")  # the same token reads the replay
    state = page.evaluate("document.getElementById('r').state")
    assert state["id"] == replay_id and state["replay_of"] == task_id and state["status"] == "failed"
    assert any(e["status"] == "replayed" and e["id"] == task_id for e in events(page, "r", "pulse-progress"))
    assert not js_errors.script_errors()


def test_task_text_reaches_the_widget_as_text_only(embed, page, js_errors):
    pulse, host = embed.pulse, embed.host
    task_id = pulse.launch("tasks.demo.fail_with_details", step=1, delay=0.01, input=PAYLOAD)
    pulse.wait_for(task_id, "failed")
    token = task_token(pulse, task_id)
    body = widget(id="f", task=task_id, token=token, label_failure=IMG) + widget(
        id="forged", task="forged-task", token="forged-token")

    # A forged answer carries the payload in every field the widget draws.
    forged = {"id": "forged-task", "name": NAME, "status": "failed", "state": "FAILURE",
              "progress": {"current": 3, "total": 10, "percent": 30.0, "message": PAYLOAD, "rate": None,
                           "eta_seconds": None},
              "result": PAYLOAD, "started_at": None, "finished_at": None, "retries": 0, "replay_of": None,
              "replayed_by": None, "revoke_requested_at": None, "can_cancel": False,
              "failure": {"exc_type": "ValueError", "exc_message": PAYLOAD, "details": {PAYLOAD: PAYLOAD}}}
    block_websockets(page)
    page.route(lambda url: "/api/tasks/forged-task" in url, lambda route: route.fulfill(
        json=forged, headers={"Access-Control-Allow-Origin": host.origin}))
    page.goto(host.put("/payload.html", host_page(pulse.base_url, body)))

    expect(part(page, "f", "status")).to_have_text(IMG)
    expect(part(page, "f", "message")).to_have_text("record 1 could not be parsed")
    details = part(page, "f", "details")
    expect(details.locator("li")).to_have_count(2)
    keys = details.locator("li").evaluate_all("items => items.map(i => i.dataset.key)")
    assert sorted(keys) == ["hint", "step"]
    expect(details).not_to_contain_text("<img")  # the input was not exposed to token holders
    expect(part(page, "forged", "message")).to_have_text(PAYLOAD)
    expect(part(page, "forged", "details")).to_have_text(f"{PAYLOAD}: {PAYLOAD}")
    expect(part(page, "forged", "bar")).to_have_attribute("aria-valuetext", f"30% — {PAYLOAD}")
    wait_for_event(page, "forged", "pulse-failure")
    wait_for_event(page, "f", "pulse-failure")
    for widget_id in ("f", "forged"):
        count = page.evaluate(f"document.getElementById('{widget_id}').shadowRoot"
                              ".querySelectorAll('img, script').length")
        assert count == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is False
    assert not js_errors.page_errors


def test_the_widget_and_the_embed_page_write_no_html():
    source = (ROOT / "static" / "widget.js").read_text()
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("//"))
    assert not FORBIDDEN_JS.findall(code)
    assert source.count("'use strict'") == 1 and " import " not in code and "export " not in code
    template = (ROOT / "templates" / "embed.html").read_text()
    assert "|safe" not in template.replace(" ", "") and "autoescape false" not in template
    assert "Markup" not in template
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", template, re.S)
    assert scripts == [(' src="{{ widget_url }}" defer', "")]  # the widget by URL, no inline script
    assert "{% extends" not in template
