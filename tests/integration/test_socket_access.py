"""Who may open a socket, by transport and by the handshake's Origin: the Socket.IO rows of the
access matrix (README, "Who may do what"), against a real server, with raw Engine.IO requests.

``SOCKETS`` is the spec: one row per credential, one column per kind of handshake. Every HTTP
answer under /socket.io/ must carry the security headers every other response carries, and none
may allow credentials cross-origin (embedding pages connect with a per-task token, not cookies).
"""

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import websocket

from pulse.agent.tokens import mint_token

from ..conftest import TOKEN, Stack, db_url, flush_db, own_server

pytestmark = pytest.mark.integration

DB = 8  # shared with test_socket_hardening, which flushes it too; a prefix of its own
VIEWER = "viewer-token-0123456789abcdef"
EMBED_ORIGIN = "http://app.example.test"  # in PULSE_EMBED_ORIGINS
OTHER_ORIGIN = "http://evil.example.test"  # not
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                    "x-frame-options": "DENY"}

CREDENTIALS = {
    "op": "the operator token in the auth payload",
    "vw": "the viewer token in the auth payload",
    "opS": "an operator's login session cookie, no auth payload",
    "vwS": "a viewer's login session cookie, no auth payload",
    "tA": "a per-task token for task A in the auth payload",
    "gG": "a group token for group G in the auth payload",
    "frg": "a per-task token signed with another key (forged)",
    "exp": "an expired per-task token",
    "nil": "no credentials at all",
}
KINDS = {
    "ws": "websocket, Origin: the server's own (a page of Pulse)",
    "ws-": "websocket, no Origin (a non-browser client, or anything but a browser's websocket)",
    "ws!": "websocket, Origin: a foreign origin not in PULSE_EMBED_ORIGINS",
    "wsE": "websocket, Origin: EMBED_ORIGIN, listed in PULSE_EMBED_ORIGINS",
    "pl": "long-polling, Origin: the server's own",
    "plE": "long-polling, Origin: EMBED_ORIGIN",
    "jsonp": "JSONP polling (?j=0), no Origin: what a <script> tag on a same-site page sends",
}
# ok: connected. no: CONNECT refused by Pulse (44). origin: the handshake refused by Engine.IO
# (400, not an accepted origin). 400: JSONP refused before Engine.IO sees it.
# A session cookie counts only on a handshake whose Origin is the server's own; an embedding
# origin needs a per-task (or group) token.
SOCKETS = """
         ws   ws-  ws!     wsE  pl   plE  jsonp
op       ok   ok   origin  no   ok   no   400
vw       ok   ok   origin  no   ok   no   400
opS      ok   no   origin  no   ok   no   400
vwS      ok   no   origin  no   ok   no   400
tA       ok   ok   origin  ok   ok   ok   400
gG       ok   ok   origin  ok   ok   ok   400
frg      no   no   origin  no   no   no   400
exp      no   no   origin  no   no   no   400
nil      no   no   origin  no   no   no   400
"""


def parse_sockets(table: str) -> list[tuple[str, str, str]]:
    header, *rows = [line.split() for line in table.strip().splitlines()]
    assert header == list(KINDS) and [row[0] for row in rows] == list(CREDENTIALS)
    return [(row[0], kind, cell) for row in rows for kind, cell in zip(header, row[1:], strict=True)]


@dataclass
class Credentials:
    auth: dict[str, dict]  # credential -> its auth payload
    cookies: dict[str, str] = field(default_factory=dict)  # credential -> its Cookie header


def session_cookie(stack: Stack, token: str) -> str:
    """Log in through the login form as a browser does (its hidden csrf_token field, when the
    form has one) and return the Cookie header the browser would send afterwards."""
    with requests.Session() as browser:
        form = browser.get(stack.base_url + "/login", timeout=10)
        csrf = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]*)"', form.text)
        data = {"token": token, **({"csrf_token": csrf.group(1)} if csrf else {})}
        answer = browser.post(stack.base_url + "/login", data=data, headers={"Origin": stack.base_url},
                              allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies)


@pytest.fixture(scope="module")
def server(redis_url) -> Iterator[tuple[Stack, Credentials]]:
    url = db_url(redis_url, DB)
    flush_db(url)
    with own_server(url, "web-socket-access", PULSE_VIEWER_TOKEN=VIEWER, PULSE_EMBED_ORIGINS=EMBED_ORIGIN,
                    PULSE_REGISTRY_PREFIX="sockacc:", PULSE_TOKEN_RECHECK_INTERVAL="3600") as (_, stack):
        registry = stack.celery.pulse.registry
        tag = uuid.uuid4().hex[:10]
        task, group = f"a-{tag}", f"g-{tag}"
        registry.write(task, "running", fields={"name": "tasks.demo.count"})
        registry.write(f"{group}-0", "running", fields={"name": "tasks.demo.count", "group_id": group,
                                                        "group_index": 0})

        def minted(kind: str, scope: str, ttl: int = 3600) -> str:
            answer = stack.api("POST", f"/api/{kind}/{scope}/token", json={"ttl": ttl})
            assert answer.status_code == 200, answer.text
            return answer.json()["token"]

        expiring = minted("tasks", task, ttl=1)
        tokens = {"op": TOKEN, "vw": VIEWER, "tA": minted("tasks", task), "gG": minted("groups", group),
                  "frg": mint_token("not-this-servers-secret", task_id=task)[0], "exp": expiring}
        credentials = Credentials(auth={name: {"token": token} for name, token in tokens.items()},
                                  cookies={"opS": session_cookie(stack, TOKEN),
                                           "vwS": session_cookie(stack, VIEWER)})
        time.sleep(1.5)  # "exp" has expired by now
        yield stack, credentials


class Handshake:
    """One connection attempt; ``problems`` lists every HTTP answer that broke the header rules."""

    def __init__(self, stack: Stack, origin: str | None, auth: dict | None, cookie: str | None) -> None:
        self.stack, self.origin, self.auth, self.cookie = stack, origin, auth, cookie
        self.problems: list[str] = []

    def check(self, what: str, status: int, headers: dict[str, str], secured: bool = True) -> None:
        headers = {name.lower(): value for name, value in headers.items()}
        if "access-control-allow-credentials" in headers:
            self.problems.append(f"{what} ({status}): Access-Control-Allow-Credentials "
                                 f"{headers['access-control-allow-credentials']!r}")
        if not secured:  # a 101 is written by the websocket library, not through WSGI headers
            return
        for name, value in SECURITY_HEADERS.items():
            if headers.get(name) != value:
                self.problems.append(f"{what} ({status}): {name} is {headers.get(name)!r}, not {value!r}")
        policy = headers.get("content-security-policy", "")
        if "frame-ancestors 'none'" not in policy or "default-src 'self'" not in policy:
            self.problems.append(f"{what} ({status}): Content-Security-Policy {policy!r}")

    def connect_packet(self) -> str:
        return "40" + (json.dumps(self.auth) if self.auth is not None else "")

    def websocket(self) -> str:
        url = self.stack.base_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        options = {"origin": self.origin} if self.origin else {"suppress_origin": True}
        try:
            ws = websocket.create_connection(url, timeout=10, cookie=self.cookie, **options)
        except websocket.WebSocketBadStatusException as exc:
            self.check("websocket handshake", exc.status_code, dict(exc.resp_headers or {}))
            return "origin" if exc.status_code == 400 and b"origin" in (exc.resp_body or b"") else \
                f"handshake {exc.status_code}"
        try:
            self.check("websocket handshake", ws.getstatus(), dict(ws.getheaders() or {}), secured=False)
            assert ws.recv().startswith("0{")
            ws.send(self.connect_packet())
            return outcome(ws.recv())
        finally:
            ws.close()

    def polling(self) -> str:
        base = self.stack.base_url + "/socket.io/?EIO=4&transport=polling"
        headers = {name: value for name, value in (("Origin", self.origin), ("Cookie", self.cookie)) if value}
        opened = requests.get(base, headers=headers, timeout=10)
        self.check("polling handshake", opened.status_code, opened.headers)
        if opened.status_code == 400 and "origin" in opened.text:
            return "origin"
        sid = json.loads(opened.text[1:])["sid"]
        sent = requests.post(f"{base}&sid={sid}", data=self.connect_packet(), timeout=10,
                             headers={**headers, "Content-Type": "text/plain;charset=UTF-8"})
        self.check("polling POST", sent.status_code, sent.headers)
        answer = requests.get(f"{base}&sid={sid}", headers=headers, timeout=10)
        self.check("polling GET", answer.status_code, answer.headers)
        closed = requests.post(f"{base}&sid={sid}", data="1", timeout=10, headers=headers)
        self.check("polling close", closed.status_code, closed.headers)
        return outcome(answer.text.split("\x1e")[0])

    def jsonp(self) -> str:
        # A <script src=...> sends the cookie and no Origin; the CONNECT would follow as a form POST.
        headers = {"Cookie": self.cookie} if self.cookie else {}
        answer = requests.get(self.stack.base_url + "/socket.io/?EIO=4&transport=polling&j=0",
                              headers=headers, timeout=10)
        self.check("JSONP handshake", answer.status_code, answer.headers)
        refused = answer.status_code == 400 and "JSONP" in answer.text
        return "400" if refused else f"served {answer.status_code}"


def outcome(packet: str) -> str:
    if packet.startswith("40{"):
        return "ok"
    if packet.startswith("44"):
        return "no"
    return f"unexpected {packet[:60]!r}"


def attempt(stack: Stack, credentials: Credentials, credential: str, kind: str) -> tuple[str, list[str]]:
    origin = {"ws": stack.base_url, "ws-": None, "ws!": OTHER_ORIGIN, "wsE": EMBED_ORIGIN,
              "pl": stack.base_url, "plE": EMBED_ORIGIN, "jsonp": None}[kind]
    handshake = Handshake(stack, origin, credentials.auth.get(credential),
                          credentials.cookies.get(credential))
    if kind == "jsonp":
        result = handshake.jsonp()
    elif kind.startswith("ws"):
        result = handshake.websocket()
    else:
        result = handshake.polling()
    return result, handshake.problems


@pytest.mark.parametrize(("credential", "kind", "expected"), parse_sockets(SOCKETS),
                         ids=[f"{c}-{k}" for c, k, _ in parse_sockets(SOCKETS)])
def test_socket_access(server, credential, kind, expected):
    stack, credentials = server
    assert attempt(stack, credentials, credential, kind) == (expected, [])


@pytest.mark.parametrize("query", ["j=0", "j=", "j=1&b64=1", "sid=whatever&j=0"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_any_jsonp_request_is_refused_with_the_reason(server, method, query):
    stack, credentials = server
    answer = requests.request(method, f"{stack.base_url}/socket.io/?EIO=4&transport=polling&{query}",
                              data="d=40" if method == "POST" else None, timeout=10,
                              headers={"Cookie": credentials.cookies["opS"]})
    assert (answer.status_code, answer.headers["X-Content-Type-Options"]) == (400, "nosniff")
    assert "JSONP polling is refused" in answer.text


def test_engineio_errors_carry_the_security_headers(server):
    stack, _ = server
    handshake = Handshake(stack, None, None, None)
    for query in ("transport=polling&sid=no-such-session", "transport=carrier"):
        url = f"/socket.io/?EIO=4&{query}"
        answer = requests.get(stack.base_url + url, timeout=10)
        assert answer.status_code == 400
        handshake.check(url, answer.status_code, answer.headers)
    # Pulse's own refusal of an oversized polling body (pulse/server/push/transport.py) too.
    url = "/socket.io/?EIO=4&transport=polling&sid=no-such-session"
    answer = requests.post(stack.base_url + url, data="4" + "x" * 70_000, timeout=10)
    assert answer.status_code == 413
    handshake.check("oversized POST", answer.status_code, answer.headers)
    assert handshake.problems == []
