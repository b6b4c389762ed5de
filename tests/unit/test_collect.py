"""The worker's throttled full collection (pulse/agent/collect.py)."""

import gc
import weakref
from types import SimpleNamespace

import pytest
from celery import Celery

from pulse.agent import collect
from tasks.celery import make_celery


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cycle collector frees it


def agent(interval: float) -> SimpleNamespace:
    """What collect_if_due reads of an app's Agent: its interval and its own clock."""
    return SimpleNamespace(settings=SimpleNamespace(worker_gc_interval=interval), next_collect=0.0)


def garbage_cycle() -> weakref.ref:
    return weakref.ref(Node())


def test_a_due_collection_frees_reference_cycles():
    gc.disable()  # so that only collect_if_due can free the cycle
    try:
        cycle = garbage_cycle()
        assert cycle() is not None
        assert collect.collect_if_due(agent(5.0), now=100.0) is True
        assert cycle() is None
    finally:
        gc.enable()


def test_collections_are_at_least_the_interval_apart():
    every_five = agent(5.0)
    assert collect.collect_if_due(every_five, now=100.0) is True
    assert collect.collect_if_due(every_five, now=104.9) is False
    assert collect.collect_if_due(every_five, now=105.0) is True
    assert collect.collect_if_due(every_five, now=106.0) is False


def test_an_interval_of_zero_never_collects():
    gc.disable()
    try:
        cycle = garbage_cycle()
        assert collect.collect_if_due(agent(0.0), now=100.0) is False
        assert cycle() is not None
    finally:
        gc.enable()
        gc.collect()


def test_task_postrun_collects_for_pulse_apps_only(monkeypatch):
    ran = []
    monkeypatch.setattr(collect, "collect_if_due",
                        lambda agent: ran.append(agent.settings.worker_gc_interval))
    pulse_app = make_celery({"REDIS_URL": "redis://127.0.0.1:1/0", "PULSE_WORKER_GC_INTERVAL": "2.5"})
    collect._on_postrun(sender=pulse_app.tasks["celery.backend_cleanup"])
    collect._on_postrun(sender=Celery("other").tasks["celery.backend_cleanup"])
    assert ran == [2.5]


def test_the_interval_defaults_to_five_seconds_and_refuses_nonsense():
    assert make_celery({"REDIS_URL": "redis://127.0.0.1:1/0"}).pulse.settings.worker_gc_interval == 5.0
    with pytest.raises(ValueError, match="PULSE_WORKER_GC_INTERVAL"):
        make_celery({"REDIS_URL": "redis://127.0.0.1:1/0", "PULSE_WORKER_GC_INTERVAL": "-1"})
