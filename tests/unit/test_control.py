"""Worker control's pure parts: worker names, pool kinds and summaries, registered task lines."""

import pytest

from pulse.server.model.control import pool_kind, pool_summary, registered_tasks, valid_worker_name


@pytest.mark.parametrize(("name", "valid"), [
    ("worker@host", True), ("celery@ip-10-0-0-1.ec2.internal", True), ("a_b.c:d+e-f@x", True),
    ("x" * 250 + "@host", True), ("x" * 251 + "@host", False), ("no-at-sign", False), ("@host", False),
    ("name@", False), ("two@at@signs", False), ("<b>@host", False), ("a b@host", False), ("é@host", False),
    ("line\n@host", False), ("worker@host\n", False), (None, False), (42, False),
])
def test_worker_names(name, valid):
    assert valid_worker_name(name) is valid


def test_pool_kinds():
    assert pool_kind("celery.concurrency.prefork:TaskPool") == "prefork"
    assert pool_kind("celery.concurrency.thread:TaskPool") == "threads"
    assert pool_kind("celery.concurrency.solo:TaskPool") == "solo"
    assert pool_kind("mypool.pools:Custom") == "mypool.pools:Custom"
    assert pool_kind(None) is None and pool_kind("") is None


def test_pool_summaries():
    prefork = {"pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 2,
                        "processes": [11, 12, 13]},
               "autoscaler": {"max": 4, "min": 1, "qty": 0, "current": 3}}
    assert pool_summary(prefork) == {
        "kind": "prefork", "implementation": "celery.concurrency.prefork:TaskPool", "max_concurrency": 2,
        "size": 3, "processes": [11, 12, 13], "threads": None, "autoscaler": {"max": 4, "min": 1, "qty": 0}}
    threads = {"pool": {"implementation": "celery.concurrency.thread:TaskPool", "max-concurrency": 8,
                        "threads": 2}}
    assert pool_summary(threads)["kind"] == "threads" and pool_summary(threads)["size"] == 8
    assert pool_summary({"pool": "N/A"}) is None and pool_summary(None) is None
    assert pool_summary({"pool": {"processes": ["x", 5], "max-concurrency": "many"}})["processes"] == [5]


def test_registered_task_lines():
    lines = ["tasks.demo.count [rate_limit=10/m time_limit=60.0 soft_time_limit=30.0]", "plain",
             "odd [name]", "odd [rate_limit=1/s extra=1]", "<img src=x> [rate_limit=1/h]"]
    assert registered_tasks(lines) == [
        {"name": "tasks.demo.count", "rate_limit": "10/m", "time_limit": "60.0", "soft_time_limit": "30.0"},
        {"name": "plain", "rate_limit": None, "time_limit": None, "soft_time_limit": None},
        {"name": "odd [name]", "rate_limit": None, "time_limit": None, "soft_time_limit": None},
        {"name": "odd [rate_limit=1/s extra=1]", "rate_limit": None, "time_limit": None,
         "soft_time_limit": None},
        {"name": "<img src=x>", "rate_limit": "1/h", "time_limit": None, "soft_time_limit": None},
    ]
    assert registered_tasks(None) == [] and registered_tasks({"not": "a list"}) == []
