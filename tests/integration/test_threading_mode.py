"""The server in PULSE_ASYNC_MODE=threading (eventlet is in maintenance mode upstream)."""

import pytest

from pulse import devstack

from ..conftest import start_server, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def threading_stack(redis_url, worker):
    proc, log, running = start_server(redis_url, "web-threading", PULSE_ASYNC_MODE="threading")
    yield running
    devstack.stop(proc)
    log.close()


def test_progress_reaches_a_socket_client_in_threading_mode(threading_stack):
    stack = threading_stack
    client = stack.socket()
    pushes = []
    client.on("task", pushes.append)
    try:
        task_id = stack.launch("tasks.demo.count", total=10, delay=0.1)
        assert client.call("subscribe", {"task": task_id}, timeout=10)["task"]["id"] == task_id
        wait_until(lambda: any(t["status"] == "finished" for t in pushes), 30, what="success push")
        dashboard = client.call("subscribe", {"dashboard": True}, timeout=10)
    finally:
        client.disconnect()
    running = [t for t in pushes if t["status"] == "running" and t["progress"]]
    assert running and 0 < running[0]["progress"]["percent"] < 100
    assert pushes[-1]["result"] == 10
    assert task_id in [t["id"] for t in dashboard["tasks"]]
    assert stack.api("GET", f"/api/tasks/{task_id}").json()["status"] == "finished"
