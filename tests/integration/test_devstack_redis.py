"""`make run`'s embedded Redis: it requires a password kept beside the token, and nobody but its
owner can read its data, its password or its log."""

import re
import socket
import stat
from pathlib import Path

import pytest
import redis
import requests

from pulse import devstack

from ..conftest import wait_until
from .test_launcher import alive, descendants, run_launcher, stop_launcher

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def unauthenticated_ping(port: int) -> bytes:
    """What Redis answers a PING from a client that sent no password."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(200)


def test_the_embedded_redis_needs_its_password_and_keeps_its_files_private(tmp_path):
    data = tmp_path / "data"
    redis_port = devstack.free_port()
    proc, url, out = run_launcher(tmp_path, REDIS_PORT=str(redis_port))
    try:
        assert unauthenticated_ping(redis_port).startswith(b"-NOAUTH")
        password = (data / "redis-password").read_text().strip()
        assert len(password) >= 32
        with redis.Redis.from_url(devstack.redis_url(redis_port, password)) as connection:
            assert connection.ping()
            connection.bgsave()  # a dump.rdb too, beside the append-only file
            wait_until(lambda: (data / "redis" / "dump.rdb").exists(), 10, 0.1, "dump.rdb")
        # The worker and the server got the password through REDIS_URL: the stack works.
        base, _, token = url.partition("/login#token=")
        headers = {"Authorization": f"Bearer {token}"}
        health = requests.get(base + "/healthz", timeout=5).json()
        assert health["redis"]["ok"] is True, health
        launched = requests.post(base + "/api/tasks", json={"name": "tasks.demo.count",
                                 "kwargs": {"total": 2, "delay": 0.01}}, headers=headers, timeout=10)
        task_url = base + launched.json()["url"]
        wait_until(lambda: requests.get(task_url, headers=headers, timeout=5).json()["status"] == "finished",
                   30, 0.2, "the demo task on the launched stack")
        # Nobody else reads the password, the data, or the log: 0600 files in 0700 folders.
        assert mode(data) == 0o700 and mode(data / "redis") == 0o700
        assert mode(data / "redis-password") == 0o600 and mode(data / "token") == 0o600
        files = sorted(item.name for item in (data / "redis").iterdir())
        assert {"appendonly.aof", "dump.rdb", "redis.log"} <= set(files), files
        assert {name: mode(data / "redis" / name) for name in files} == dict.fromkeys(files, 0o600)
        # Nor does ps show it: not on any command line of the stack, nor in the launcher's output.
        children = [pid for pid in descendants(proc.pid) if alive(pid)]
        lines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
        assert any(b"redis-server" in line or re.search(rb"127\.0\.0\.1:\d+", line) for line in lines)
        assert not [line for line in lines if password.encode() in line]
        assert password not in out.read_text()
    finally:
        stop_launcher(proc)
    assert proc.returncode == 0, out.read_text()
    # A second run reuses the password (the data it protects is the same).
    assert (data / "redis-password").read_text().strip() == password
