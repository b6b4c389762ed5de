"""Login, sessions and the pages they guard."""

import logging

import pytest

from pulse.agent.tokens import mint_token

from ..conftest import TOKEN


def test_dashboard_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_wrong_token_is_refused_with_a_message(client):
    response = client.post("/login", data={"token": "wrong"})
    assert response.status_code == 401
    assert b"not valid" in response.data


def test_login_sets_an_httponly_samesite_session(client):
    response = client.post("/login", data={"token": TOKEN})
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
    response = client.post("/login", query_string={"next": target}, data={"token": TOKEN})
    assert response.headers["Location"] == "/"


def test_login_returns_to_the_page_asked_for(client):
    response = client.post("/login", query_string={"next": "/tasks?status=failed"}, data={"token": TOKEN})
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


def test_failed_logins_are_throttled_per_address(app, client):
    limit = app.config["LOGIN_ATTEMPTS"]
    for _ in range(int(limit)):
        assert client.post("/login", data={"token": "wrong-token-0123456789"}).status_code == 401
    refused = client.post("/login", data={"token": TOKEN})  # even the right token must wait
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert b"Too many failed attempts" in refused.data
    other = app.test_client().post("/login", data={"token": TOKEN},
                                   environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 302  # another address is not affected


def test_the_throttle_window_ends_with_the_minute(app):
    throttle = app.extensions["pulse_login_throttle"]
    for _ in range(int(app.config["LOGIN_ATTEMPTS"])):
        throttle.failed("198.51.100.1", now=120.0)
    assert throttle.retry_after("198.51.100.1", now=130.0) == 50
    assert throttle.retry_after("198.51.100.1", now=180.0) is None


@pytest.fixture
def failing_app(app):
    # An unhandled error is the one place Flask logs a request by itself (with a traceback).
    app.add_url_rule("/api/fails", "fails", lambda: 1 / 0)
    return app


def test_tokens_never_reach_the_log(failing_app, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    client = failing_app.test_client()
    wrong, forged = "wrong-token-0123456789", mint_token("not-this-servers-secret", task_id="a")[0]
    assert client.post("/login", data={"token": wrong}).status_code == 401
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/api/tasks/a", query_string={"token": forged}).status_code == 401
    response = client.get("/api/fails", query_string={"token": forged},
                          headers={"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": wrong})
    assert response.status_code == 500
    assert "ZeroDivisionError" in caplog.text  # the error was logged...
    for secret in (TOKEN, wrong, forged):
        assert secret not in caplog.text  # ...without the request's credentials

