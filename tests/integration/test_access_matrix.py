"""Who may do what: every HTTP endpoint and every Socket.IO subscription against every credential.

The tables ``HTTP`` and ``SOCKETS`` are the spec. A route added to the app without a row in
``HTTP`` fails ``test_every_route_has_a_row``. The HTTP half runs in-process (Flask's test client)
against the real Redis; the Socket.IO half, the proxy setting and the access log against real
servers. Every cell gets a task A, a task B and a group G of its own, so no answer depends on
what another cell did.
"""

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from pulse.agent.tokens import mint_token
from pulse.record.registry import Registry
from pulse.server.http.grants import revoke_all
from pulse.server.model.taskjson import PUBLIC_FIELDS
from pulse.settings import grant_key_from_env
from tests.conftest import demo_server

from ..conftest import ARTIFACTS, TOKEN, Stack, db_url, flush_db, log_in, own_server, wait_until

pytestmark = pytest.mark.integration

DB = 11
VIEWER = "viewer-token-0123456789abcdef"
EMBED_ORIGIN = "http://app.example.test"  # in PULSE_EMBED_ORIGINS
OTHER_ORIGIN = "http://evil.example.test"  # not
PROXIED = "pulse.example.test"  # the host a TLS-terminating proxy serves Pulse on
UNKNOWN_JOB = "bulk-0123456789abcdef"  # {J}: a well-formed bulk action id that names no job
UNKNOWN_RULE = "alert-0123456789ab"  # {R}: a well-formed alert rule id that names no rule

CREDENTIALS = {
    "nil": "no credentials at all",
    "jnk": "Authorization: Bearer not-a-token",
    "op": "the operator token (PULSE_TOKEN) as Authorization: Bearer",
    "op?": "the operator token as ?token= (operator and viewer tokens are never taken from a URL)",
    "opS": "an operator's login session cookie, with its X-CSRF-Token header",
    "oS-": "an operator's login session cookie without the X-CSRF-Token header",
    "vw": "the viewer token (PULSE_VIEWER_TOKEN) as Authorization: Bearer",
    "vwS": "a viewer's login session cookie, with its X-CSRF-Token header",
    "tA": "a per-task token for task A as Bearer, asking about A",
    "tA?": "the same token as ?token=",
    "tB": "a per-task token for task A, asking about task B",
    "cA": "a per-task token for A minted with the cancel right, asking about A",
    "cB": "the same token, asking about task B",
    "gG": "a group token for group G, asking about G (and about task A on task routes)",
    "exp": "an expired per-task token for A",
    "rev": "a per-task token for A, revoked by DELETE /api/tasks/A/tokens",
    "frg": "a per-task token for A signed with another key (forged)",
}

# {A}, {G}, {goal}: task A (task B for the tB and cB columns), group G, a goal naming A.
# A-is: the status A (and B) have, so that what the operator asks is possible (200, 202).
# POST /login sends the operator token in its form, with the form's CSRF token: anyone holding it
# may log in. /embed/{A} takes its token from the URL only, and only a grant for A.
# HEAD answers as GET does, for every GET row.
# /api/workers/w@m...: no monitor runs in this in-process app, so no worker has been seen and
# the operator and viewer get 404 once past the credential checks (which is what is checked here);
# real workers answer in tests/integration/test_worker_control.py.
HTTP = """
method path                       A-is nil jnk op  op? opS oS- vw  vwS tA  tA? tB  cA  cB  gG  exp rev frg
GET    /healthz                   -    200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200
GET    /api/openapi.json          -    200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200
GET    /static/js/common.js       -    200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200
GET    /widget.js                 -    200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200
GET    /embed/{A}                 run  401 401 401 401 401 401 401 401 401 200 401 401 401 401 401 401 401
GET    /login                     -    200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200 200
POST   /login                     -    302 302 302 302 302 302 302 302 302 302 302 302 302 302 302 302 302
POST   /logout                    -    302 302 302 302 302 403 302 302 302 302 302 302 302 302 302 302 302
GET    /                          -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /tasks                     -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /tasks/{A}                 run  302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /workers                   -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /queues                    -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /metrics                   -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/tasks                 -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/tasks.csv             -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/tasks.ndjson          -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/tasks/counts          -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/workers               -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/workers/w@m           - 401 401 404 401 404 404 404 404 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/pool/grow - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/pool/shrink - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/pool/autoscale - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/pool/restart - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/shutdown  - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/consumers/add - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/consumers/cancel - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/rate-limit - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/workers/w@m/time-limit - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
GET    /api/overview              -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/queues                -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/queues/celery/messages -   401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
POST   /api/queues/celery/purge   -    401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
GET    /api/audit                 -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/goals/{goal}          run  401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/tasks/{A}             run  401 401 200 401 200 200 200 200 200 200 403 200 403 403 401 403 401
GET    /api/tasks/{A}/logs        run  401 401 200 401 200 200 200 200 403 403 403 403 403 403 401 403 401
GET    /api/groups/{G}            -    401 401 200 401 200 200 200 200 403 403 403 403 403 200 401 403 401
POST   /api/tasks                 -    401 401 202 401 202 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/tasks/{A}/revoke      run  401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/tasks/{A}/replay      fail 401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/tasks/{A}/skip        fail 401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
DELETE /api/tasks/{A}             done 401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/tasks/{A}/token       run  401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/groups/{G}/token      -    401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
DELETE /api/tasks/{A}/tokens      run  401 401 200 401 200 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/tasks/{A}/cancel      run  401 401 200 401 200 403 403 403 403 403 403 200 403 403 401 403 401
GET    /periodic                  -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /api/periodic              -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /failures                  -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /api/failures              -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /analytics                 -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /api/analytics             -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /alerts                    -    302 302 302 302 200 200 302 200 302 302 302 302 302 302 302 302 302
GET    /api/alerts                -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
POST   /api/alerts                -    401 401 201 401 201 403 403 403 401 401 401 401 401 401 401 401 401
GET    /api/alerts/{R}            -    401 401 404 401 404 404 404 404 401 401 401 401 401 401 401 401 401
PUT    /api/alerts/{R}            -    401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
DELETE /api/alerts/{R}            -    401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/alerts/{R}/test       -    401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
GET    /api/alerts/{R}/history    -    401 401 404 401 404 404 404 404 401 401 401 401 401 401 401 401 401
GET    /api/bulk                  -    401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
GET    /api/bulk/preview          fail 401 401 200 401 200 200 200 200 401 401 401 401 401 401 401 401 401
POST   /api/bulk                  fail 401 401 202 401 202 403 403 403 401 401 401 401 401 401 401 401 401
GET    /api/bulk/{J}          - 401 401 404 401 404 404 404 404 401 401 401 401 401 401 401 401 401
GET    /api/bulk/{J}/outcomes - 401 401 404 401 404 404 404 404 401 401 401 401 401 401 401 401 401
POST   /api/bulk/{J}/cancel - 401 401 404 401 404 403 403 403 401 401 401 401 401 401 401 401 401
POST   /api/periodic/demo-count/run -  401 401 202 401 202 403 403 403 401 401 401 401 401 401 401 401 401
"""

# Socket.IO: connect with the credential from the origin, then on that one connection subscribe
# to the dashboard, task A, task B and group G in turn, then unsubscribe from all three.
# ok / no: connected or refused. full: the snapshot as the operator sees it; pub: the public view
# of a per-task token; err: an error acknowledgement (the connection stays, nothing is joined).
# Origins: own (the server's), embed (in PULSE_EMBED_ORIGINS), other (not).
# tA+rev: a token for A revoked after the socket connected (every subscribe checks it again; the
# server's periodic recheck, which would disconnect the socket, is slowed down here: see
# test_a_socket_whose_token_lapses_is_disconnected).
SOCKETS = """
credential origin connect dashboard task-A task-B group-G unsubscribe
nil        own    no
jnk        own    no
op         own    ok      full      full   full   full    ok
opS        own    ok      full      full   full   full    ok
vw         own    ok      full      full   full   full    ok
vwS        own    ok      full      full   full   full    ok
tA         own    ok      err       pub    err    err     ok
cA         own    ok      err       pub    err    err     ok
gG         own    ok      err       err    err    pub     ok
exp        own    no
rev        own    no
frg        own    no
tA+rev     own    ok      err       err    err    err     ok
op         embed  no
opS        embed  no
vwS        embed  no
tA         embed  ok      err       pub    err    err     ok
gG         embed  ok      err       err    err    pub     ok
op         other  no
opS        other  no
tA         other  no
"""

STATUS_OF_A = {"-": "running", "run": "running", "fail": "failed", "done": "finished"}
TASK_TOKENS = ("tA", "tA?", "tB", "cA", "cB", "gG", "exp", "rev", "frg")
TOKEN_ROUTES = ("/api/tasks/{A}", "/api/groups/{G}", "/api/tasks/{A}/cancel")  # JSON a token may get


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    a_is: str
    expected: dict[str, int]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def parse_http(table: str) -> list[Row]:
    header, *lines = table.strip().splitlines()
    columns = header.split()[3:]
    assert columns == list(CREDENTIALS), "the HTTP table's columns are the credentials, in order"
    rows = []
    for line in lines:
        method, path, a_is, *codes = line.split()
        assert len(codes) == len(columns), f"{method} {path}: one status per credential"
        rows.append(Row(method, path, a_is, dict(zip(columns, map(int, codes), strict=True))))
    gets = [Row("HEAD", row.path, row.a_is, row.expected) for row in rows if row.method == "GET"]
    return rows + gets


ROWS = parse_http(HTTP)


def parse_sockets(table: str) -> list[tuple[str, str, list[str]]]:
    _header, *lines = table.strip().splitlines()
    return [(credential, origin, cells) for credential, origin, *cells in map(str.split, lines)]


def seed(registry: Registry, status: str) -> dict[str, str]:
    """Fresh task A and B (in ``status``, replayable), group G (one running member), a goal for A."""
    tag = uuid.uuid4().hex[:10]
    ids = {"A": f"a-{tag}", "B": f"b-{tag}", "G": f"g-{tag}", "goal": f"goal-{tag}"}
    for key in ("A", "B"):
        registry.write(ids[key], status, fields={
            "name": "tasks.demo.count", "state": {"finished": "SUCCESS", "failed": "FAILURE"}.get(status),
            "call": {"args": [], "kwargs": {"total": 1}}, "args": "[]", "worker": "w@matrix"})
    registry.write(f"{ids['G']}-0", "running", fields={"name": "tasks.demo.count", "group_id": ids["G"],
                                                      "group_index": 0})
    registry.client.set(f"{registry.prefix}goal:{ids['goal']}", ids["A"])
    return ids


def task_token(secret: str, registry: Registry, credential: str, ids: dict[str, str]) -> str:
    """The per-task (or group) token a credential column stands for."""
    if credential == "gG":
        return mint_token(secret, group_id=ids["G"])[0]
    if credential == "frg":
        return mint_token("not-this-servers-secret", task_id=ids["A"])[0]
    if credential == "exp":
        return mint_token(secret, task_id=ids["A"], ttl=60, now=time.time() - 120)[0]
    token = mint_token(secret, task_id=ids["A"], cancel=credential in ("cA", "cB"))[0]
    if credential == "rev":
        revoke_all(registry, ids["A"], skew=30)
    return token


# --- HTTP ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_app(redis_url):
    url = db_url(redis_url, DB)
    flush_db(url)
    app = demo_server({"PULSE_TOKEN": TOKEN, "PULSE_VIEWER_TOKEN": VIEWER, "REDIS_URL": url,
                      "PULSE_ASYNC_MODE": "threading", "PULSE_EMBED_ORIGINS": EMBED_ORIGIN,
                      "PULSE_REGISTRY_PREFIX": "matrix:", "PULSE_AUTH_ATTEMPTS": "100000"})
    yield app
    flush_db(url)  # the launches and replays it queued: no worker consumes this database


def http_credential(app, credential: str, ids: dict[str, str]):
    """(test client, headers, query string) carrying ``credential``."""
    client = app.test_client()
    if credential in ("opS", "oS-", "vwS"):
        login = log_in(client, VIEWER if credential == "vwS" else TOKEN)
        assert login.status_code == 302
        with client.session_transaction() as session:
            csrf = session["csrf"]
        return client, {} if credential == "oS-" else {"X-CSRF-Token": csrf}, {}
    if credential == "op?":
        return client, {}, {"token": TOKEN}
    bearer = {"nil": None, "jnk": "not-a-token", "op": TOKEN, "vw": VIEWER}.get(credential)
    if credential in TASK_TOKENS:
        bearer = task_token(app.config["GRANT_KEY"], app.extensions["pulse_registry"], credential, ids)
    if credential == "tA?":
        return client, {}, {"token": bearer}
    return client, {"Authorization": f"Bearer {bearer}"} if bearer else {}, {}


def assert_public(body: Any) -> None:
    """A per-task token is answered with the public view only: no arguments, worker or traceback."""
    for task in body.get("members", [body]) if isinstance(body, dict) else []:
        assert set(task) <= {*PUBLIC_FIELDS, "failure", "can_cancel"}, sorted(task)


def http_cell(app, row: Row, credential: str) -> int:
    registry = app.extensions["pulse_registry"]
    ids = seed(registry, STATUS_OF_A[row.a_is])
    target = ids["B"] if credential in ("tB", "cB") else ids["A"]
    path = row.path.format(A=target, G=ids["G"], goal=ids["goal"], J=UNKNOWN_JOB, R=UNKNOWN_RULE)
    client, headers, query = http_credential(app, credential, ids)
    body: dict[str, Any] = {}
    if row.path == "/login" and row.method == "POST":
        form = client.get("/login", headers=headers).text.split('id="login-form"')[1]
        csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
        body["data"] = {"token": TOKEN, "csrf_token": csrf}
    elif row.path == "/api/tasks" and row.method == "POST":
        body["json"] = {"name": "tasks.demo.count", "kwargs": {"total": 1}}
    elif row.path.startswith("/api/queues/") and row.method == "POST":
        body["json"] = {"reason": "access matrix"}
    elif row.path.startswith("/api/periodic/") and row.method == "POST":
        body["json"] = {"reason": "access matrix"}
    elif row.path == "/api/bulk" and row.method == "POST":  # task A alone, by its id
        body["json"] = {"action": "skip", "filters": {"q": f"id:{ids['A']}"}, "reason": "access matrix"}
    elif row.path.endswith("/cancel") and row.path.startswith("/api/bulk/"):
        body["json"] = {"reason": "access matrix"}
    elif row.path == "/api/bulk/preview":
        query = {**query, "action": "skip", "q": f"id:{ids['A']}"}
    elif row.path in ("/api/alerts", "/api/alerts/{R}") and row.method in ("POST", "PUT"):
        body["json"] = {"name": "access matrix", "kind": "no_worker"}
    response = client.open(path, method=row.method, headers=headers, query_string=query, **body)
    response.close()  # a static file's response holds the file open
    if credential in TASK_TOKENS and response.status_code == 200 and row.method != "HEAD" \
            and row.path in TOKEN_ROUTES:
        assert_public(response.get_json())
    return response.status_code


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_http(matrix_app, row):
    assert {credential: http_cell(matrix_app, row, credential) for credential in CREDENTIALS} == row.expected


def test_every_route_has_a_row(matrix_app):
    routes = {(rule.endpoint, method) for rule in matrix_app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    adapter = matrix_app.url_map.bind("localhost")
    sample = {"A": "a-1", "G": "g-1", "goal": "goal-1", "J": UNKNOWN_JOB, "R": UNKNOWN_RULE}
    covered = {(adapter.match(row.path.format(**sample), row.method)[0], row.method) for row in ROWS
               if row.method != "HEAD"}
    assert routes - covered == set(), "routes without a row in the HTTP table"
    assert covered - routes == set()


def test_options_answers_carry_nothing(matrix_app):
    client = matrix_app.test_client()
    for path in {row.path.format(A="a-1", G="g-1", goal="goal-1", J=UNKNOWN_JOB, R=UNKNOWN_RULE)
                 for row in ROWS}:
        response = client.options(path)
        assert (response.status_code, response.data) == (200, b""), path


# --- Socket.IO -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_server(redis_url) -> Stack:
    """The real server (eventlet), with a viewer, an embedding origin and one trusted proxy."""
    url = db_url(redis_url, DB)
    with own_server(url, "web-access", PULSE_VIEWER_TOKEN=VIEWER, PULSE_EMBED_ORIGINS=EMBED_ORIGIN,
                    PULSE_PROXY_HOPS="1", PULSE_TOKEN_RECHECK_INTERVAL="3600") as (_proc, stack):
        yield stack


def session_cookie(stack: Stack, token: str, **headers: str) -> requests.Response:
    # The login form's cookie by hand: requests keeps a Secure one (behind the HTTPS proxy) to itself.
    form = requests.get(stack.base_url + "/login", headers=headers, timeout=10)
    csrf = form.text.split('id="login-form"')[1].split('name="csrf_token" value="')[1].split('"')[0]
    response = requests.post(stack.base_url + "/login", data={"token": token, "csrf_token": csrf},
                             headers={**headers, "Cookie": f"pulse_session={form.cookies['pulse_session']}"},
                             allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return response


def connect(stack: Stack, origin: str, auth: dict | None = None,
            headers: dict | None = None) -> socketio.Client:
    """A websocket-only client whose handshake says it comes from ``origin``."""
    client = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin})
    client.connect(stack.base_url, auth=auth, headers=headers or {}, transports=["websocket"],
                   wait_timeout=10)
    return client


def snapshot_kind(answer: dict) -> str:
    if "error" in answer:
        return "err"
    task = answer.get("task") or (answer.get("group") or {}).get("members", [None])[0] or {}
    return "pub" if "can_cancel" in task else "full"


def socket_row(stack: Stack, credential: str, origin: str) -> list[str]:
    registry = stack.celery.pulse.registry
    ids = seed(registry, "running")
    auth, headers = None, {}
    if credential in ("opS", "vwS"):
        cookie = session_cookie(stack, VIEWER if credential == "vwS" else TOKEN).cookies["pulse_session"]
        headers = {"Cookie": f"pulse_session={cookie}"}
    elif credential != "nil":
        tokens = {"jnk": "not-a-token", "op": TOKEN, "vw": VIEWER}
        auth = {"token": tokens.get(credential) or
                task_token(grant_key_from_env(stack.env), registry, credential.removesuffix("+rev"), ids)}
    origins = {"own": stack.base_url, "embed": EMBED_ORIGIN, "other": OTHER_ORIGIN}
    try:
        client = connect(stack, origins[origin], auth, headers)
    except socketio.exceptions.ConnectionError:
        return ["no"]
    try:
        if credential.endswith("+rev"):
            revoke_all(registry, ids["A"], skew=30)
        payloads = [{"dashboard": True}, {"task": ids["A"]}, {"task": ids["B"]}, {"group": ids["G"]}]
        answers = [client.call("subscribe", payload, timeout=10) for payload in payloads]
        left = [client.call("unsubscribe", payload, timeout=10) for payload in payloads]
    finally:
        client.disconnect()
    return ["ok", *map(snapshot_kind, answers), "ok" if all(a.get("ok") is True for a in left) else "err"]


@pytest.mark.parametrize(("credential", "origin", "expected"), parse_sockets(SOCKETS),
                         ids=[f"{c}-{o}" for c, o, _ in parse_sockets(SOCKETS)])
def test_socket(matrix_server, credential, origin, expected):
    assert socket_row(matrix_server, credential, origin) == expected


def test_unsubscribing_stops_the_pushes(matrix_server):
    """Token holders are in rooms of their own (public view): unsubscribe must leave those too."""
    stack, registry = matrix_server, matrix_server.celery.pulse.registry
    ids = seed(registry, "running")
    secret = grant_key_from_env(stack.env)
    tokens = {"task": mint_token(secret, task_id=ids["A"])[0],
              "group": mint_token(secret, group_id=ids["G"])[0]}
    received: dict[tuple[str, bool], list] = {}
    clients = []
    try:
        for kind, unit in (("task", ids["A"]), ("group", ids["G"])):
            for leaves in (False, True):
                client = connect(stack, stack.base_url, {"token": tokens[kind]})
                clients.append(client)
                client.on(kind, received.setdefault((kind, leaves), []).append)
                assert "error" not in client.call("subscribe", {kind: unit}, timeout=10)
                if leaves:
                    assert client.call("unsubscribe", {kind: unit}, timeout=10)["ok"] is True
        for task_id in (ids["A"], f"{ids['G']}-0"):  # a change to A, and to G's member
            assert stack.api("POST", f"/api/tasks/{task_id}/revoke").status_code == 200
        wait_until(lambda: received[("task", False)] and received[("group", False)], 10, what="the pushes")
        time.sleep(1.0)  # the same pushes, had they been sent to the others, would be here by now
    finally:
        for client in clients:
            client.disconnect()
    assert received[("task", True)] == [] and received[("group", True)] == []


def test_a_socket_whose_token_lapses_is_disconnected(redis_url):
    """Revoked (through the API) or expired after connecting: the server ends the live feed."""
    url = db_url(redis_url, DB)
    with own_server(url, "web-lapses", PULSE_TOKEN_RECHECK_INTERVAL="0.5") as (_proc, stack):
        registry, secret = stack.celery.pulse.registry, grant_key_from_env(stack.env)
        ids = seed(registry, "running")
        tokens = {"revoked": mint_token(secret, task_id=ids["A"])[0],
                  "expiring": mint_token(secret, task_id=ids["B"], ttl=3)[0],
                  "kept": mint_token(secret, task_id=ids["B"])[0]}
        clients = {name: connect(stack, stack.base_url, {"token": token}) for name, token in tokens.items()}
        try:
            pushes: list[dict] = []
            clients["kept"].on("task", pushes.append)
            for name, client in clients.items():
                task_id = ids["A"] if name == "revoked" else ids["B"]
                assert "task" in client.call("subscribe", {"task": task_id}, timeout=10)
            assert stack.api("DELETE", f"/api/tasks/{ids['A']}/tokens").status_code == 200
            wait_until(lambda: not clients["revoked"].connected, 5, what="the revoked token's disconnect")
            assert clients["expiring"].connected
            wait_until(lambda: not clients["expiring"].connected, 8, what="the expired token's disconnect")
            assert stack.api("POST", f"/api/tasks/{ids['B']}/revoke").status_code == 200
            wait_until(lambda: pushes, 10, what="a push to the socket whose token is still good")
            assert clients["kept"].connected
            metrics = stack.api("GET", "/metrics").text
            assert "pulse_lapsed_token_clients_total 2.0" in metrics
        finally:
            for client in clients.values():
                client.disconnect()


# --- TLS behind a proxy, and the access log -----------------------------------------------------------


def forwarded(https: bool) -> dict[str, str]:
    return {"X-Forwarded-Proto": "https" if https else "http", "X-Forwarded-Host": PROXIED}


def test_a_trusted_proxy_makes_the_cookie_secure_and_the_socket_same_origin(matrix_server):
    stack = matrix_server
    assert "Secure" not in session_cookie(stack, TOKEN).headers["Set-Cookie"]
    response = session_cookie(stack, TOKEN, **forwarded(https=True))
    assert "Secure" in [flag.strip() for flag in response.headers["Set-Cookie"].split(";")]
    # The browser talks to https://pulse.example.test: its Origin is the proxy's, not 127.0.0.1's.
    cookie = {"Cookie": f"pulse_session={response.cookies['pulse_session']}"}
    client = connect(stack, f"https://{PROXIED}", headers={**cookie, **forwarded(https=True)})
    try:
        assert "tasks" in client.call("subscribe", {"dashboard": True}, timeout=10)
    finally:
        client.disconnect()
    with pytest.raises(socketio.exceptions.ConnectionError):  # the proxy said plain HTTP
        connect(stack, f"https://{PROXIED}", headers={**cookie, **forwarded(https=False)})


def test_without_the_proxy_setting_forwarded_headers_change_nothing(redis_url):
    """Also the threading server's access log: a per-task token in a URL is blanked there."""
    url = db_url(redis_url, DB)
    with own_server(url, "web-access-threading", PULSE_ASYNC_MODE="threading") as (_proc, stack):
        response = session_cookie(stack, TOKEN, **forwarded(https=True))
        assert "Secure" not in response.headers["Set-Cookie"]
        with pytest.raises(socketio.exceptions.ConnectionError):
            connect(stack, f"https://{PROXIED}", headers={
                "Cookie": f"pulse_session={response.cookies['pulse_session']}", **forwarded(https=True)})
        ids = seed(stack.celery.pulse.registry, "running")
        token = mint_token(grant_key_from_env(stack.env), task_id=ids["A"])[0]
        assert requests.get(f"{stack.base_url}/api/tasks/{ids['A']}", params={"token": token},
                            timeout=10).status_code == 200
        log = Path(ARTIFACTS / "web-access-threading.log")
        line = f"GET /api/tasks/{ids['A']}?token=[redacted] HTTP/1.1"
        wait_until(lambda: line in log.read_text(), 10, what="the request in the access log")
        assert token not in log.read_text() and TOKEN not in log.read_text()
