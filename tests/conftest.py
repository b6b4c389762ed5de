"""Fixtures that own real processes: an embedded Redis, a Celery worker and the web server.

Every process is started through ``pulse.devstack`` (as ``make run`` does) and stopped by PID.
Logs go to test-artifacts/ so a CI failure can be read afterwards.
"""

import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import pytest
import redis
import requests
import socketio
from playwright.sync_api import expect, sync_playwright

from pulse import devstack
from pulse.server import create_app
from pulse.server.model.results import use_lookup_only_backend
from tasks.celery import make_celery
from tasks.demo import LAUNCHABLE

from .rabbitmq import start_rabbitmq
from .rabbitmq import unavailable as rabbitmq_unavailable

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "test-operator-token-0123456789"


def demo_server(env: dict[str, str]):
    """The server (Flask app) for the demo project's Celery app, built from ``env``."""
    env = {"PULSE_LAUNCH_ALLOW": ",".join(LAUNCHABLE), **env}
    return create_app(make_celery(env), env)


def log_in(client, token: str, base: str = "", **kwargs):
    """Log ``client`` (a Flask test client or a requests.Session) in through the login form, as a
    browser does: the form's CSRF token first, then the token. Returns the POST's response."""
    form = client.get(base + "/login", **kwargs)
    csrf = re.search(r'id="login-form".*?name="csrf_token" value="([^"]*)"', form.text, re.S)
    assert csrf, f"the login page has no csrf_token field: {form.text[:300]!r}"
    return client.post(base + "/login", data={"token": token, "csrf_token": csrf.group(1)}, **kwargs)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack:
    """A running Pulse: where it listens, how to call it, and its Celery app."""

    def __init__(self, base_url: str, redis_url: str, env: dict[str, str]) -> None:
        self.base_url = base_url
        self.redis_url = redis_url
        self.env = env
        self.token = env["PULSE_TOKEN"]
        self.celery = make_celery(env)

    def api(self, method: str, path: str, token: str | None = "", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base_url + path, headers=headers, timeout=10, **kwargs)

    def launch(self, name: str, **kwargs) -> str:
        response = self.api("POST", "/api/tasks", json={"name": name, "kwargs": kwargs})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait_for(self, task_id: str, *statuses: str, timeout: float = 30.0) -> dict:
        def done():
            data = self.api("GET", f"/api/tasks/{task_id}").json()
            return data if data["status"] in statuses else None

        return wait_until(done, timeout, 0.1, f"task {task_id} to be {statuses}")

    def socket(self, auth: dict | None = None) -> socketio.Client:
        client = socketio.Client(reconnection=False)
        client.connect(self.base_url, auth={"token": self.token} if auth is None else auth,
                       transports=["websocket"], wait_timeout=10)
        return client


def _log(name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    return open(ARTIFACTS / f"{name}.log", "w")  # noqa: SIM115 - closed by the fixture


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    port, password = devstack.free_port(), secrets.token_urlsafe(16)
    log = _log("redis")
    # With a password, as `make run`'s: every process the tests start must get it through REDIS_URL.
    proc = devstack.start_redis(port, tmp_path_factory.mktemp("redis"), log=log, password=password)
    yield devstack.redis_url(port, password)
    devstack.stop(proc)
    log.close()


def server_env(redis_url: str, port: int, **extra: str) -> dict[str, str]:
    # Tests send wrong credentials on purpose, all from 127.0.0.1; the throttle's tests lower it.
    return dict(os.environ, REDIS_URL=redis_url, PORT=str(port), HOST="127.0.0.1",
                **{"PULSE_TOKEN": TOKEN, "PULSE_LAUNCH_ALLOW": ",".join(LAUNCHABLE),
                   "PULSE_AUTH_ATTEMPTS": "100000", **extra})


@pytest.fixture(scope="session")
def worker(redis_url) -> Iterator[None]:
    log = _log("worker")
    env = server_env(redis_url, 0)
    proc = devstack.start_worker(env, concurrency=4, log=log)
    app = make_celery(env)
    wait_until(lambda: proc.poll() is not None or app.control.ping(timeout=0.5), 60, 0.2, "the worker")
    assert proc.poll() is None, "the worker exited; see test-artifacts/worker.log"
    yield
    devstack.stop(proc)
    log.close()


def start_server(redis_url: str, name: str, port: int | None = None, **extra: str):
    port = port or devstack.free_port()  # a given port: a restarted server where the last one was
    env = server_env(redis_url, port, **extra)
    log = _log(name)
    try:
        proc = devstack.start_web(env, port, log=log)
    except BaseException:
        log.close()
        raise
    stack = Stack(f"http://127.0.0.1:{port}", redis_url, env)
    try:
        health = stack.base_url + "/healthz"
        wait_until(lambda: requests.get(health, timeout=5).json()["monitor"]["connected"],
                   30, 0.1, f"{name} monitor to connect")
    except BaseException:
        devstack.stop(proc)
        log.close()
        raise
    return proc, log, stack


@pytest.fixture(scope="session")
def stack(redis_url, worker) -> Iterator[Stack]:
    """The real thing: Redis, a worker, and the web server in its default (eventlet) mode."""
    proc, log, running = start_server(redis_url, "web-eventlet", PULSE_ASYNC_MODE="eventlet")
    yield running
    devstack.stop(proc)
    log.close()


def db_url(redis_url: str, db: int) -> str:
    """The same Redis, another database: for tests that need a registry and queues of their own."""
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


def flush_db(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def own_server(url: str, name: str, **extra: str) -> Iterator[tuple[Popen, Stack]]:
    """A web server of the test's own on ``url``, stopped by PID on the way out."""
    proc, log, stack = start_server(url, name, **extra)
    try:
        yield proc, stack
    finally:
        devstack.stop(proc)
        log.close()


@contextmanager
def fresh_server(redis_url: str, db: int, name: str, **extra: str) -> Iterator[Stack]:
    """A server of the test's own on database ``db`` of the session Redis, flushed before and after."""
    url = db_url(redis_url, db)
    flush_db(url)
    with own_server(url, name, **extra) as (_proc, stack):
        yield stack
    flush_db(url)


@contextmanager
def own_worker(url: str, name: str, concurrency: int = 1, app: str = "tasks", pool: str = "prefork",
               options: tuple[str, ...] = (), **extra: str) -> Iterator[Popen]:
    """A Celery worker of ``app`` named ``name@<host>`` on ``url``, answering pings before we go on
    (``pool``: its pool, ``options``: more ``celery worker`` options)."""
    env = server_env(url, 0, **extra)
    with _log(name) as log:
        proc = devstack.start_worker(env, concurrency=concurrency, log=log, name=name, app=app, pool=pool,
                                     options=options)
        try:
            control = make_celery(env)

            def answers() -> bool:
                replies = control.control.ping(timeout=0.5)
                return any(host.startswith(f"{name}@") for reply in replies for host in reply)

            wait_until(lambda: proc.poll() is not None or answers(), 60, 0.2, f"worker {name}")
            assert proc.poll() is None, f"worker {name} exited; see test-artifacts/{name}.log"
            yield proc
        finally:
            devstack.stop(proc)


@contextmanager
def producer_app(env: dict[str, str]):
    """A Celery app like any producer's: it records what it sends and reads results by lookup."""
    app = make_celery(env)
    use_lookup_only_backend(app)
    try:
        yield app
    finally:
        app.close()  # the broker's connections; the result backend's pool is closed below
        app.backend.client.connection_pool.disconnect()


@pytest.fixture
def producer(stack) -> Iterator:
    """Send tasks the way a host application does (names outside the launch allow-list too)."""
    with producer_app(stack.env) as app:
        yield app


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``; under CI=true fail it instead, so a run that tested
    nothing of a kind cannot pass."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


# Browser fixtures: Debian's Chromium, driven headless through Playwright (never its downloads);
# every browser test is skipped, with the reason, when it is missing (under CI=true: fails).
# PULSE_TEST_CHROMIUM points elsewhere (tests/unit/test_browser_gate.py points at nothing).
CHROMIUM = os.environ.get("PULSE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 30_000  # the machine has 2 cores and runs Redis, a worker and the server too
# expect() assertions have their own 5 s default, too short on a loaded 2-core machine.
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class JsErrors:
    """What went wrong in the page's JavaScript: uncaught exceptions and console.error calls."""

    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def script_errors(self) -> list[str]:
        """Uncaught exceptions, plus console errors that are not a non-2xx resource load.

        "Failed to load resource" is how Chromium logs any 4xx answer (a refused login is a 401
        by design), so it is not a script error.
        """
        console = [text for text in self.console_errors if not text.startswith("Failed to load resource")]
        return self.page_errors + console


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def js_errors() -> JsErrors:
    return JsErrors()


@pytest.fixture
def page(browser, js_errors):
    """A page in a fresh context: no cookies shared with any other test."""
    context = browser.new_context(color_scheme="light")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: js_errors.page_errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and js_errors.console_errors.append(msg.text))
    yield page
    context.close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The AMQP URL of a private RabbitMQ node, for the whole session.

    Skipped, with the reason, when this machine cannot run one; under CI=true that is a failure.
    """
    reason = rabbitmq_unavailable()
    if reason is not None:
        unavailable(reason)
    devstack_artifacts = devstack.ROOT / "test-artifacts"
    devstack_artifacts.mkdir(exist_ok=True)
    # Not under pytest's tmp_path: its parents are root-only (0700), the rabbitmq user must enter.
    base = Path(tempfile.mkdtemp(prefix="pulse-rabbitmq-"))
    with open(devstack_artifacts / "rabbitmq.log", "w") as log:
        node = start_rabbitmq(base, log=log)
        try:
            yield node.url
        finally:
            node.stop()
            # the node's own log, beside the others, for reading a CI failure afterwards
            for item in (base / "log").glob(f"{node.nodename}.log"):
                shutil.copy(item, devstack_artifacts / "rabbitmq-node.log")
            shutil.rmtree(base, ignore_errors=True)
