"""`make run`'s launcher: starts Redis, a worker and the server, and Ctrl-C stops all of it."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from pulse import devstack

from ..conftest import ROOT, wait_until

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def run_launcher(tmp_path: Path, **env: str):
    port = devstack.free_port()
    out = tmp_path / "launcher.log"
    full_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PULSE_TOKEN")}
    full_env.update(PORT=str(port), PULSE_DATA_DIR=str(tmp_path / "data"), **env)
    with open(out, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pulse.devstack"], cwd=ROOT, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = wait_until(lambda: re.search(r"Pulse is running: (\S+)", out.read_text()), 60, 0.2,
                     "the launcher's URL")
    return proc, url.group(1), out


def stop_launcher(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(60)


def test_launcher_runs_the_stack_and_ctrl_c_leaves_nothing(tmp_path):
    proc, url, out = run_launcher(tmp_path)
    try:
        base, _, token = url.partition("/login#token=")
        assert base.startswith("http://127.0.0.1:") and len(token) >= 32
        assert (tmp_path / "data" / "token").stat().st_mode & 0o777 == 0o600
        children = descendants(proc.pid)
        commands = " ".join(Path(f"/proc/{pid}/cmdline").read_text() for pid in children if alive(pid))
        assert "redis-server" in commands and "celery" in commands and "app.py" in commands
        headers = {"Authorization": f"Bearer {token}"}
        launched = requests.post(base + "/api/tasks", json={"name": "tasks.demo.count",
                                 "kwargs": {"total": 3, "delay": 0.01}}, headers=headers, timeout=10)
        task_url = base + launched.json()["url"]
        wait_until(lambda: requests.get(task_url, headers=headers, timeout=5).json()["status"] == "finished",
                   30, 0.2, "the demo task on the launched stack")
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists()
    finally:
        stop_launcher(proc)
    assert proc.returncode == 0, out.read_text()
    assert [pid for pid in children if alive(pid)] == []


def test_launcher_with_redis_url_starts_no_redis(tmp_path, redis_url):
    proc, url, out = run_launcher(tmp_path, REDIS_URL=redis_url.rsplit("/", 1)[0] + "/2")
    try:
        children = descendants(proc.pid)
        commands = " ".join(Path(f"/proc/{pid}/cmdline").read_text() for pid in children if alive(pid))
        assert "redis-server" not in commands and "celery" in commands
        assert "embedded" not in out.read_text()
    finally:
        stop_launcher(proc)
    assert [pid for pid in children if alive(pid)] == []


def test_launcher_refuses_a_busy_port(tmp_path, redis_url):
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "pulse.devstack"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30,
                                env=dict(os.environ, PORT=str(port), REDIS_URL=redis_url))
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
