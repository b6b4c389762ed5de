"""Chains on the real worker: later steps are `unstarted`, then run or are `abandoned`."""

import pytest
from celery import chain, chord

from ..conftest import wait_until

pytestmark = pytest.mark.integration



def statuses(stack, *ids):
    return [stack.api("GET", f"/api/tasks/{i}").json()["status"] for i in ids]


def steps(result):
    ids = []
    while result is not None:
        ids.insert(0, result.id)
        result = result.parent
    return ids


def count(producer, **kwargs):
    return producer.signature("tasks.demo.count", kwargs=kwargs, immutable=True)


def test_a_chain_runs_its_steps_in_order(stack, producer):
    first, second, third = steps(chain(count(producer, total=2, delay=0.3),
                                       count(producer, total=1, delay=0.01),
                                       count(producer, total=1, delay=0.01)).apply_async())
    assert statuses(stack, second, third) == ["unstarted", "unstarted"]
    wait_until(lambda: statuses(stack, first, second, third) == ["finished"] * 3, 30, 0.2, "the chain")
    assert stack.api("GET", f"/api/tasks/{first}").json()["chain"] == [second, third]


@pytest.mark.parametrize("failing", ["tasks.demo.crash", "tasks.demo.fail_with_details"])
def test_steps_after_a_failure_are_abandoned(stack, producer, failing):
    kwargs = {"step": 1, "delay": 0.01} if failing.endswith("details") else {}
    first, broken, after = steps(chain(count(producer, total=1, delay=0.01),
                                       producer.signature(failing, kwargs=kwargs, immutable=True),
                                       count(producer, total=1)).apply_async())
    wait_until(lambda: statuses(stack, first, broken, after) == ["finished", "failed", "abandoned"],
               30, 0.2, "the abandoned step")
    data = stack.api("GET", f"/api/tasks/{after}").json()
    assert data["is_resolved"] is True and data["can_revoke"] is False


def test_a_chord_shows_its_header_then_its_body(stack, producer):
    header = [count(producer, total=3, delay=0.05) for _ in range(3)]
    body = producer.signature("tasks.demo.echo", args=["all done"], immutable=True)
    result = chord(header)(body)
    group_id = result.parent.id
    unit = stack.api("GET", f"/api/groups/{group_id}").json()
    assert unit["kind"] == "chord" and len(unit["members"]) == 3
    assert unit["body"]["id"] == result.id and unit["body"]["status"] in ("unstarted", "scheduled",
                                                                          "running", "finished")
    done = wait_until(lambda: (u := stack.api("GET", f"/api/groups/{group_id}").json())["status"]
                      == "finished" and u, 30, 0.2, "the chord")
    assert done["body"]["status"] == "finished" and done["body"]["result"] == "all done"
    assert done["progress"]["percent"] == 100.0
    assert [m["status"] for m in done["members"]] == ["finished"] * 3
