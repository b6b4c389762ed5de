"""The status vocabulary of a task record, and its named subsets.

Statuses are listed in the order a task lives them; ``lua/write.lua`` holds the transition rules.
Every other module names a subset from here instead of spelling statuses out.
"""

from celery import states

UNSTARTED, SCHEDULED, RUNNING, RETRYING = "unstarted", "scheduled", "running", "retrying"
FINISHED, FAILED, REVOKED, LOST = "finished", "failed", "revoked", "lost"
ABANDONED, REPLAYED, SKIPPED, EXPIRED = "abandoned", "replayed", "skipped", "expired"

STATUSES = (UNSTARTED, SCHEDULED, RUNNING, RETRYING, FINISHED, FAILED, REVOKED,
            LOST, ABANDONED, REPLAYED, SKIPPED, EXPIRED)
ENDED = frozenset({FINISHED, FAILED, REVOKED, LOST, ABANDONED, REPLAYED, SKIPPED, EXPIRED})
RESOLVED = frozenset({FINISHED, REVOKED, REPLAYED, SKIPPED, ABANDONED})
ACTIVE = frozenset({UNSTARTED, SCHEDULED, RUNNING, RETRYING})
# Not yet picked up by a worker, and being worked on.
WAITING = frozenset({UNSTARTED, SCHEDULED})
WORKING = frozenset({RUNNING, RETRYING})
# What a task ended in (rank 5 in lua/write.lua), counted by the analytics once per record and status;
# replayed, skipped and expired are later verdicts on a record that had already ended.
OUTCOMES = (FINISHED, FAILED, REVOKED, LOST, ABANDONED)
# Sent to a broker and not ended: what the consumer check and the lost rule look at.
QUEUED_OR_RUNNING = (SCHEDULED, RUNNING, RETRYING)
# Ended by Celery itself (an end a later event may still bring after `lost`), and so expirable.
CELERY_ENDS = (FINISHED, FAILED, REVOKED)
# What went wrong and may be replayed or skipped by an operator.
UNSUCCESSFUL = (FAILED, LOST)
# A group or chord counts as failed once a member is one of these.
BROKEN = frozenset({FAILED, LOST, ABANDONED, REVOKED})
# A goal (idempotency key) keeps pointing at a task in one of these; others free it.
GOAL_KEEPS = (UNSTARTED, SCHEDULED, RUNNING, RETRYING, FINISHED)

PROGRESS = "PROGRESS"  # the Celery state report_progress stores
STATUS_BY_STATE = {
    states.PENDING: SCHEDULED, states.RECEIVED: SCHEDULED, states.STARTED: RUNNING,
    PROGRESS: RUNNING, states.RETRY: RETRYING, states.SUCCESS: FINISHED,
    states.FAILURE: FAILED, states.REJECTED: FAILED, states.REVOKED: REVOKED,
}


def status_of(state: str | None) -> str:
    """The status a Celery state stands for: a custom state is a running task's, none is unknown."""
    if state is None:
        return "unknown"
    return STATUS_BY_STATE.get(state, RUNNING)
