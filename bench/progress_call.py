"""Cost per call of the throttled progress helper vs ``update_state`` on every iteration.

Setup: an embedded Redis on a free loopback port, tasks run eagerly in this process.
Prints microseconds per call for each, and the ratio.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulse import devstack  # noqa: E402
from tasks.celery import make_celery  # noqa: E402
from tasks.progress import report_progress  # noqa: E402


def main(calls: int = 100_000, baseline_calls: int = 2_000, rounds: int = 3) -> None:
    port = devstack.free_port()
    with tempfile.TemporaryDirectory() as data:
        redis = devstack.start_redis(port, Path(data))
        try:
            app = make_celery({"REDIS_URL": f"redis://127.0.0.1:{port}/0"})

            @app.task(bind=True, shared=False)
            def pulse_loop(self, n):
                start = time.perf_counter()
                for i in range(n):
                    report_progress(self, i, n, "working")
                return (time.perf_counter() - start) / n

            @app.task(bind=True, shared=False)
            def update_state_loop(self, n):
                start = time.perf_counter()
                for i in range(n):
                    self.update_state(state="PROGRESS", meta={"current": i, "total": n})
                return (time.perf_counter() - start) / n

            pulse, baseline = [], []
            for _ in range(rounds):  # alternate, so machine noise hits both alike
                pulse.append(pulse_loop.apply(args=(calls,)).get())
                baseline.append(update_state_loop.apply(args=(baseline_calls,)).get())
        finally:
            devstack.stop(redis)
    p, b = statistics.median(pulse) * 1e6, statistics.median(baseline) * 1e6
    print(f"{'benchmark':<32}{'us/call (median)':>18}")
    print(f"{'report_progress (throttled)':<32}{p:>18.3f}")
    print(f"{'update_state every call':<32}{b:>18.3f}")
    print(f"{'ratio':<32}{b / p:>17.0f}x")


if __name__ == "__main__":
    main()
