"""A user's eye view: Pulse installed with pip into a fresh virtualenv, running a project of its own.

The repository's files (what ``git ls-files`` lists, as they are in the working tree) are copied
to a temporary folder and installed from there with ``pip install "<copy>[server]"``; every
process runs from the copy's ``tests/foreign`` folder with the fresh virtualenv's executables and
no PYTHONPATH, so nothing is imported from this working tree. The project (``orders``) has its
own Celery app, its own task base class and its own settings, on a Redis database of its own.
The end-to-end test runs twice: with Redis as the broker, then with the private RabbitMQ node
(Redis stays the result backend and registry).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
import requests
import socketio
from celery import Celery
from kombu import Connection

from pulse import devstack

from ..conftest import ARTIFACTS, ROOT, TOKEN, db_url, flush_db, wait_until

pytestmark = pytest.mark.integration

ORDERS_DB = 15
LOST_AFTER = 3.0
INSTALL_TIMEOUT = 900  # pip builds the wheel and installs the server's dependencies


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _copy_repository(target: Path) -> None:
    """The files git knows of (tracked, and new ones not ignored), as they are in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree, not yet in the index
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)


def _clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell with the fresh virtualenv activated: no PYTHONPATH."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "REDIS_URL", "CELERY_APP")
           and not key.startswith(("PULSE_", "CELERY_", "PYTEST_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


@dataclass
class Install:
    venv: Path
    project: Path  # the copy's tests/foreign: where the user's shell stands

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Install:
    base = tmp_path_factory.mktemp("foreign")
    venv = base / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0 or not (venv / "bin" / "pip").exists():
        reason = f"cannot create a virtualenv: {made.stderr.strip() or 'no pip in it'}"
        if _on_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    repo = base / "repo"
    _copy_repository(repo)
    with open(ARTIFACTS / "foreign-pip.log", "w") as log:
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", f"{repo}[server]"], cwd=base,
                             env=_clean_env(venv), stdout=log, stderr=subprocess.STDOUT,
                             timeout=INSTALL_TIMEOUT)
    assert pip.returncode == 0, "pip install failed; see test-artifacts/foreign-pip.log"
    shutil.rmtree(repo / "pulse")  # nothing may be imported from the copy's source either
    return Install(venv, repo / "tests" / "foreign")


@contextmanager
def _process(install: Install, name: str, argv: list[str], env: dict[str, str]) -> Iterator[Popen]:
    """``argv`` started from the project's folder in a process group of its own, stopped by PID."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / f"{name}.log", "w") as log:
        proc = Popen(argv, cwd=install.project, env=env, stdout=log, stderr=subprocess.STDOUT,
                     start_new_session=True)
        try:
            yield proc
        finally:
            devstack.stop(proc)


class Pushes:
    def __init__(self, client: socketio.Client) -> None:
        self.items: list[dict] = []
        self.lock = threading.Lock()
        client.on("task", self.add)

    def add(self, data: dict) -> None:
        with self.lock:
            self.items.append(data)

    def of(self, task_id: str) -> list[dict]:
        with self.lock:
            return [item for item in self.items if item["id"] == task_id]


def test_pulse_is_imported_from_the_fresh_virtualenv(installed):
    out = subprocess.run([installed.bin("python"), "-c", "import pulse, orders; print(pulse.__file__)"],
                         cwd=installed.project, env=_clean_env(installed.venv), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(installed.venv), out.stdout
    assert not Path(out.stdout.strip()).is_relative_to(ROOT)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request, redis_url) -> Iterator[str]:
    """The project's broker: its Redis database, or the private RabbitMQ node (Redis stays the result
    backend and registry). On RabbitMQ the project's queue is purged afterwards, so a task a failed
    run left behind never reaches another module's worker on the same node."""
    if request.param == "redis":
        yield db_url(redis_url, ORDERS_DB)
        return
    url = request.getfixturevalue("rabbitmq_url")
    try:
        yield url
    finally:
        with Connection(url, connect_timeout=5) as conn:
            try:
                conn.default_channel.queue_purge("celery")
            except Exception:  # noqa: S110 - no such queue: nothing to purge
                pass


def test_a_foreign_project_runs_with_pulse_installed_by_pip(installed, redis_url, broker_url):
    url = db_url(redis_url, ORDERS_DB)
    flush_db(url)
    port = devstack.free_port()
    env = _clean_env(installed.venv, ORDERS_BROKER_URL=broker_url, ORDERS_RESULT_BACKEND=url)
    server_env = dict(env, PULSE_TOKEN=TOKEN, HOST="127.0.0.1", PORT=str(port), PULSE_LAUNCH_ALLOW="",
                      PULSE_LOST_AFTER=str(LOST_AFTER), PULSE_MAINTENANCE_INTERVAL="0.5",
                      PULSE_WORKER_CHECK_INTERVAL="1")
    base = f"http://127.0.0.1:{port}"
    plain = Celery("outsider", broker=url, backend=url)  # no Pulse: Celery's own view of the results

    def api(path: str) -> requests.Response:
        return requests.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    def send(task: str, **kwargs) -> str:
        """Sent the way the project's own code sends it (its app, with Pulse installed)."""
        code = f"from orders.tasks import {task}; print({task}.apply_async(kwargs={kwargs!r}).id)"
        out = subprocess.run([installed.bin("python"), "-c", code], cwd=installed.project, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def status_is(task_id: str, *statuses: str, timeout: float = 30.0) -> dict:
        def check() -> dict | None:
            response = api(f"/api/tasks/{task_id}")
            return response.json() if response.ok and response.json()["status"] in statuses else None

        return wait_until(check, timeout, 0.1, f"task {task_id} to be {statuses}")

    server_argv = [installed.bin("celery"), "-A", "orders", "pulse", "--port", str(port)]
    try:
        with _process(installed, "foreign-server", server_argv, server_env) as server:
            devstack.wait_for_port(port, server, timeout=60, what="celery -A orders pulse")
            wait_until(lambda: requests.get(base + "/healthz", timeout=5).json()["monitor"]["connected"],
                       30, 0.1, "the server's monitor to connect")
            # The wheel carries the web files: the page, its script and the vendored Socket.IO.
            login = requests.get(base + "/login", timeout=10)
            assert login.status_code == 200 and "login.js" in login.text
            for asset in ("login.js", "js/common.js", "vendor/socket.io-4.8.1.min.js"):
                assert requests.get(f"{base}/static/{asset}", timeout=10).status_code == 200, asset
            client = socketio.Client(reconnection=False)
            client.connect(base, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=10)
            pushes = Pushes(client)
            try:
                # No worker yet: the task is known as scheduled, from the producer's own record.
                order = send("process_order", items=6, delay=0.4)
                charge = send("charge_card")
                ack = client.call("subscribe", {"task": order}, timeout=10)
                assert ack["task"]["id"] == order and ack["task"]["status"] == "scheduled", ack
                assert ack["task"]["name"] == "orders.tasks.process_order"
                assert api(f"/api/tasks/{charge}").json()["status"] == "scheduled"

                worker_argv = [installed.bin("celery"), "-A", "orders", "worker", "-E", "--pool", "prefork",
                               "-c", "2", "--hostname", "ordersworker@%h", "--loglevel", "INFO"]
                with _process(installed, "foreign-worker", worker_argv, env) as worker:
                    finished = status_is(order, "finished", timeout=60)
                    assert finished["result"] == 6 and finished["worker"].startswith("ordersworker@")
                    running = [t["progress"]["current"] for t in pushes.of(order)
                               if t["status"] == "running" and t["progress"]]
                    assert len(running) >= 3 and running == sorted(running), pushes.of(order)
                    assert 0 < running[0] < 6
                    wait_until(lambda: any(t["status"] == "finished" for t in pushes.of(order)), 5, 0.1,
                               "the finished push")

                    failed = status_is(charge, "failed")
                    assert failed["state"] == "FAILURE"
                    assert failed["failure"]["exc_type"] == "ValueError"
                    assert failed["failure"]["exc_message"] == "card declined"
                    assert failed["failure"]["details"] == {"gateway": "test-gw", "attempt": 2}
                    result = plain.AsyncResult(charge)
                    assert result.state == "FAILURE"
                    assert isinstance(result.info, ValueError) and str(result.info) == "card declined"

                    # Every kind of task (base=, task_cls=, Celery's Task) has bounded failure
                    # events in the worker, and the project's own request class is kept.
                    mro = status_is(send("request_classes"), "finished")["result"]
                    assert all("BoundedEvents" in classes for classes in mro.values()), mro
                    assert "AuditedRequest" in mro["orders.tasks.rebuild_index"], mro
                    assert "AuditedRequest" not in mro["orders.tasks.process_order"], mro

                    long = send("rebuild_index", seconds=120)
                    client.call("subscribe", {"task": long}, timeout=10)
                    assert status_is(long, "running")["worker"].startswith("ordersworker@")
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(10)
                lost = status_is(long, "lost", timeout=LOST_AFTER + 20)
                assert lost["progress"]["current"] == 1 and lost["can_replay"] is True
                wait_until(lambda: any(t["status"] == "lost" for t in pushes.of(long)), 5, 0.1,
                           "the lost push")
            finally:
                client.disconnect()
    finally:
        plain.close()
        plain.backend.client.connection_pool.disconnect()
