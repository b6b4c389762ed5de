"""The viewer token: reads everything, changes nothing, whatever the request says."""

import pytest

from tests.conftest import demo_server

from ..conftest import TOKEN, log_in

VIEWER = "viewer-token-0123456789abcdef"


@pytest.fixture
def app(redis_url):
    return demo_server({"PULSE_TOKEN": TOKEN, "PULSE_VIEWER_TOKEN": VIEWER, "REDIS_URL": redis_url,
                       "PULSE_ASYNC_MODE": "threading", "PULSE_REGISTRY_PREFIX": "viewer-test:"})


@pytest.fixture
def viewer():
    return {"Authorization": f"Bearer {VIEWER}"}


def test_a_viewer_reads(app, viewer):
    client = app.test_client()
    for path in ("/api/tasks", "/api/tasks/counts", "/api/workers", "/api/audit", "/metrics"):
        assert client.get(path, headers=viewer).status_code == 200, path
    assert client.get("/api/tasks/nope", headers=viewer).status_code == 404


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/api/tasks"), ("post", "/api/tasks/x/revoke"), ("post", "/api/tasks/x/replay"),
    ("post", "/api/tasks/x/skip"), ("delete", "/api/tasks/x"),
])
def test_a_viewer_changes_nothing(app, viewer, method, path):
    app.extensions["pulse_registry"].write("x", "failed", fields={"call": {"args": [], "kwargs": {}}})
    response = getattr(app.test_client(), method)(path, json={"name": "tasks.demo.count"}, headers=viewer)
    assert response.status_code == 403 and "read-only" in response.get_json()["error"]
    assert app.extensions["pulse_registry"].get("x")["status"] == "failed"


def test_a_viewer_session_is_read_only_even_with_its_csrf_token(app):
    client = app.test_client()
    assert log_in(client, VIEWER).status_code == 302
    with client.session_transaction() as session:
        assert "role" not in session  # the role is the server's record's, not the cookie's
        csrf = session["csrf"]
    page = client.get("/")
    assert page.status_code == 200 and '<span class="role-badge">viewer</span>' in page.text
    response = client.post("/api/tasks", json={"name": "tasks.demo.count"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403


def test_a_viewer_may_watch_live(app):
    socketio = app.extensions["socketio"]
    client = socketio.test_client(app, auth={"token": VIEWER})
    assert client.is_connected()
    assert "tasks" in client.emit("subscribe", {"dashboard": True}, callback=True)


def test_the_viewer_token_must_differ_from_the_operator_token(redis_url):
    from pulse.settings import ConfigError

    with pytest.raises(ConfigError, match="PULSE_VIEWER_TOKEN"):
        demo_server({"PULSE_TOKEN": TOKEN, "PULSE_VIEWER_TOKEN": TOKEN, "REDIS_URL": redis_url})
