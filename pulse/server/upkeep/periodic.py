"""The server's background jobs: one step every ``interval`` seconds, in a green thread of its own.

The dashboard pusher, the registry upkeep and the token recheck each run one; a step that fails
(Redis down, most often) is logged by the job's own module and the next one tries again.
"""

import logging
import time
from collections.abc import Callable


class Periodic:
    """Call ``step()`` every ``interval`` seconds from ``run`` until ``stop()``."""

    interval: float = 1.0
    failure = "background step failed"  # what the log says when a step raises
    _stopping = False

    def step(self) -> object:
        raise NotImplementedError

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Step every ``interval`` seconds until ``stop()``; errors are logged, never fatal."""
        log = logging.getLogger(type(self).__module__)
        while not self._stopping:
            sleep(self.interval)
            try:
                self.step()
            except Exception as exc:
                log.warning("pulse: %s: %r", self.failure, exc)

    def stop(self) -> None:
        self._stopping = True
