"""The background jobs' loop (pulse/periodic.py): a failing step is logged and the next one runs."""

import logging

from pulse.server.upkeep.periodic import Periodic


class Flaky(Periodic):
    interval = 0.5
    failure = "flaky step failed"

    def __init__(self) -> None:
        self.steps = 0
        self.slept: list[float] = []

    def step(self) -> None:
        self.steps += 1
        if self.steps == 2:
            raise ConnectionError("Redis went away")
        if self.steps == 3:
            self.stop()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_steps_go_on_after_a_failure_until_stopped(caplog):
    job = Flaky()
    with caplog.at_level(logging.WARNING, logger=__name__):
        job.run(sleep=job.sleep)
    assert job.steps == 3 and job.slept == [0.5, 0.5, 0.5]
    assert "pulse: flaky step failed: ConnectionError('Redis went away')" in caplog.text
    assert [record.name for record in caplog.records] == [__name__]  # the job's own module logs it
