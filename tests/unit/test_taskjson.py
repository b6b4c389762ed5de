"""The task JSON built from registry records, and the writes that events and backend entries mean."""

import pytest

from pulse.record.statuses import status_of
from pulse.server.model.taskjson import record_json, unknown_json, valid_id
from pulse.server.model.writes import event_write, meta_write


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
    data = record_json(None, "abc")
    assert data == unknown_json("abc")
    assert data["status"] == "unknown" and data["state"] is None
    assert (data["can_replay"], data["can_skip"], data["can_revoke"], data["is_resolved"]) == (False,) * 4


def _record(**fields):
    return {"id": "t1", "name": "tasks.demo.count", **fields}


def test_running_record_with_rate_and_eta():
    record = _record(status="running", state="PROGRESS",
                     progress={"current": 30, "total": 100, "percent": 30.0, "message": "m"},
                     history=[[100.0, 10], [101.0, 20], [102.0, 30]])
    data = record_json(record)
    assert data["progress"]["rate"] == 10.0
    assert data["progress"]["eta_seconds"] == 7.0
    assert data["history"] == [[100.0, 10], [101.0, 20], [102.0, 30]]
    assert (data["can_revoke"], data["can_replay"], data["is_resolved"]) == (True, False, False)


@pytest.mark.parametrize("history", [[], [[100.0, 1]], [[100.0, 1], [100.2, 5]], [[100.0, 5], [110.0, 5]]])
def test_rate_is_null_until_meaningful(history):
    record = _record(status="running", state="PROGRESS", history=history,
                     progress={"current": 5, "total": 10, "percent": 50.0, "message": None})
    assert record_json(record)["progress"]["rate"] is None
    assert record_json(record)["progress"]["eta_seconds"] is None


def test_success_reads_100_percent_and_keeps_the_result():
    record = _record(status="finished", state="SUCCESS", result={"rows": 2},
                     progress={"current": 7, "total": 10, "percent": 70.0, "message": "last"},
                     started_at=10.0, finished_at=12.5)
    data = record_json(record)
    assert data["progress"] == {"current": 10, "total": 10, "percent": 100.0, "message": "last",
                                "rate": None, "eta_seconds": None}
    assert data["result"] == {"rows": 2} and data["runtime"] == 2.5 and data["is_resolved"]


@pytest.mark.parametrize(
    ("status", "call", "replay", "skip", "revoke", "resolved"),
    [("failed", {"args": [], "kwargs": {}}, True, True, False, False),
     ("failed", None, False, True, False, False),
     ("lost", {"args": [], "kwargs": {}}, True, True, False, False),
     ("scheduled", None, False, False, True, False), ("unstarted", None, False, False, True, False),
     ("replayed", {"args": []}, False, False, False, True), ("skipped", None, False, False, False, True),
     ("abandoned", None, False, False, False, True), ("revoked", None, False, False, False, True),
     ("expired", None, False, False, False, False)],
)
def test_meta_statuses(status, call, replay, skip, revoke, resolved):
    data = record_json(_record(status=status, call=call))
    assert (data["can_replay"], data["can_skip"], data["can_revoke"], data["is_resolved"]) == (
        replay, skip, revoke, resolved)


def test_meta_write_of_a_structured_failure_separates_details():
    meta = {"status": "FAILURE", "traceback": "Traceback ...", "date_done": "2026-01-02T03:04:05+00:00",
            "result": {"exc_type": "ValueError", "exc_message": ["bad row"], "exc_module": "builtins",
                       "step": 3, "input": "<b>x</b>"}}
    status, fields = meta_write(meta)
    assert status == "failed"
    assert fields["failure"] == {"exc_type": "ValueError", "exc_message": "bad row",
                                 "traceback": "Traceback ...", "details": {"step": 3, "input": "<b>x</b>"}}
    assert fields["finished_at"] == 1767323045.0 and fields["has_result"] is True


def test_meta_write_of_progress():
    status, fields = meta_write({"status": "PROGRESS", "result": {"current": 3, "total": 4, "message": "m"}})
    assert status == "running"
    assert fields["progress"] == {"current": 3, "total": 4, "percent": 75.0, "message": "m"}


def test_event_writes():
    assert event_write({"type": "task-progress", "uuid": "x"})[0] is None
    status, fields, fill = event_write({"type": "task-failed", "exception": "KeyError('x')",
                                        "traceback": "tb", "hostname": "w@h", "timestamp": 5.0})
    assert status == "failed" and fill["finished_at"] == 5.0
    assert fields["failure"] == {"exc_type": "KeyError", "exc_message": "KeyError('x')",
                                 "traceback": "tb", "details": {}}
    assert event_write({"type": "task-sent", "retries": 1, "name": "n"})[0] == "retrying"
    assert event_write({"type": "task-revoked", "terminated": True})[1]["revoke_reason"] == "terminated"
