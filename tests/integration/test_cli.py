"""The ``pulse`` console script and ``celery -A proj pulse``, as a user starts them (pulse/cli.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from pulse import devstack
from tasks.celery import make_celery

from ..conftest import TOKEN, _log, db_url, flush_db, wait_until

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
DB = 11  # the tests here record into a database of their own


def clean_env(port: int, **extra: str) -> dict[str, str]:
    """What a user's shell would have: no demo settings, no PULSE_LAUNCH_ALLOW."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PULSE_", "CELERY_")) and k not in ("REDIS_URL", "BROKER_URL")}
    return dict(env, PULSE_TOKEN=TOKEN, HOST="127.0.0.1", PORT=str(port), **extra)


def serve(cmd: list[str], env: dict[str, str], port: int, name: str, cwd: Path) -> subprocess.Popen:
    log = _log(name)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        devstack.wait_for_port(port, proc, what=name)
        health = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: requests.get(health, timeout=5).json()["monitor"]["connected"], 30, 0.1,
                   f"{name} monitor to connect")
    except BaseException:
        devstack.stop(proc)
        raise
    finally:
        log.close()
    return proc


def api(port: int, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"http://127.0.0.1:{port}{path}", timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)


def test_pulse_with_broker_and_backend_serves_a_project_it_cannot_import(redis_url, tmp_path):
    url = db_url(redis_url, DB)
    flush_db(url)
    port = devstack.free_port()
    cmd = [str(BIN / "pulse"), "--broker", url, "--result-backend", url, "--port", str(port)]
    proc = serve(cmd, clean_env(0), port, "cli-broker", cwd=tmp_path)  # --port wins over PORT
    try:
        producer = make_celery({"REDIS_URL": url})
        task_id = producer.send_task("tasks.demo.count", kwargs={"total": 1}).id  # no worker: waits
        data = wait_until(lambda: api(port, "GET", f"/api/tasks/{task_id}").json(), 10, 0.1, "the record")
        assert data["status"] == "scheduled" and data["name"] == "tasks.demo.count"
        refused = api(port, "POST", "/api/tasks", json={"name": "tasks.demo.count"})
        assert refused.status_code in (400, 403) and "PULSE_LAUNCH_ALLOW" in refused.text  # none by default
        producer.close()
    finally:
        devstack.stop(proc)
        flush_db(url)


def test_celery_subcommand_serves_the_app_with_command_line_options(redis_url):
    url = db_url(redis_url, DB)
    port = devstack.free_port()
    cmd = [str(BIN / "celery"), "-A", "tasks", "pulse", "--port", str(port), "--async-mode", "threading"]
    proc = serve(cmd, clean_env(0, REDIS_URL=url), port, "cli-celery", cwd=devstack.ROOT)
    try:
        assert api(port, "GET", "/healthz").json()["status"] == "ok"
        # The sub-command replaced itself with the server (same PID, so it is stopped by PID).
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"pulse.cli" in cmdline and b"threading" in cmdline
    finally:
        devstack.stop(proc)


@pytest.mark.parametrize(("args", "says"), [
    (["--broker", "amqp://guest@127.0.0.1:1//", "--result-backend", "rpc://"], "set PULSE_REDIS_URL"),
    (["-A", "no_such_project"], "cannot load the Celery app 'no_such_project'"),
    ([], "name the Celery app (-A proj) or its broker (--broker URL)"),
])
def test_pulse_refuses_to_start_with_a_clear_message(args, says, tmp_path):
    done = subprocess.run([str(BIN / "pulse"), *args, "--port", str(devstack.free_port())], cwd=tmp_path,
                          env=clean_env(0), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and says in done.stderr, done.stderr


def test_pulse_prints_the_grant_key_host_apps_need(tmp_path):
    """The key that mints widget tokens and nothing else: what the server derives, never the master."""
    from pulse.settings import grant_key_from_env, load_config

    master = "master-key-for-the-cli-test-0123456789"
    done = subprocess.run([str(BIN / "pulse"), "--print-grant-key"], cwd=tmp_path, capture_output=True,
                          env=clean_env(0, PULSE_SECRET_KEY=master), text=True, timeout=60)
    printed = done.stdout.strip()
    assert done.returncode == 0 and printed == grant_key_from_env({"PULSE_SECRET_KEY": master})
    server = load_config({"PULSE_TOKEN": TOKEN, "PULSE_SECRET_KEY": master})
    assert printed == server["GRANT_KEY"] and printed not in (master, server["SECRET_KEY"])
    short = subprocess.run([str(BIN / "pulse"), "--print-grant-key"], cwd=tmp_path, capture_output=True,
                           env=clean_env(0, PULSE_SECRET_KEY="short"), text=True, timeout=60)
    assert short.returncode != 0 and "PULSE_SECRET_KEY must be" in short.stderr
