"""Fixtures of the integration tests beyond the shared ones in tests/conftest.py."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulse import devstack

from ..rabbitmq import start_rabbitmq, unavailable


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The AMQP URL of a private RabbitMQ node, for the whole session.

    Skipped, with the reason, when this machine cannot run one; under CI=true that is a failure.
    """
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    devstack_artifacts = devstack.ROOT / "test-artifacts"
    devstack_artifacts.mkdir(exist_ok=True)
    # Not under pytest's tmp_path: its parents are root-only (0700), the rabbitmq user must enter.
    base = Path(tempfile.mkdtemp(prefix="pulse-rabbitmq-"))
    with open(devstack_artifacts / "rabbitmq.log", "w") as log:
        node = start_rabbitmq(base, log=log)
        try:
            yield node.url
        finally:
            node.stop()
            # the node's own log, beside the others, for reading a CI failure afterwards
            for item in (base / "log").glob(f"{node.nodename}.log"):
                shutil.copy(item, devstack_artifacts / "rabbitmq-node.log")
            shutil.rmtree(base, ignore_errors=True)
