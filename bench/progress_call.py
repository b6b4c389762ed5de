"""Benchmark 1: the cost of one progress call inside a task, Pulse's helper vs ``update_state``.

Setup: an embedded Redis on a free loopback port (``harness.stack``); tasks run eagerly in this
process with that Redis as broker and result backend, so every call that is sent makes its real
round trips (registry write, stored state, event). Pulse: a tight loop of 100,000
``report_progress`` calls (throttled at the default 0.25 s, so a few are sent and the rest return
at once). Baseline: the same loop calling ``update_state`` every time, which is what
celery-progress does; at ~0.4 ms a call it runs 2,000 calls, reported per call. Beside them,
for reference, 2,000 calls of the helper with the throttle off (``PULSE_PROGRESS_INTERVAL=0``):
the cost of each call that is sent. The loops alternate for several rounds and the medians are
reported, with the ratio.
Quick: 10,000 and 200 calls.

    .venv/bin/python bench/progress_call.py [--quick]
"""

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench`, `pulse` and `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Row, median, stack  # noqa: E402
from pulse.agent.progress import report_progress  # noqa: E402
from tasks.celery import make_celery  # noqa: E402

NAME = "1 progress call"
TARGET_US, TARGET_RATIO = 5.0, 100.0


def _loops(app):
    """The two eager tasks: each returns (seconds per call, calls that were sent)."""

    @app.task(bind=True, shared=False)
    def pulse_loop(self, n):
        sent = 0
        start = time.perf_counter()
        for i in range(n):
            sent += report_progress(self, i, n, "working")
        return (time.perf_counter() - start) / n, sent

    @app.task(bind=True, shared=False)
    def update_state_loop(self, n):
        start = time.perf_counter()
        for i in range(n):
            self.update_state(state="PROGRESS", meta={"current": i, "total": n})
        return (time.perf_counter() - start) / n, n

    return pulse_loop, update_state_loop


def measure(calls: int, baseline_calls: int, rounds: int) -> dict[str, list]:
    """Seconds per call of each loop, one figure per round, and how many Pulse calls were sent."""
    figures: dict[str, list] = {"pulse": [], "sent": [], "unthrottled": [], "update_state": []}
    with stack("progress-call") as running:
        app = make_celery(running.env)
        # The same helper with the throttle off: what each call that does go out costs.
        unthrottled = make_celery(dict(running.env, PULSE_PROGRESS_INTERVAL="0"))
        pulse_loop, update_state_loop = _loops(app)
        every_loop, _ = _loops(unthrottled)
        for _ in range(rounds):  # alternate, so machine noise hits all alike
            per_call, sent = pulse_loop.apply(args=(calls,)).get()
            figures["pulse"].append(per_call)
            figures["sent"].append(sent)
            figures["unthrottled"].append(every_loop.apply(args=(baseline_calls,)).get()[0])
            figures["update_state"].append(update_state_loop.apply(args=(baseline_calls,)).get()[0])
        app.close()
        unthrottled.close()
    return figures


def run(quick: bool) -> list[Row]:
    calls, baseline_calls, rounds = (10_000, 200, 3) if quick else (100_000, 2_000, 5)
    figures = measure(calls, baseline_calls, rounds)
    p, b = median(figures["pulse"]) * 1e6, median(figures["update_state"]) * 1e6
    every = median(figures["unthrottled"]) * 1e6
    ratio = b / p
    baseline = "update_state every call"
    setup = (f"{rounds} alternating rounds, medians; {calls:,} Pulse calls vs {baseline_calls:,} "
             "update_state calls")
    return [
        Row(NAME, "report_progress, per call", p, "us", other=b, competitor=baseline,
            target=f"< {TARGET_US:g} us", met=p < TARGET_US,
            note=f"{setup}; Pulse sent {median(figures['sent']):.0f} of {calls:,} calls per round "
                 "(throttle 0.25 s)"),
        Row(NAME, "update_state / report_progress", ratio, "x", target=f">= {TARGET_RATIO:g}x",
            met=ratio >= TARGET_RATIO),
        Row(NAME, "report_progress, per sent call", every, "us", other=b, competitor=baseline,
            note=f"throttle off ({baseline_calls:,} calls): every call writes the registry, stores the "
                 "state and sends the event; this is the worker-side cost of each update that goes out"),
    ]


def main(argv: list[str] | None = None) -> None:
    from bench.run import table

    print(table(run("--quick" in (sys.argv[1:] if argv is None else argv))))


if __name__ == "__main__":
    main()
