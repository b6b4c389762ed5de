"""Queue depths on an AMQP broker (RabbitMQ), where there are no lists to count.

A passive ``queue.declare`` answers with the queue's ready-message count and its consumer count,
creates nothing and changes nothing. A queue that does not exist yet (no worker has declared it
and nothing was sent to it) is answered with a 404 channel error, which closes the channel: it
counts as empty, and the next queue gets a fresh channel.
"""

import logging
from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

TIMEOUT = 2.0


def amqp_depths(celery_app: Celery, names: Iterable[str],
                timeout: float = TIMEOUT) -> dict[str, tuple[int, int]]:
    """``{queue: (messages waiting, consumers)}`` for each of ``names``, read from the app's broker.

    A queue that does not exist is ``(0, 0)``. Every wait (connect, read, write) is bounded by
    ``timeout``; when the broker cannot be reached or stops answering, the queues not read yet are
    left out of the answer (the caller shows their depth as unknown) and a warning is logged.
    """
    out: dict[str, tuple[int, int]] = {}
    names = list(names)
    if not names:
        return out
    conn = celery_app.connection_for_read(
        connect_timeout=timeout,
        transport_options={"read_timeout": timeout, "write_timeout": timeout},
    )
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        channel = conn.channel()
        for name in names:
            try:
                reply = channel.queue_declare(queue=name, passive=True)
            except conn.channel_errors:
                # 404 NOT_FOUND: the broker closed the channel along with its answer.
                out[name] = (0, 0)
                _close_quietly(channel)
                channel = conn.channel()
                continue
            _, depth, consumers = reply
            out[name] = (int(depth), int(consumers))
        _close_quietly(channel)
    except (OperationalError, *conn.connection_errors, OSError, TimeoutError) as exc:
        log.warning("queue depths: the broker at %s did not answer: %r", conn.as_uri(), exc)
    finally:
        conn.release()
    return out


def _close_quietly(channel) -> None:
    try:
        channel.close()
    except Exception:  # a channel the broker already closed
        pass
