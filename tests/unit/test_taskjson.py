"""The task JSON built from monitor records and raw result-backend entries."""

import pytest

from pulse.monitor import PulseState
from pulse.taskjson import status_of, task_json, unknown_json, valid_id


@pytest.mark.parametrize(
    ("state", "status"),
    [("PENDING", "scheduled"), ("RECEIVED", "scheduled"), ("STARTED", "running"),
     ("PROGRESS", "running"), ("RETRY", "retrying"), ("SUCCESS", "finished"), ("FAILURE", "failed"),
     ("REVOKED", "revoked"), ("REJECTED", "failed"), ("CUSTOM", "running"), (None, "unknown")],
)
def test_status_of(state, status):
    assert status_of(state) == status


@pytest.mark.parametrize(
    "task_id", ["0b4d5c1e-2f7a-4c43-9a8e-0f8b0a6f4d21", "report:2024-06", "a", "A.b_c-d"]
)
def test_valid_ids(task_id):
    assert valid_id(task_id)


@pytest.mark.parametrize(
    "task_id", ["", "-leading", "has space", "semi;colon", "<script>", "x" * 256, None, 42]
)
def test_malformed_ids(task_id):
    assert not valid_id(task_id)


def test_nothing_known_is_unknown_not_pending():
    data = task_json("abc")
    assert data == unknown_json("abc")
    assert data["status"] == "unknown" and data["state"] is None


def test_from_backend_progress_only():
    meta = {"status": "PROGRESS", "result": {"current": 3, "total": 4, "percent": 75.0, "message": "m"},
            "name": "tasks.demo.count", "worker": "w@h"}
    data = task_json("abc", None, meta)
    assert data["status"] == "running"
    assert data["progress"] == {"current": 3, "total": 4, "percent": 75.0, "message": "m"}
    assert data["name"] == "tasks.demo.count" and data["worker"] == "w@h"
    assert data["finished_at"] is None


def test_from_backend_success_reads_100_percent_and_keeps_the_result():
    meta = {"status": "SUCCESS", "result": {"rows": [1, 2]}, "date_done": "2026-01-02T03:04:05+00:00"}
    data = task_json("abc", None, meta)
    assert data["result"] == {"rows": [1, 2]}
    assert data["progress"]["percent"] == 100.0
    assert data["finished_at"] == 1767323045.0
    assert data["failure"] is None


def test_from_backend_structured_failure_separates_custom_details():
    meta = {"status": "FAILURE", "traceback": "Traceback ...", "result": {
        "exc_type": "ValueError", "exc_message": ["bad row"], "exc_module": "builtins",
        "step": 3, "input": "<b>x</b>"}}
    failure = task_json("abc", None, meta)["failure"]
    assert failure == {"exc_type": "ValueError", "exc_message": "bad row", "traceback": "Traceback ...",
                       "details": {"step": 3, "input": "<b>x</b>"}}


def _task(*events):
    state = PulseState()
    for number, (kind, fields) in enumerate(events):
        state.event({"type": kind, "uuid": "t1", "hostname": "w@h", "timestamp": 100.0 + number,
                     "local_received": 100.0 + number, "clock": number, **fields})
    return state.tasks["t1"]


def test_events_and_backend_merge_to_the_later_state():
    task = _task(("task-started", {}))
    data = task_json("t1", task, {"status": "SUCCESS", "result": 5})
    assert data["state"] == "SUCCESS" and data["result"] == 5
    assert data["started_at"] == 100.0


def test_events_win_a_tie_with_the_backend():
    task = _task(("task-progress", {"current": 8, "total": 10, "percent": 80.0, "message": "live"}))
    meta = {"status": "PROGRESS", "result": {"current": 2, "total": 10, "percent": 20.0, "message": "old"}}
    assert task_json("t1", task, meta)["progress"]["message"] == "live"


def test_plain_celery_failure_from_the_event():
    task = _task(("task-failed", {"exception": "KeyError('x')", "traceback": "tb"}))
    failure = task_json("t1", task)["failure"]
    assert failure == {
        "exc_type": "KeyError", "exc_message": "KeyError('x')", "traceback": "tb", "details": {}}


def test_runtime_from_start_and_finish():
    task = _task(("task-started", {}), ("task-failed", {"exception": "E()"}))
    data = task_json("t1", task)
    assert data["started_at"] == 100.0 and data["finished_at"] == 101.0 and data["runtime"] == 1.0
