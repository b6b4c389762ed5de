"""Flower, the competitor: its own virtualenv (``.venv-bench``, made by ``make bench``) and process."""

import os
import re
import subprocess

import requests

from pulse import devstack

from .harness import ROOT, Stack

VENV = ROOT / os.environ.get("PULSE_BENCH_VENV", ".venv-bench")
EVENTS = re.compile(r"^flower_events_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def python() -> str:
    path = VENV / "bin" / "python"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make bench`, which installs Flower into {VENV.name}")
    return str(path)


def version() -> str:
    out = subprocess.run([python(), "-c", "import flower; print(flower.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start(running: Stack, name: str = "flower", max_tasks: int = 100_000, broker: str = "") -> str:
    """Start Flower on a free loopback port on ``broker`` (default: the stack's Redis); returns its URL."""
    port = devstack.free_port()
    cmd = [python(), "-m", "celery", "--broker", broker or running.redis_url, "flower", f"--port={port}",
           "--address=127.0.0.1", f"--max_tasks={max_tasks}", "--inspect_timeout=500"]
    # Run from the data folder, not the repository: Flower must not import Pulse's `tasks`.
    env = {key: value for key, value in running.env.items() if not key.startswith("PULSE_")}
    proc = subprocess.Popen(cmd, cwd=running.data, env=env, stdout=running.log(name),
                            stderr=subprocess.STDOUT, start_new_session=True)
    running.procs[name] = proc
    devstack.wait_for_port(port, proc, what="flower")
    return f"http://127.0.0.1:{port}"


def events_total(url: str) -> int:
    """Events Flower has processed, from its Prometheus counter."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return int(sum(float(value) for value in EVENTS.findall(text)))
