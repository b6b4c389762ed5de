"""The Tasks page under load: 10,000 tasks in the registry and 200 reporting progress at once.

Setup: an embedded Redis, 10,000 finished records written straight into the registry, a real
worker (thread pool, 200 threads) running 200 `tasks.demo.count` tasks that report 4 times a
second, the real server (eventlet), and headless Chromium on /tasks. The page measures its own
frame intervals (requestAnimationFrame) and long tasks (PerformanceObserver) while the tasks run.
Prints one table of figures; asserts nothing about speed.

    .venv/bin/python bench/dashboard_load.py [--records 10000] [--reporters 200] [--seconds 10]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from pulse import devstack  # noqa: E402
from tasks.celery import make_celery  # noqa: E402

TOKEN = "bench-operator-token-0123456789"
MEASURE = """
async (seconds) => {
  const frames = [], long = [];
  new PerformanceObserver((list) => list.getEntries().forEach((e) => long.push(e.duration)))
    .observe({type: 'longtask', buffered: false});
  const end = performance.now() + seconds * 1000;
  await new Promise((resolve) => {
    let last = performance.now();
    const tick = (now) => { frames.push(now - last); last = now;
      if (now < end) requestAnimationFrame(tick); else resolve(); };
    requestAnimationFrame(tick);
  });
  return {frames, long, rows: document.querySelectorAll('tbody tr').length};
}
"""


def fill(env: dict, count: int) -> None:
    registry = make_celery(env).pulse.registry
    pipe = registry.client.pipeline(transaction=False)
    now = time.time() - count
    for number in range(count):
        registry.write(f"bench-{number:06d}", "finished", now=now + number, client=pipe, fields={
            "name": "bench.filler", "state": "SUCCESS", "worker": "bench@host", "result": number,
            "progress": {"current": 1, "total": 1, "percent": 100.0, "message": "done"}})
        if number % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--reporters", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as data:
        try:
            redis_port, web_port = devstack.free_port(), devstack.free_port()
            procs.append(devstack.start_redis(redis_port, Path(data)))
            env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", PULSE_TOKEN=TOKEN,
                       PORT=str(web_port), HOST="127.0.0.1",
                       PULSE_MAX_CONNECTIONS_PER_ADDRESS="0")  # every dashboard is on 127.0.0.1
            started = time.monotonic()
            fill(env, args.records)
            fill_seconds = time.monotonic() - started
            procs.append(devstack.start_worker(env, concurrency=args.reporters, pool="threads",
                                               name="bench", log=open(os.devnull, "w")))
            procs.append(devstack.start_web(env, web_port, log=open(os.devnull, "w")))
            base = f"http://127.0.0.1:{web_port}"
            results = run_browser(base, env, args)
        finally:
            for proc in reversed(procs):
                devstack.stop(proc)
    frames, long = results["frames"][5:], results["long"]
    print(f"{'setup':<44}{args.records} records (written in {fill_seconds:.1f} s), "
          f"{args.reporters} tasks reporting 4/s")
    print(f"{'frames measured':<44}{len(frames)} over {args.seconds:.0f} s")
    print(f"{'frame interval p50 / p95 / p99 / max (ms)':<44}{statistics.median(frames):.1f} / "
          f"{percentile(frames, .95):.1f} / {percentile(frames, .99):.1f} / {max(frames):.1f}")
    print(f"{'frames over 50 ms':<44}{sum(1 for f in frames if f > 50)}")
    print(f"{'long tasks (>50 ms): count / total ms':<44}{len(long)} / {sum(long):.0f}")
    print(f"{'table rows in the DOM':<44}{results['rows']}")
    print(f"{'reporting tasks seen running on the page':<44}{results['running']}")


def run_browser(base: str, env: dict, args) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(base + "/login")
            page.fill("#token", TOKEN)
            page.click("#login-form button[type=submit]")
            page.wait_for_url(base + "/")
            page.goto(base + "/tasks")
            page.wait_for_selector("#connection[data-state=live]")
            for _ in range(args.reporters):
                requests.post(base + "/api/tasks", headers=headers, timeout=10, json={
                    "name": "tasks.demo.count", "kwargs": {"total": int(4 * (args.seconds + 10)),
                                                           "delay": 0.25}})
            time.sleep(2)  # let them all start
            measured = page.evaluate(MEASURE, args.seconds)
            measured["running"] = page.locator("tbody tr[data-status=running]").count()
            return measured
        finally:
            browser.close()


if __name__ == "__main__":
    main()
