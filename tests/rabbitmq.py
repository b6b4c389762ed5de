"""A private RabbitMQ node for the tests: free ports, a fresh folder, stopped by PID.

Debian's ``rabbitmq-server`` script, run as root, drops to the ``rabbitmq`` user through ``su`` in a
session of its own, so stopping the process we started does not stop the node: the node's own PID
comes from ``RABBITMQ_PID_FILE``. The node talks to an ``epmd`` of ours, on a free port of its own
(``ERL_EPMD_PORT``), so stopping it by PID never touches an epmd that some other node relies on.
See shared/CELERY_NOTES.md, "RabbitMQ in tests"; the ``rabbitmq_url`` fixture is in
tests/integration/conftest.py.
"""

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kombu import Connection

from pulse import devstack

RABBITMQ_SERVER = "/usr/sbin/rabbitmq-server"
USER = "rabbitmq"


def _epmd_binary() -> str | None:
    bundled = (str(path) for path in Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
    return shutil.which("epmd") or next(bundled, None)


def unavailable() -> str | None:
    """Why a private node cannot be started here, or None when it can."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        return (f"RabbitMQ tests need Debian's rabbitmq-server at {RABBITMQ_SERVER} "
                "(apt-get install rabbitmq-server)")
    if _epmd_binary() is None:
        return "RabbitMQ tests need Erlang's epmd (it comes with rabbitmq-server's erlang packages)"
    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        return f"RabbitMQ tests need the {USER!r} user that Debian's rabbitmq-server package creates"
    if os.geteuid() not in (0, user.pw_uid):
        return f"Debian's rabbitmq-server script runs only as root or {USER!r}"
    return None


@dataclass
class RabbitNode:
    """A running node: its AMQP URL and what it takes to stop it."""

    url: str
    nodename: str
    base: Path
    launcher: subprocess.Popen
    epmd: subprocess.Popen

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbit.pid"

    def node_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the node by the PID in its pid file, SIGKILL if it lingers; then our epmd."""
        pid = self.node_pid()
        if pid is not None:
            _terminate(pid, timeout)
        devstack.stop(self.launcher, timeout=5)
        devstack.stop(self.epmd, timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(USER)
        for item in [path, *path.rglob("*")]:
            os.chown(item, user.pw_uid, user.pw_gid)


def start_rabbitmq(base: Path, name: str = "pulsetest", log: IO | None = None,
                   timeout: float = 60.0) -> RabbitNode:
    """Start a private node with its data, logs and HOME under ``base``; wait until AMQP accepts."""
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("mnesia", "log", "home"):
        (base / sub).mkdir(exist_ok=True)
    _own(base)
    amqp_port, dist_port, epmd_port = devstack.free_port(), devstack.free_port(), devstack.free_port()
    while len({amqp_port, dist_port, epmd_port}) < 3:
        dist_port, epmd_port = devstack.free_port(), devstack.free_port()
    nodename = f"{name}{amqp_port}@localhost"
    epmd = subprocess.Popen([_epmd_binary(), "-port", str(epmd_port), "-address", "127.0.0.1"],
                            stdout=log, stderr=subprocess.STDOUT if log is not None else None,
                            start_new_session=True)
    try:
        devstack.wait_for_port(epmd_port, epmd, timeout=10, what="epmd")
    except BaseException:
        devstack.stop(epmd)
        raise
    env = dict(
        os.environ,
        RABBITMQ_NODE_PORT=str(amqp_port), RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_NODENAME=nodename, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_MNESIA_BASE=str(base / "mnesia"), RABBITMQ_LOG_BASE=str(base / "log"),
        RABBITMQ_PID_FILE=str(base / "rabbit.pid"), HOME=str(base / "home"),
        ERL_EPMD_PORT=str(epmd_port),
    )
    launcher = subprocess.Popen([RABBITMQ_SERVER], cwd=base, env=env, stdout=log,
                                stderr=subprocess.STDOUT if log is not None else None,
                                start_new_session=True)
    node = RabbitNode(f"amqp://guest:guest@127.0.0.1:{amqp_port}//", nodename, base, launcher, epmd)
    try:
        _wait_for_amqp(node, timeout)
    except BaseException:
        node.stop()
        raise
    return node


def _wait_for_amqp(node: RabbitNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if node.launcher.poll() is not None and node.node_pid() is None:
            raise RuntimeError(f"rabbitmq-server exited with code {node.launcher.returncode}; "
                               f"see its logs under {node.base / 'log'}")
        with Connection(node.url, connect_timeout=2) as conn:
            try:
                conn.ensure_connection(max_retries=1, timeout=2)
                return
            except Exception as exc:  # refused until the node has booted
                last = exc
        time.sleep(0.5)
    raise TimeoutError(f"RabbitMQ node {node.nodename} did not accept AMQP within {timeout:.0f}s: {last!r}")
