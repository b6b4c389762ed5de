"""Run the benchmark suite and print one table: ``python -m bench.run [--quick] [--only a,b]``.

Every benchmark starts its own real processes (embedded Redis, worker, server, competitors) and
stops them by PID. ``--quick`` runs each at a tiny size, to prove the suite works (CI); the
figures then say nothing about speed. Exits non-zero when a benchmark failed or printed nothing.
"""

import argparse
import importlib
import json
import math
import platform
import sys
import time
import traceback

from .harness import ARTIFACTS, Row

# In the order of the issue: the cheap ones first, the machine's limits last.
BENCHMARKS = ("progress_call", "latency", "ingest", "fanout", "memory", "api", "responsive", "limits",
              "connections", "bulk", "log_call", "log_stream")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    import os

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    head = ("benchmark", "metric", "Pulse", "competitor", "unit", "target", "met")
    lines = [[r.bench, r.metric, fmt(r.pulse), f"{fmt(r.other)} ({r.competitor})" if r.competitor else "",
              r.unit, r.target, {True: "yes", False: "NO", None: ""}[r.met]] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(head, *lines, strict=True)]
    out = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) for line in lines]
    notes = [f"[{r.bench} / {r.metric}] {r.note}" for r in rows if r.note]
    return "\n".join(out + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the suite runs")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    rows: list[Row] = []
    failed: list[str] = []
    started = time.monotonic()
    print(f"machine: {machine()}", flush=True)
    for name in names:
        began = time.monotonic()
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        try:
            produced = importlib.import_module(f"bench.{name}").run(args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        figures = [row for row in produced if row.pulse is not None and not math.isnan(row.pulse)]
        if not figures:
            failed.append(name)
        rows += produced
        print(table(produced), flush=True)
        print(f"   ({time.monotonic() - began:.1f}s)", flush=True)
    print(f"\n== all ({time.monotonic() - started:.0f}s, {'quick' if args.quick else 'full'} sizes)")
    print(f"machine: {machine()}")
    print(table(rows))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"bench{'-quick' if args.quick else ''}.json").write_text(json.dumps(
        {"machine": machine(), "quick": args.quick, "failed": failed, "rows": [r.as_dict() for r in rows]},
        indent=1))
    if failed:
        print(f"\nno figures from: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
