"""Two operators replaying one failed task at the same moment send one replay, not two.

The replay sends the new task before it records the old one as replayed (the status check that
makes the second request fail comes after its send), so without a claim on the task both requests
published a task; the loser revoked its copy, which a worker might already be running."""

import threading

import pytest
import redis

from pulse.record.registry import as_text

pytestmark = pytest.mark.integration


def test_simultaneous_replays_of_one_task_send_one_task(stack):
    failed = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01)
    stack.wait_for(failed, "failed")
    barrier, answers = threading.Barrier(8), []

    def replay():
        barrier.wait()
        answers.append(stack.api("POST", f"/api/tasks/{failed}/replay").status_code)

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers).count(200) == 1 and set(answers) <= {200, 409}, answers

    client = redis.Redis.from_url(stack.redis_url)
    try:
        sent = [key for key in client.scan_iter(match="pulse:t:*", count=1000)
                if as_text(client.hget(key, "replay_of") or b"").strip('"') == failed]
    finally:
        client.close()
    assert len(sent) == 1, f"{len(sent)} tasks were sent as replays of {failed}"
