"""Running bulk actions: every server looks for a job that no server holds and carries it out.

A job is held under a lease (``model/bulk.py``) renewed after each batch: when its server stops,
the lease runs out and the next server to look resumes the job where it was.
"""

from collections.abc import Callable

from pulse.server.model.bulk import Bulk
from pulse.server.upkeep.periodic import Periodic


class BulkRunner(Periodic):
    """Claims and runs waiting bulk jobs, one at a time, yielding between batches."""

    failure = "bulk action step failed"

    def __init__(self, bulk: Bulk, owner: str, interval: float = 1.0,
                 pause: Callable[[], None] = lambda: None) -> None:
        self.bulk = bulk
        self.owner = owner  # this server, as the lease names it
        self.interval = interval
        self.pause = pause  # between batches: the server's other green threads get their turn

    def step(self) -> None:
        for job_id in self.bulk.runnable():
            if self.bulk.claim(job_id, self.owner):
                self.bulk.work(job_id, self.owner, self.pause)
