"""Requests waiting for a task to end (``GET /api/tasks/<id>?wait=N``).

A waiter sleeps on an event of the server's async mode (a green event under eventlet), woken
by the monitor's change feed, so waiting ties up no worker thread and polls nothing. It still
holds its connection and a green thread, so each credential may keep only so many waiting at
once (``hold``).
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pulse.record.statuses import ENDED


class Waiters:
    """Wakes the requests waiting on a task when it ends."""

    def __init__(self, make_event: Callable[[], Any]) -> None:
        self._make_event = make_event
        self._waiting: dict[str, set] = {}
        self._held: dict[str, int] = {}  # credential key -> requests waiting with it
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, credential: str, most: int) -> Iterator[bool]:
        """A waiting place for ``credential`` (a key, not the secret): yields False, holding
        nothing, when ``most`` of its requests wait already."""
        with self._lock:
            held = self._held.get(credential, 0)
            if held >= most:
                admitted = False
            else:
                admitted, self._held[credential] = True, held + 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    held = self._held.pop(credential) - 1
                    if held:
                        self._held[credential] = held

    def holding(self, credential: str) -> int:
        """How many requests wait with ``credential`` now."""
        return self._held.get(credential, 0)

    def notify(self, data: dict[str, Any]) -> None:
        """Called with every changed task; wakes its waiters when it has ended."""
        if data.get("status") in ENDED:
            with self._lock:
                events = self._waiting.pop(data["id"], set())
            for event in events:
                event.set()

    def wait(self, task_id: str, timeout: float) -> None:
        """Sleep until ``task_id`` ends or ``timeout`` passes."""
        event = self._make_event()
        with self._lock:
            self._waiting.setdefault(task_id, set()).add(event)
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                waiting = self._waiting.get(task_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiting[task_id]
