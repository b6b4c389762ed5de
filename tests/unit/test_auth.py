"""Login, sessions and the pages they guard."""

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


def test_login_never_redirects_off_site(client):
    response = client.post("/login?next=//evil.example/x", data={"token": TOKEN})
    assert response.headers["Location"] == "/"


def test_logout_ends_the_session(logged_in):
    client, _csrf = logged_in
    client.post("/logout")
    assert client.get("/").status_code == 302


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
