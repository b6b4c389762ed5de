"""The OpenAPI description (pulse/server/http/openapi.json): valid, served, complete, and true to
the running app.

The running app is the ``stack`` fixture: Redis, a worker and the web server as subprocesses. A
scripted walk through the task lifecycle checks the answers fuzzing cannot reach (real tasks to
revoke, replay, skip and forget); schemathesis then fuzzes every documented operation, authenticated
with the operator token, and checks that each answer is documented: status code, content type,
headers and body schema, with no server error and no stack trace.
"""

import json
import math
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    positive_data_acceptance,
    unsupported_method,
)

import pulse
from pulse.record.statuses import STATUSES
from pulse.server.model.inbox import group_id
from pulse.server.model.taskjson import record_json, unknown_json
from tests.conftest import demo_server

from ..conftest import TOKEN, log_in, wait_until

pytestmark = pytest.mark.integration

SPEC_PATH = Path(pulse.__file__).parent / "server" / "http" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
MAX_EXAMPLES = 25
MAX_WAIT = 0.5  # seconds: ?wait=N holds a request up to N (at most 30) s; fuzzing need not sit there
DRAFT = "https://json-schema.org/draft/2020-12/schema"
STACK_TRACE = re.compile(r"Traceback|File \"[^\"]*\", line \d+")


def load_spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def walk(node: Any, at: str = "#"):
    """Every (JSON pointer, node) in a JSON document."""
    yield at, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{at}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{at}/{index}")


def resolve(spec: dict[str, Any], node: Any) -> Any:
    """``node``, or what its local ``$ref`` points to."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def component_validator(spec: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator for ``#/components/schemas/<name>``, its $refs resolved in the spec."""
    return jsonschema_rs.Draft202012Validator(
        {"$schema": DRAFT, "components": spec["components"], "$ref": f"#/components/schemas/{name}"})


# The description itself


def test_the_description_is_valid_openapi_3_1():
    spec = load_spec()
    assert spec["openapi"].startswith("3.1.")
    # The OpenAPI 3.1 meta-schema check that schemathesis runs before it tests anything.
    schemathesis.openapi.from_path(SPEC_PATH).validate()
    # That meta-schema leaves Schema Objects loose: check each component against JSON Schema 2020-12.
    for name, schema in spec["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid({"$schema": DRAFT, **schema}), name
    # Every $ref points somewhere in the document.
    for at, node in walk(spec):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            assert node["$ref"].startswith("#/"), at
            try:
                resolve(spec, node)
            except (KeyError, TypeError):
                pytest.fail(f"{at}: {node['$ref']} points nowhere")
    # Readable: the file is the 2-space-indented dump of itself.
    assert SPEC_PATH.read_text() == json.dumps(spec, indent=2) + "\n"


def test_the_task_schema_matches_the_task_json():
    spec = load_spec()
    fields = spec["components"]["schemas"]["TaskFields"]
    unknown = unknown_json("abc")
    assert sorted(fields["required"]) == sorted(unknown) == sorted(fields["properties"])
    assert set(spec["components"]["schemas"]["TaskStatus"]["enum"]) == {"unknown", *STATUSES}
    task = component_validator(spec, "Task")
    task.validate(unknown)
    component_validator(spec, "UnknownTask").validate({**unknown, "error": "no task"})
    assert not task.is_valid({**unknown, "error": "no task"})  # the Task schema admits no other key
    record = {
        "id": "t1", "status": "failed", "state": "FAILURE", "name": "tasks.demo.fail_with_details",
        "worker": "worker@host", "queue": "celery", "args": "()", "kwargs": "{'step': 2}", "retries": 0,
        "sent_at": 1.0, "received_at": 1.5, "started_at": 2.0, "finished_at": 3.5, "parent_id": "p",
        "root_id": "p", "group_id": "g", "chain": ["t2"], "chain_of": None, "goal": "nightly",
        "replay_of": "t0", "revoke_requested_at": None, "last_error": "Retry in 1s", "created_at": 1.0,
        "updated_at": 3.5, "call": {"args": [], "kwargs": {"step": 2}}, "has_result": True,
        "progress": {"current": 2, "total": 10, "percent": 20.0, "message": "processing record 2"},
        "failure": {"exc_type": "ValueError", "exc_message": "record 2 could not be parsed",
                    "traceback": "Traceback (most recent call last): ...", "details": {"step": 2}},
        "history": [[1.0, 1.0], [2.0, 2.0]], "children": ["c1"],
    }
    failed = record_json(record)
    task.validate(failed)
    assert failed["can_replay"] and failed["progress"]["rate"] == 1.0
    task.validate(record_json({**record, "status": "finished", "state": "SUCCESS", "failure": None,
                               "result": [1, {"a": None}], "progress": None}))


def test_the_description_is_served(stack):
    response = requests.get(f"{stack.base_url}/api/openapi.json", timeout=10)  # no credentials needed
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == load_spec()


def test_every_route_is_documented_and_every_documented_route_exists(redis_url):
    app = demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "PULSE_ASYNC_MODE": "threading"})
    served = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method.upper())
                  for path, item in load_spec()["paths"].items() for method in item if method in METHODS}
    assert documented - served == set(), "documented but not served"
    assert {(path, method) for path, method in served if path.startswith("/api/")} - documented == set(), \
        "served under /api but not documented"


# The running app, scripted: every documented answer that needs real tasks

# Loaded from the file when the module is collected, so that each operation is a fuzzing test item of
# its own (the base URL is only known once the ``stack`` fixture runs; that the server serves this very
# file is test_the_description_is_served). schemathesis.pytest.from_fixture would load it from the
# server, but schemathesis 4.32.5's lazy loader sets ``Node._nodeid``, which pytest 9.2 no longer has.
fuzzed = schemathesis.openapi.from_path(SPEC_PATH)
fuzzed.config.update(request_timeout=15)
# No example database in the working tree (.hypothesis/); only the parameters the description names.
fuzzed.config.generation.update(max_examples=MAX_EXAMPLES, database="none", allow_extra_parameters=False)


def assert_documented(method: str, path: str, response: requests.Response) -> Any:
    """``response`` is one that ``method path`` documents: status, content type, headers and body."""
    spec = load_spec()
    responses = spec["paths"][path][method.lower()]["responses"]
    label = f"{method} {path} answered {response.status_code}: {response.text[:300]}"
    assert str(response.status_code) in responses, f"undocumented status: {label}"
    documented = resolve(spec, responses[str(response.status_code)])
    mimetype = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert mimetype in documented.get("content", {}), f"undocumented content type {mimetype!r}: {label}"
    for name, header in documented.get("headers", {}).items():
        assert not header.get("required") or name in response.headers, f"no {name} header: {label}"
    fuzzed[path][method].validate_response(response)
    assert not STACK_TRACE.search(_without_task_tracebacks(response)), f"a stack trace: {label}"
    return response.json() if mimetype == "application/json" else response.text


def call(stack, method: str, path: str, template: str | None = None, **kwargs: Any) -> Any:
    """Call the running app and check the answer against the description of ``template``."""
    response = stack.api(method, path, **kwargs)
    return response.status_code, assert_documented(method, template or path, response)


def test_the_task_lifecycle_answers_as_documented(stack):
    one = "/api/tasks/{task_id}"

    # A failed task, replayed; its rerun fails too and is skipped; both are forgotten.
    status, launched = call(stack, "POST", "/api/tasks", json={
        "name": "tasks.demo.fail_with_details", "kwargs": {"step": 1, "delay": 0.05}})
    assert status == 202 and launched["started"] is True
    failed_id = launched["id"]
    status, failed = call(stack, "GET", f"/api/tasks/{failed_id}", one, params={"wait": 20})
    assert (status, failed["status"], failed["can_replay"]) == (200, "failed", True)
    assert failed["failure"]["details"]["step"] == 1
    status, replayed = call(stack, "POST", f"/api/tasks/{failed_id}/replay", one + "/replay")
    assert (status, replayed["status"]) == (200, "replayed")
    rerun_id = replayed["replayed_by"]
    status, rerun = call(stack, "GET", f"/api/tasks/{rerun_id}", one, params={"wait": 20})
    assert (status, rerun["status"], rerun["replay_of"]) == (200, "failed", failed_id)
    assert call(stack, "POST", f"/api/tasks/{failed_id}/replay", one + "/replay")[0] == 409
    status, skipped = call(stack, "POST", f"/api/tasks/{rerun_id}/skip", one + "/skip")
    assert (status, skipped["status"]) == (200, "skipped")
    assert call(stack, "POST", f"/api/tasks/{rerun_id}/skip", one + "/skip")[0] == 409
    assert call(stack, "POST", f"/api/tasks/{rerun_id}/revoke", one + "/revoke")[0] == 409
    status, forgotten = call(stack, "DELETE", f"/api/tasks/{failed_id}", one)
    assert (status, forgotten["status"]) == (200, "expired")
    status, purged = call(stack, "DELETE", f"/api/tasks/{rerun_id}", one, params={"purge": "true"})
    assert (status, purged["status"], purged["purged"]) == (200, "unknown", True)
    status, gone = call(stack, "GET", f"/api/tasks/{rerun_id}", one, params={"wait": 5})
    assert (status, gone["status"]) == (404, "unknown")

    # A running task cannot be forgotten; it is revoked (terminated) instead.
    running_id = stack.launch("tasks.demo.count", total=100, delay=0.05)
    stack.wait_for(running_id, "running")
    assert call(stack, "DELETE", f"/api/tasks/{running_id}", one)[0] == 409
    status, revoking = call(stack, "POST", f"/api/tasks/{running_id}/revoke", one + "/revoke",
                            json={"terminate": True, "signal": "SIGTERM"})
    assert status == 200 and revoking["revoke_requested_at"] is not None
    status, revoked = call(stack, "GET", f"/api/tasks/{running_id}", one, params={"wait": 20})
    assert (status, revoked["status"]) == (200, "revoked")
    assert call(stack, "POST", f"/api/tasks/{running_id}/revoke", one + "/revoke")[0] == 409
    assert call(stack, "POST", f"/api/tasks/{running_id}/revoke", one + "/revoke",
                json={"signal": "SIGNOPE"})[0] == 400

    # A goal: launched once, then answered with its task.
    goal = f"openapi-{uuid.uuid4().hex[:8]}"
    body = {"name": "tasks.demo.count", "kwargs": {"total": 2, "delay": 0.01}, "goal": goal}
    status, first = call(stack, "POST", "/api/tasks", json=body)
    assert (status, first["started"], first["goal"]) == (202, True, goal)
    status, again = call(stack, "POST", "/api/tasks", json=body)
    assert (status, again["started"], again["id"]) == (200, False, first["id"])
    status, current = call(stack, "GET", f"/api/goals/{goal}", "/api/goals/{goal}")
    assert (status, current["task"]["id"]) == (200, first["id"])
    assert call(stack, "GET", f"/api/goals/{goal}-never", "/api/goals/{goal}")[0] == 404

    # Queries over what just happened.
    status, page = call(stack, "GET", "/api/tasks", params={"name": "tasks.demo.count", "limit": 1})
    assert status == 200 and len(page["tasks"]) == 1 and page["next_cursor"]
    status, _ = call(stack, "GET", "/api/tasks", params={"name": "tasks.demo.count", "limit": 1,
                                                       "cursor": page["next_cursor"]})
    assert status == 200
    query = {"status": "failed,,expired", "q": "a", "since": "2020-01-01T00:00:00Z", "until": 4102444800}
    assert call(stack, "GET", "/api/tasks", params=query)[0] == 200
    status, counts = call(stack, "GET", "/api/tasks/counts")
    assert status == 200 and counts["by_status"]["expired"] >= 1
    # Online means a heartbeat within Celery's window (every 2 s): on a loaded machine the
    # monitor may not have one yet in a session's first seconds, so wait for it, answering as documented.
    def online() -> bool:
        status, workers = call(stack, "GET", "/api/workers")
        assert status == 200
        return any(worker["online"] for worker in workers["workers"])

    wait_until(online, 15, 0.5, "a worker online in GET /api/workers")
    status, audit = call(stack, "GET", "/api/audit", params={"limit": 1000})
    actions = {entry["action"] for entry in audit["entries"]}
    assert {"launch", "replay", "skip", "forget", "purge", "revoke"} <= actions
    assert call(stack, "GET", "/metrics")[0] == 200
    assert call(stack, "GET", "/healthz", token=None)[0] == 200


def test_refusals_answer_as_documented(stack):
    one = "/api/tasks/{task_id}"
    missing = f"openapi-missing-{uuid.uuid4().hex}"
    for method, path, template in [("GET", "/api/workers", None), ("GET", "/metrics", None),
                                   ("POST", f"/api/tasks/{missing}/skip", one + "/skip")]:
        assert call(stack, method, path, template, token=None)[0] == 401
        assert call(stack, method, path, template, token="wrong-token-0123456789")[0] == 401
    for method, suffix in [("POST", "/revoke"), ("POST", "/replay"), ("POST", "/skip"), ("DELETE", "")]:
        assert call(stack, method, f"/api/tasks/{missing}{suffix}", one + suffix)[0] == 404
    assert call(stack, "POST", "/api/tasks", json={"name": "os.system", "args": ["true"]})[0] == 403
    assert call(stack, "POST", "/api/tasks", data="x" * 70_000,
                headers={"Content-Type": "application/json"})[0] == 413
    assert call(stack, "POST", f"/api/tasks/{missing}/revoke", one + "/revoke", data="x" * 70_000,
                headers={"Content-Type": "application/json"})[0] == 413
    for params in ({"limit": 0}, {"status": "bogus"}, {"since": "yesterday"}, {"cursor": "!!!"}):
        assert call(stack, "GET", "/api/tasks", params=params)[0] == 400
    assert call(stack, "GET", f"/api/tasks/{missing}", one, params={"wait": "-1"})[0] == 400
    assert call(stack, "DELETE", f"/api/tasks/{missing}", one, params={"purge": "yes"})[0] == 400
    assert call(stack, "GET", "/api/goals/" + "g" * 201, "/api/goals/{goal}")[0] == 400
    assert call(stack, "GET", "/api/audit", params={"limit": 1001})[0] == 400

    # A browser session: mutating calls need the session's CSRF token (403 without it).
    session = requests.Session()
    assert log_in(session, stack.token, stack.base_url, allow_redirects=False, timeout=10).status_code == 302
    response = session.post(f"{stack.base_url}/api/tasks/{missing}/skip", timeout=10)
    assert response.status_code == 403
    assert_documented("POST", one + "/skip", response)


@pytest.mark.parametrize("task_id", ["has space", "-leading-dash", "x" * 256, "a;b", "line\nfeed", "tab\tx"])
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("POST", "/revoke"),
                                                ("POST", "/replay"), ("POST", "/skip")])
def test_a_malformed_task_id_is_answered_400_on_every_task_route(stack, method, suffix, task_id):
    # The README: "400 for a malformed id" (and "Actions ... on a malformed id 400").
    response = stack.api(method, f"/api/tasks/{quote(task_id, safe='')}{suffix}")
    assert response.status_code == 400, response.text
    body = assert_documented(method, "/api/tasks/{task_id}" + suffix, response)
    assert "malformed task id" in body["error"]


def test_an_overlong_filter_is_answered_400_by_pulse_not_414_by_the_server(stack):
    # 1001 four-byte characters percent-encode to ~12 KB: over eventlet's default request line.
    for key in ("q", "name", "worker", "state"):
        response = stack.api("GET", "/api/tasks", params={key: "\U00051a92" * 1001})
        assert response.status_code == 400, (key, response.status_code)
        body = assert_documented("GET", "/api/tasks", response)
        assert body == {"error": f"{key} is at most 1000 characters"}
    assert stack.api("GET", "/api/tasks", params={"q": "\U00051a92" * 1000}).status_code == 200


@pytest.mark.parametrize("path", sorted(load_spec()["paths"]))
def test_an_undocumented_method_is_answered_405_with_allow(stack, path):
    # RFC 9110: a 405 answer carries Allow. (Checked here rather than by the fuzzing below, where
    # schemathesis's unsupported_method check would end each operation's run at its first failure.)
    documented = {method.upper() for method in load_spec()["paths"][path] if method in METHODS}
    url = path.replace("{task_id}", "openapi-405").replace("{goal}", "openapi-405") \
        .replace("{rule_id}", "alert-000000000405")
    for method in sorted({"PUT", "PATCH", "TRACE"} - documented):
        response = stack.api(method, url)
        assert response.status_code == 405, (method, response.text)
        assert response.headers.get("Content-Type", "").startswith("application/json")
        assert response.json()["error"]
        allowed = {item.strip() for item in response.headers.get("Allow", "").split(",") if item.strip()}
        assert documented <= allowed, f"{method} {url}: Allow: {response.headers.get('Allow')!r}"


# The running app, fuzzed


@fuzzed.hook
def filter_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> bool:
    # Every query parameter is a scalar. A generated object or array has no faithful wire form
    # (requests sends ``until={}`` as ``until=`` and ``until=[1.5]`` as ``until=1.5``), so the
    # server rightly reads a valid request where schemathesis expects a rejection.
    return not any(isinstance(value, dict | list) for value in (query or {}).values())


def _without_task_tracebacks(response: Any) -> str:
    """The body, less the tracebacks that failed tasks carry as data (``failure.traceback``)."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: None if key == "traceback" and "exc_type" in node else strip(value)
                    for key, value in node.items()}
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    try:
        return json.dumps(strip(response.json()))
    except ValueError:
        pass
    try:  # an NDJSON export: one task JSON a line
        return "\n".join(json.dumps(strip(json.loads(line))) for line in response.text.splitlines())
    except ValueError:
        return response.text


def _excluded_checks(case: schemathesis.Case) -> list:
    # allow_header_conformance: OPTIONS on /api/tasks/<id>/revoke (replay, skip) advertises GET and
    # DELETE too, and on /api/tasks/counts DELETE, because the ``<path:task_id>`` rules of GET and
    # DELETE also match "<id>/revoke" and "counts" (which is how an id with a "/" gets its 400).
    # unsupported_method: checked by test_an_undocumented_method_is_answered_405_with_allow instead.
    excluded = [allow_header_conformance, unsupported_method]
    if case.operation.label in FILTERED:
        # The cursor and a failure group's id are opaque, and a search has a syntax (an unclosed
        # quote, more than 16 parts): no schema can say which strings are readable, so a
        # schema-valid random one is rightly answered 400. A bulk action's answer also depends on
        # what its filters select (409: none, or more than the cap). An alert rule's fields depend
        # on its kind (a queue_age rule needs a queue and a threshold in seconds, a no_worker rule
        # takes neither), which the schema leaves to the description.
        excluded.append(positive_data_acceptance)
    return excluded


FILTERED = ("GET /api/tasks", "GET /api/tasks.csv", "GET /api/tasks.ndjson", "GET /api/bulk/preview",
            "POST /api/bulk", "POST /api/alerts", "PUT /api/alerts/{rule_id}")


def _harmless_bulk(case: schemathesis.Case) -> None:
    """Fuzzed bulk actions select nothing: they must not replay, revoke or forget the session's tasks."""
    if case.operation.label == "POST /api/bulk" and isinstance(case.body, dict) \
            and isinstance(case.body.get("filters"), dict):
        case.body["filters"]["failure_group"] = group_id(f"fuzzed-{uuid.uuid4().hex}", "NoSuchError")


def _harmless_alert(case: schemathesis.Case) -> None:
    """Fuzzed alert rules have no webhooks: the alerting must not post notices to random hosts."""
    alert = case.operation.label in ("POST /api/alerts", "PUT /api/alerts/{rule_id}")
    if alert and isinstance(case.body, dict) and case.body.get("webhooks"):
        case.body["webhooks"] = []


def _bounded_wait(case: schemathesis.Case) -> None:
    try:
        seconds = float((case.query or {})["wait"])
    except (KeyError, TypeError, ValueError):
        return
    if math.isfinite(seconds) and seconds > MAX_WAIT:
        case.query["wait"] = MAX_WAIT


@fuzzed.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_the_running_app_answers_as_documented(case: schemathesis.Case, stack):
    # Every operation, DELETE included: fuzzed ids name no task, and the examples launch demo tasks.
    _bounded_wait(case)
    _harmless_bulk(case)
    _harmless_alert(case)
    response = case.call_and_validate(base_url=stack.base_url,
                                      headers={"Authorization": f"Bearer {stack.token}"},
                                      excluded_checks=_excluded_checks(case))
    assert not STACK_TRACE.search(_without_task_tracebacks(response)), \
        f"a stack trace in the answer to {case.method} {case.formatted_path}"
