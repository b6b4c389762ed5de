"""The HTTP API in-process: status, launching, validation and auth refusals."""

import pytest

from tasks.demo import LAUNCHABLE as DEMO_TASKS


def test_healthz_needs_no_credentials_and_reports_redis(client):
    data = client.get("/healthz").get_json()
    assert data["redis"] == {"ok": True}
    assert data["monitor"]["connected"] is False  # no background monitor in-process
    assert data["status"] == "degraded"


def test_unknown_id_is_404_with_status_unknown(client, auth_headers):
    response = client.get("/api/tasks/0b4d5c1e-2f7a-4c43-9a8e-0f8b0a6f4d21", headers=auth_headers)
    assert response.status_code == 404
    assert response.get_json()["status"] == "unknown"
    assert response.get_json()["state"] is None


@pytest.mark.parametrize("bad", ["has space", "a;b", "x" * 300, "a/b", "<script>alert(1)</script>"])
def test_malformed_id_is_400(client, auth_headers, bad):
    response = client.get(f"/api/tasks/{bad}", headers=auth_headers)
    assert response.status_code == 400
    assert "malformed task id" in response.get_json()["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": "Basic abc"}])
def test_api_refuses_missing_or_wrong_tokens(client, headers):
    assert client.get("/api/tasks/abc", headers=headers).status_code == 401
    response = client.post("/api/tasks", json={"name": DEMO_TASKS[0]}, headers=headers)
    assert response.status_code == 401
    assert "error" in response.get_json()


def test_launch_answers_202_and_the_task_is_known_at_once(client, auth_headers):
    response = client.post("/api/tasks", json={"name": "tasks.demo.count", "kwargs": {"total": 1}},
                           headers=auth_headers)
    assert response.status_code == 202
    task_id = response.get_json()["id"]
    assert response.headers["Location"] == f"/api/tasks/{task_id}"
    data = client.get(f"/api/tasks/{task_id}", headers=auth_headers).get_json()
    assert data["status"] == "scheduled" and data["name"] == "tasks.demo.count"


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [({"name": "os.system", "args": ["rm -rf /"]}, 403, "allow-list"),
     ({"name": ""}, 400, "name"), ({"name": "tasks.demo.count", "args": {}}, 400, "args"),
     ({"name": "tasks.demo.count", "kwargs": []}, 400, "kwargs"), ([1, 2], 400, "JSON object")],
)
def test_launch_validation(client, auth_headers, body, status, text):
    response = client.post("/api/tasks", json=body, headers=auth_headers)
    assert response.status_code == status
    assert text in response.get_json()["error"]


def test_launch_rejects_non_json_and_huge_bodies(client, auth_headers):
    response = client.post("/api/tasks", data="not json", headers=auth_headers)
    assert response.status_code == 400
    response = client.post("/api/tasks", data="x" * 100_000, headers=auth_headers,
                           content_type="application/json")
    assert response.status_code == 413
    assert "error" in response.get_json()


def test_launch_with_the_broker_down_is_503(redis_url):
    from tests.conftest import demo_server

    from ..conftest import TOKEN

    # The registry's Redis is up (credentials are checked there), the broker is not.
    app = demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "BROKER_URL": "redis://127.0.0.1:1/0",
                      "PULSE_ASYNC_MODE": "threading"})
    response = app.test_client().post("/api/tasks", json={"name": "tasks.demo.count"},
                                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503
    assert "broker is unreachable" in response.get_json()["error"]


def test_session_mutations_need_the_csrf_token(logged_in):
    client, csrf = logged_in
    body = {"name": "tasks.demo.count", "kwargs": {"total": 1}}
    assert client.post("/api/tasks", json=body).status_code == 403
    assert client.post("/api/tasks", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/api/tasks", json=body, headers={"X-CSRF-Token": csrf}).status_code == 202
    assert client.get("/api/tasks/abc").status_code == 404  # reads need no CSRF token


def test_unknown_api_routes_answer_json(client, auth_headers):
    response = client.get("/api/nothing-here", headers=auth_headers)
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_a_line_feed_in_an_id_is_a_malformed_id(client, auth_headers):
    assert client.get("/api/tasks/a%0Ab", headers=auth_headers).status_code == 400
    assert client.delete("/api/tasks/a%0Ab", headers=auth_headers).status_code == 400


def test_405_keeps_its_allow_header(client, auth_headers):
    response = client.put("/api/workers", headers=auth_headers)
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert "error" in response.get_json()


def test_redis_down_answers_503_not_500():
    from tests.conftest import demo_server

    from ..conftest import TOKEN

    app = demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": "redis://127.0.0.1:1/0",
                      "PULSE_ASYNC_MODE": "threading", "PULSE_REDIS_TIMEOUT": "1"})
    client, headers = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/tasks", "/api/tasks/abc", "/api/tasks/counts", "/api/workers", "/metrics"):
        response = client.get(path, headers=headers)
        assert response.status_code == 503, path
        assert "Redis is unreachable" in response.get_json()["error"]
    launch = client.post("/api/tasks", json={"name": "tasks.demo.count", "goal": "g"}, headers=headers)
    assert launch.status_code == 503
    assert client.get("/healthz").get_json()["redis"]["ok"] is False


@pytest.mark.parametrize("key", ["q", "name", "worker", "state"])
def test_a_text_filter_over_1000_characters_is_refused(client, auth_headers, key):
    assert client.get("/api/tasks", query_string={key: "x" * 1000}, headers=auth_headers).status_code == 200
    response = client.get("/api/tasks", query_string={key: "x" * 1001}, headers=auth_headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": f"{key} is at most 1000 characters"}


def test_a_launch_on_a_broken_pooled_channel_is_retried_on_a_new_connection():
    """After a broker restart kombu failed inside the publish (AttributeError on a closed
    channel's connection) and the launch answered 500 (seen in CI's Redis-kill test). The retry
    takes a connection of its own and leaves the pool alone: closing the pool instead made every
    other user of it fail ("Acquire on closed pool", seen in CI too)."""
    from contextlib import contextmanager

    from pulse.server.model.actions import ActionError, Actions

    class Sent:
        id = "t-1"

    calls = []

    class App:  # no `pool`: touching it fails the test
        class amqp:  # noqa: N801 - Celery's attribute name
            @staticmethod
            def Producer(connection):  # noqa: N802 - Celery's attribute name
                return ("producer on", connection)

        @staticmethod
        @contextmanager
        def connection_for_write():
            calls.append("new connection")
            yield "fresh"

        @staticmethod
        def send_task(name, producer=None, **_):
            calls.append(producer)
            if len(calls) == 1:
                raise AttributeError("'NoneType' object has no attribute 'client'")
            return Sent()

    actions = object.__new__(Actions)
    actions.celery = App
    assert actions._send("tasks.demo.count", [], {}) == "t-1"
    assert calls == [None, "new connection", ("producer on", "fresh")]
    calls.clear()
    App.send_task = staticmethod(lambda name, **_: (_ for _ in ()).throw(AttributeError("again")))
    try:
        actions._send("tasks.demo.count", [], {})
    except ActionError as refused:
        assert refused.status == 503 and "AttributeError" in str(refused)
    else:
        raise AssertionError("a second failure must answer 503")
