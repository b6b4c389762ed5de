"""The workers as Pulse shows them: the monitor's heartbeats plus their running tasks."""

from typing import Any

from pulse.record.statuses import RUNNING
from pulse.server.ingest.monitor import Monitor
from pulse.server.model.listing import Listing
from pulse.server.model.store import TaskStore
from pulse.server.model.taskjson import RATE_WINDOW


def worker_json(monitor: Monitor, store: TaskStore, listing: Listing, hostname: str) -> dict[str, Any]:
    worker = monitor.state.workers.get(hostname)
    page = listing.page({"status": [RUNNING], "worker": hostname}, 100)
    # A clean shutdown clears Celery's heartbeat list; its last event still says when it was seen.
    last = worker.heartbeats[-1] if worker and worker.heartbeats else getattr(worker, "timestamp", None)
    return {
        "hostname": hostname,
        "online": bool(worker and worker.alive),
        "last_heartbeat": last,
        # When the worker counts as offline if no heartbeat comes (Celery's own rule).
        "expires_at": worker.heartbeat_expires if worker and worker.heartbeats else None,
        "active": worker.active if worker else None,
        "processed": worker.processed if worker else None,
        "loadavg": worker.loadavg if worker else None,
        # Lists show a task's progress and rate, not its chart: only the points the rate is made of.
        "active_tasks": store.many_json(page.ids, points=lambda task_id: RATE_WINDOW),
    }


def all_workers(monitor: Monitor, store: TaskStore, listing: Listing) -> list[dict[str, Any]]:
    """Workers the monitor heard from, and hostnames that still have running tasks."""
    running = listing.page({"status": [RUNNING]}, 500).ids
    running_on = {record.get("worker") for record in store.registry.get_many(running) if record}
    names = {w.hostname for w in monitor.state.workers.values()} | (running_on - {None})
    return [worker_json(monitor, store, listing, hostname) for hostname in sorted(names)]
