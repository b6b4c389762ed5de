"""Login, sessions and the pages they guard."""

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from pulse.agent.tokens import mint_token
from pulse.server.http.throttle import Throttled
from tests.conftest import demo_server

from ..conftest import TOKEN, log_in


def test_dashboard_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_wrong_token_is_refused_with_a_message(client):
    response = log_in(client, "wrong")
    assert response.status_code == 401
    assert b"not valid" in response.data


def test_login_sets_an_httponly_samesite_session(client):
    response = log_in(client, TOKEN)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert b'name="csrf-token"' in page.data
    assert TOKEN.encode() not in page.data  # the operator token never reaches a page


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "/\t/evil.example",
                                    "https://evil.example/", "javascript:alert(1)"])
def test_login_never_redirects_off_site(client, target):
    response = log_in(client, TOKEN, query_string={"next": target})
    assert response.headers["Location"] == "/"


def test_login_returns_to_the_page_asked_for(client):
    response = log_in(client, TOKEN, query_string={"next": "/tasks?status=failed"})
    assert response.headers["Location"] == "/tasks?status=failed"


def test_logout_ends_the_session(logged_in):
    client, csrf = logged_in
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("form", [{}, {"csrf_token": "forged"}])
def test_logout_without_the_sessions_csrf_token_is_refused(logged_in, form):
    client, _csrf = logged_in
    refused = client.post("/logout", data=form)  # what a forged cross-site form would send
    assert refused.status_code == 403 and "csrf_token" in refused.get_json()["error"]
    assert client.get("/").status_code == 200  # still logged in


def test_failed_logins_are_throttled_per_address(redis_url):
    app = throttled_app(redis_url, 3)
    client = app.test_client()
    for _ in range(3):
        assert log_in(client, "wrong-token-0123456789").status_code == 401
    refused = log_in(client, TOKEN)  # even the right token must wait
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert b"Too many failed attempts" in refused.data
    other = log_in(app.test_client(), TOKEN, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 302  # another address is not affected


def test_the_throttle_window_ends_with_the_minute(app):
    throttle = app.extensions["pulse_auth_throttle"]
    limit = int(app.config["AUTH_ATTEMPTS"])
    throttle.limit = 2
    for _ in range(2):
        throttle.check("198.51.100.1", failed=True, now=120.0)
    with pytest.raises(Throttled) as refused:
        throttle.check("198.51.100.1", failed=False, now=130.0)
    assert refused.value.retry_after == 50
    throttle.check("198.51.100.1", failed=False, now=180.0)  # the next minute
    assert limit > 2


def throttled_app(redis_url, limit: int):
    return demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "PULSE_ASYNC_MODE": "threading",
                        "PULSE_AUTH_ATTEMPTS": str(limit),
                        "PULSE_REGISTRY_PREFIX": f"th{uuid.uuid4().hex[:8]}:"})


@pytest.mark.parametrize("how", ["api", "metrics", "task-token", "socket"])
def test_every_kind_of_credential_check_is_throttled(redis_url, how):
    """Failed bearer tokens on /api and /metrics, forged per-task tokens and the Socket.IO auth
    payload count like failed logins; past the limit even the right credential gets 429."""
    app = throttled_app(redis_url, 2)
    client = app.test_client()

    def attempt(token: str) -> int:
        if how == "api":
            return client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code
        if how == "metrics":
            return client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code
        if how == "task-token":
            return client.get("/api/tasks/t-1", query_string={"token": token}).status_code
        socket = app.extensions["socketio"].test_client(app, auth={"token": token})
        return 200 if socket.is_connected() else 401

    assert [attempt("wrong-token-0123456789") for _ in range(2)] == [401, 401]
    right = TOKEN if how != "task-token" else mint_token(app.config["GRANT_KEY"], task_id="t-1")[0]
    assert attempt(right) == (401 if how == "socket" else 429)  # a refused connect has no status
    if how != "socket":  # (Flask-SocketIO's test client has no client address of its own)
        assert log_in(client, TOKEN).status_code == 429  # the login form shares the budget


def test_a_parallel_burst_gets_no_more_answers_than_the_limit(redis_url):
    """The check and the count are one atomic step: 20 guesses at once get 5 answers, not 20."""
    app = throttled_app(redis_url, 5)

    def guess(_):
        return app.test_client().get("/api/tasks", headers={"Authorization": "Bearer wrong-0123456789abc"})

    with ThreadPoolExecutor(20) as pool:
        statuses = sorted(response.status_code for response in pool.map(guess, range(20)))
    assert statuses.count(401) == 5 and statuses.count(429) == 15, statuses
    metrics = app.extensions["pulse_metrics"].render().decode()
    assert 'pulse_credential_refusals_total{outcome="failed"} 5.0' in metrics
    assert 'pulse_credential_refusals_total{outcome="throttled"} 15.0' in metrics


def test_the_login_form_needs_its_csrf_token(client):
    """Login CSRF: a form posted from another site carries no token of this browser's session."""
    refused = client.post("/login", data={"token": TOKEN})
    assert refused.status_code == 400 and b"another site" in refused.data
    assert client.get("/").status_code == 302  # not logged in
    forged = client.post("/login", data={"token": TOKEN, "csrf_token": "forged"})
    assert forged.status_code == 400
    assert log_in(client, TOKEN).status_code == 302



@pytest.fixture
def failing_app(app):
    # An unhandled error is the one place Flask logs a request by itself (with a traceback).
    app.add_url_rule("/api/fails", "fails", lambda: 1 / 0)
    return app


def test_tokens_never_reach_the_log(failing_app, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    client = failing_app.test_client()
    wrong, forged = "wrong-token-0123456789", mint_token("not-this-servers-secret", task_id="a")[0]
    assert log_in(client, wrong).status_code == 401
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/api/tasks/a", query_string={"token": forged}).status_code == 401
    response = client.get("/api/fails", query_string={"token": forged},
                          headers={"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": wrong})
    assert response.status_code == 500
    assert "ZeroDivisionError" in caplog.text  # the error was logged...
    for secret in (TOKEN, wrong, forged):
        assert secret not in caplog.text  # ...without the request's credentials

