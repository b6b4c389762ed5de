"""Security, round two, on real servers: one key per purpose, sessions that end, throttled
credential checks, and grants the server bounds (the embed page, the host's clock, lifetimes).

Each test here failed on the code before these fixes; the README's security text says what they hold.
"""

import hashlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import socketio
from flask.json.tag import TaggedJSONSerializer
from itsdangerous import URLSafeTimedSerializer

import pulse
from pulse.agent.tokens import mint_token
from pulse.record.registry import Registry

from ..conftest import TOKEN, Stack, db_url, flush_db, log_in, own_server, wait_until

pytestmark = pytest.mark.integration

DB = 12
VIEWER = "viewer-token-0123456789abcdef"
MASTER = "master-key-0123456789abcdef0123456789"


def host_key(env: dict[str, str]) -> str:
    """The key the README tells a host app to mint grants with."""
    return pulse.grant_key_from_env(env)


def forged_cookie(key: str, **session: str) -> str:
    """A session cookie signed as Flask signs its own, with ``key``."""
    signer = {"key_derivation": "hmac", "digest_method": hashlib.sha1}
    serializer = URLSafeTimedSerializer(key, salt="cookie-session", serializer=TaggedJSONSerializer(),
                                        signer_kwargs=signer)
    return serializer.dumps(session)


def seed(registry: Registry) -> str:
    task_id = f"a-{uuid.uuid4().hex[:10]}"
    registry.write(task_id, "running", fields={"name": "tasks.demo.count", "worker": "w@keys",
                                               "call": {"args": [], "kwargs": {"total": 1}}})
    return task_id


def socket_with(stack: Stack, cookie: str | None = None, auth: dict | None = None,
                origin: str | None = None) -> socketio.Client:
    """A websocket client from the server's own pages (its Origin), carrying ``cookie``."""
    client = socketio.Client(reconnection=False,
                             websocket_extra_options={"origin": origin or stack.base_url})
    client.connect(stack.base_url, auth=auth, transports=["websocket"], wait_timeout=10,
                   headers={"Cookie": f"pulse_session={cookie}"} if cookie else {})
    return client


def refused_socket(stack: Stack, **kwargs) -> bool:
    try:
        socket_with(stack, **kwargs).disconnect()
    except socketio.exceptions.ConnectionError:
        return True
    return False


def with_cookie(stack: Stack, method: str, path: str, cookie: str, **kwargs) -> requests.Response:
    return requests.request(method, stack.base_url + path, cookies={"pulse_session": cookie},
                            allow_redirects=False, timeout=10, **kwargs)


def logged_in(stack: Stack, token: str) -> tuple[str, str]:
    """Log in through the form; returns (the session cookie, its CSRF token)."""
    browser = requests.Session()
    assert log_in(browser, token, stack.base_url, allow_redirects=False, timeout=10).status_code == 302
    page = browser.get(stack.base_url + "/", timeout=10)
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    return browser.cookies["pulse_session"], csrf


def session_works(stack: Stack, cookie: str) -> dict[str, bool]:
    return {"page": with_cookie(stack, "GET", "/", cookie).status_code == 200,
            "api": with_cookie(stack, "GET", "/api/tasks/counts", cookie).status_code == 200,
            "socket": not refused_socket(stack, cookie=cookie)}


@pytest.fixture(scope="module")
def url(redis_url) -> Iterator[str]:
    url = db_url(redis_url, DB)
    flush_db(url)
    yield url
    flush_db(url)


@pytest.fixture(scope="module")
def server(url) -> Iterator[Stack]:
    with own_server(url, "web-keys", PULSE_SECRET_KEY=MASTER, PULSE_VIEWER_TOKEN=VIEWER,
                    PULSE_GRANT_MAX_TTL="1d") as (_proc, stack):
        yield stack


# --- 1. One key per purpose -------------------------------------------------------------------------


def test_a_session_signed_with_the_host_apps_key_is_refused_everywhere(server):
    """The host's key mints grants; a session cookie it signs (role operator, a CSRF value of its
    choice) opens no page, no API call, no mutation and no socket."""
    forged = forged_cookie(host_key(server.env), role="operator", csrf="chosen", sid="chosen")
    assert with_cookie(server, "GET", "/", forged).status_code == 302
    assert with_cookie(server, "GET", "/api/tasks", forged).status_code == 401
    mint = with_cookie(server, "POST", f"/api/tasks/{seed(server.celery.pulse.registry)}/token", forged,
                       headers={"X-CSRF-Token": "chosen"})
    assert mint.status_code == 401
    launch = with_cookie(server, "POST", "/api/tasks", forged, headers={"X-CSRF-Token": "chosen"},
                         json={"name": "tasks.demo.count", "kwargs": {"total": 1}})
    assert launch.status_code == 401
    assert refused_socket(server, cookie=forged)
    # The host's key still does what it is for: a grant for one task.
    task_id = seed(server.celery.pulse.registry)
    grant = mint_token(host_key(server.env), task_id=task_id)[0]
    assert requests.get(f"{server.base_url}/api/tasks/{task_id}", params={"token": grant},
                        timeout=10).status_code == 200


# --- 4. Sessions end ------------------------------------------------------------------------------------


def test_logout_ends_the_session_on_every_server(url, server):
    with own_server(url, "web-keys-2", PULSE_SECRET_KEY=MASTER, PULSE_VIEWER_TOKEN=VIEWER,
                    PULSE_TOKEN_RECHECK_INTERVAL="0.5") as (_proc, other):
        cookie, csrf = logged_in(server, TOKEN)
        assert session_works(server, cookie) == session_works(other, cookie) == \
            {"page": True, "api": True, "socket": True}
        open_socket = socket_with(other, cookie=cookie)  # a dashboard open on the other server
        try:
            assert "tasks" in open_socket.call("subscribe", {"dashboard": True}, timeout=10)
            logout = with_cookie(server, "POST", "/logout", cookie, data={"csrf_token": csrf})
            assert logout.status_code == 302
            # A copy of the cookie, kept from before the logout, opens nothing anywhere.
            assert session_works(server, cookie) == session_works(other, cookie) == \
                {"page": False, "api": False, "socket": False}
            wait_until(lambda: not open_socket.connected, 5, what="the logged-out socket's disconnect")
        finally:
            open_socket.disconnect()


def test_rotating_a_credential_ends_the_sessions_made_with_it(url):
    """With PULSE_SECRET_KEY set the session key stays; the session records which credential made it."""
    with own_server(url, "web-rotate-1", PULSE_SECRET_KEY=MASTER, PULSE_VIEWER_TOKEN=VIEWER) as (_p, first):
        viewer, _ = logged_in(first, VIEWER)
        operator, _ = logged_in(first, TOKEN)
    new_viewer = "viewer-token-rotated-0123456789"
    with own_server(url, "web-rotate-2", PULSE_SECRET_KEY=MASTER,
                    PULSE_VIEWER_TOKEN=new_viewer) as (_p, second):
        assert not any(session_works(second, viewer).values())
        assert all(session_works(second, operator).values())  # its own credential did not change
    new_token = "operator-token-rotated-0123456789"
    with own_server(url, "web-rotate-3", PULSE_SECRET_KEY=MASTER, PULSE_TOKEN=new_token,
                    PULSE_VIEWER_TOKEN=new_viewer) as (_p, third):
        assert not any(session_works(third, operator).values())


# --- 5. Throttles ------------------------------------------------------------------------------------


def test_every_credential_check_is_throttled_atomically(redis_url):
    """40 wrong bearer tokens at once get exactly 5 answers; then the right token gets 429 on the
    API, /metrics, the login form and the Socket.IO auth alike, until the minute ends."""
    url = db_url(redis_url, DB + 1)  # a count of failures of its own
    flush_db(url)
    with own_server(url, "web-throttle", PULSE_AUTH_ATTEMPTS="5") as (_proc, stack):
        def guess(index: int) -> int:
            return stack.api("GET", "/api/tasks", token=f"wrong-guess-{index:04d}-0123456789").status_code

        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(guess, range(40)))
        assert (statuses.count(401), statuses.count(429)) == (5, 35), statuses
        assert stack.api("GET", "/api/tasks").status_code == 429
        metrics = stack.api("GET", "/metrics")
        assert metrics.status_code == 429 and 0 < int(metrics.headers["Retry-After"]) <= 60
        assert log_in(requests.Session(), TOKEN, stack.base_url, allow_redirects=False,
                      timeout=10).status_code == 429
        assert refused_socket(stack, auth={"token": TOKEN})
    flush_db(url)


def test_the_login_form_refuses_a_post_without_its_csrf_token(server):
    """Login CSRF: another site's form cannot log a visitor in to a session of its choosing."""
    response = requests.post(server.base_url + "/login", data={"token": TOKEN}, allow_redirects=False,
                             timeout=10)
    assert response.status_code == 400 and "another site" in response.text
    # What it sets is a fresh login form's cookie, which opens nothing.
    assert not any(session_works(server, response.cookies["pulse_session"]).values())


# --- 6. Grants --------------------------------------------------------------------------------------


def test_the_embed_page_takes_task_and_group_grants_only(server):
    task_id = seed(server.celery.pulse.registry)
    operator = requests.get(f"{server.base_url}/embed/{task_id}", params={"token": TOKEN}, timeout=10)
    assert operator.status_code == 401 and TOKEN not in operator.text
    other = mint_token(host_key(server.env), task_id=seed(server.celery.pulse.registry))[0]
    foreign = requests.get(f"{server.base_url}/embed/{task_id}", params={"token": other}, timeout=10)
    assert foreign.status_code == 403 and other not in foreign.text
    grant = mint_token(host_key(server.env), task_id=task_id)[0]
    page = requests.get(f"{server.base_url}/embed/{task_id}", params={"token": grant}, timeout=10)
    assert page.status_code == 200 and grant in page.text


def test_a_host_clock_ahead_escapes_neither_revocation_nor_the_servers_cap(server):
    registry, key = server.celery.pulse.registry, host_key(server.env)

    def status(task_id: str, token: str) -> int:
        return requests.get(f"{server.base_url}/api/tasks/{task_id}", params={"token": token},
                            timeout=10).status_code

    task_id = seed(registry)
    ahead = mint_token(key, task_id=task_id, now=time.time() + 20)[0]  # a host clock 20 s ahead
    assert status(task_id, ahead) == 200
    assert server.api("DELETE", f"/api/tasks/{task_id}/tokens").status_code == 200
    assert status(task_id, ahead) == 403
    far = mint_token(key, task_id=task_id, now=time.time() + 3600)[0]  # an hour ahead: refused
    assert status(seed(registry), far) == 401 and status(task_id, far) == 401
    # A week's grant, minted two days ago, on a server that caps grants at a day (PULSE_GRANT_MAX_TTL).
    other = seed(registry)
    old = mint_token(key, task_id=other, ttl=7 * 86400, now=time.time() - 2 * 86400)[0]
    assert status(other, old) == 401
    fresh = server.api("POST", f"/api/tasks/{other}/token", json={"ttl": 7 * 86400})
    assert fresh.status_code == 400 and "86400" in fresh.json()["error"]


def test_a_cancel_right_extends_to_replays_as_the_readme_says(server):
    """The decision written in the README: a replay is the same job run again, so the token that
    may cancel the task may cancel its replays (up to 10 hops) too, and nothing else."""
    registry = server.celery.pulse.registry
    task_id = seed(registry)
    replay = f"r-{uuid.uuid4().hex[:10]}"
    registry.write(replay, "running", fields={"name": "tasks.demo.count", "replay_of": task_id})
    unrelated = seed(registry)
    token = mint_token(host_key(server.env), task_id=task_id, cancel=True)[0]

    def cancel(target: str) -> int:
        return requests.post(f"{server.base_url}/api/tasks/{target}/cancel",
                             headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    assert cancel(replay) == 200
    assert cancel(unrelated) == 403
