"""Exports of the task list (pulse/server/http/export.py): every selected task, streamed, safe."""

import csv
import io
import json

import pytest
from redis import RedisError

from pulse.agent.tokens import mint_token
from pulse.server.model import export


def seed(registry, count: int, status: str = "finished", name: str = "app.job", **fields) -> list[str]:
    ids = [f"{name.rsplit('.', 1)[-1]}-{status}-{i:05d}" for i in range(count)]
    for task_id in ids:
        registry.write(task_id, status, fields={"name": name, **fields})
    return ids


def lines(response) -> list[bytes]:
    return [line for line in response.get_data().split(b"\n") if line]


def test_ndjson_streams_every_selected_task_in_full_past_several_pages(app, client, auth_headers):
    registry = app.extensions["pulse_registry"]
    seed(registry, export.PAGE * 2 + 3)
    seed(registry, 4, status="failed", name="app.other")
    response = client.get("/api/tasks.ndjson", headers=auth_headers, query_string={"status": "finished"})
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="pulse-tasks-')
    tasks = [json.loads(line) for line in lines(response)]
    assert len(tasks) == export.PAGE * 2 + 3 and {task["status"] for task in tasks} == {"finished"}
    assert len({task["id"] for task in tasks}) == len(tasks)  # none twice across pages
    # Every field of the task JSON, in the list's order (newest first).
    listed = client.get("/api/tasks", headers=auth_headers, query_string={"status": "finished", "limit": 100})
    first = listed.get_json()["tasks"]
    assert [task["id"] for task in tasks[:100]] == [task["id"] for task in first]
    assert tasks[0] == first[0]


def test_csv_has_a_header_scalar_columns_and_no_formulas(app, client, auth_headers):
    registry = app.extensions["pulse_registry"]
    registry.write("evil-1", "failed", fields={
        "name": "=cmd|' /C calc'!A0", "args": "['+1+1', '@SUM(A1)']", "kwargs": "{'x': -1}", "retries": 2,
        "failure": {"exc_type": "ValueError", "exc_message": "-bad\n=2+3"}, "state": "FAILURE"})
    response = client.get("/api/tasks.csv", headers=auth_headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == export.COLUMNS
    row = dict(zip(export.COLUMNS, rows[1], strict=True))
    assert row["id"] == "evil-1" and row["name"] == "'=cmd|' /C calc'!A0"
    assert row["exc_type"] == "ValueError" and row["exc_message"] == "'-bad\n=2+3"
    assert row["retries"] == "2" and not any(cell.startswith(export.FORMULA_START) for cell in rows[1])


def test_exports_take_the_lists_filters_and_refuse_bad_ones(app, client, auth_headers):
    registry = app.extensions["pulse_registry"]
    seed(registry, 3, name="app.alpha")
    seed(registry, 2, name="app.beta")
    response = client.get("/api/tasks.ndjson", headers=auth_headers, query_string={"name": "app.beta"})
    assert [json.loads(line)["name"] for line in lines(response)] == ["app.beta", "app.beta"]
    ascending = client.get("/api/tasks.csv", headers=auth_headers,
                           query_string={"q": "alpha", "order": "asc"})
    ids = [row[0] for row in csv.reader(io.StringIO(ascending.get_data(as_text=True)))][1:]
    assert ids == ["alpha-finished-00000", "alpha-finished-00001", "alpha-finished-00002"]
    for query in ({"status": "bogus"}, {"since": "yesterday"}, {"order": "sideways"}, {"name": "x" * 1001}):
        refused = client.get("/api/tasks.csv", headers=auth_headers, query_string=query)
        assert refused.status_code == 400 and "error" in refused.get_json(), query


def test_a_task_token_or_no_credential_exports_nothing(app, client):
    """(The operator and the viewer may: the access matrix checks them on a real server.)"""
    grant = mint_token(app.config["GRANT_KEY"], task_id="t-1")[0]
    for headers in ({}, {"Authorization": f"Bearer {grant}"}, {"Authorization": "Bearer wrong-0123456789"}):
        assert client.get("/api/tasks.ndjson", headers=headers).status_code == 401
    assert client.get("/api/tasks.csv", query_string={"token": grant}).status_code == 401


def test_an_export_that_loses_redis_half_way_says_so_at_its_end(app, client, auth_headers, monkeypatch):
    seed(app.extensions["pulse_registry"], export.PAGE + 1)
    store, calls = app.extensions["pulse_store"], []
    many_json = store.many_json

    def second_page_fails(ids, *args, **kwargs):
        calls.append(len(ids))
        if len(calls) > 1:
            raise RedisError("gone")
        return many_json(ids, *args, **kwargs)

    monkeypatch.setattr(store, "many_json", second_page_fails)
    body = lines(client.get("/api/tasks.ndjson", headers=auth_headers))
    assert len(body) == export.PAGE + 1
    stopped = "export stopped: Redis is unreachable (RedisError); export again"
    assert json.loads(body[-1]) == {"error": stopped}


@pytest.mark.parametrize("value,cell", [(None, ""), (-1, "-1"), (0.5, "0.5"), (True, "true"),
                                        ("+x", "'+x"), ({"a": "=b"}, '{"a": "=b"}')])
def test_cells(value, cell):
    assert export._cell(value) == cell
