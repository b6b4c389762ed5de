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
