"""Tasks that misbehave on purpose, for the hardening tests of issue 7.

Absurd progress values; huge, non-JSON, circular or deeply nested results; giant failures; and
markup in every field a task controls (its name, arguments, result, progress message, failure,
retry reason and queue). Only the workers those tests start run them: ``celery -A
tests.hostile_tasks worker`` asks this module for ``app``, which is built on that first access,
so a test importing the payloads below changes nothing in its own process.
"""

import math
import os
import time
from functools import cache
from typing import Any

from celery import Celery
from celery.utils.log import get_task_logger
from kombu import Queue

from pulse.agent.failure import fail
from pulse.agent.progress import report_progress

RELEASE_KEY = "hostile:release"  # set it in Redis to let the held tasks finish
HOLD_LIMIT = 90.0  # a held task never outlives this, even if the test forgets it

# Each payload, if it ever ran, would call window.__xss(n) with its own number.
PAYLOADS = (
    '<img src=x onerror="window.__xss(1)">',
    "<script>window.__xss(2)</script>",
    '"><svg onload=window.__xss(3)>',
    "'><iframe src=\"javascript:window.parent.__xss(4)\"></iframe>",
    "javascript:window.__xss(5)",
    "</title></textarea></style><script>window.__xss(6)</script>",
    '<a href="javascript:window.__xss(7)">{{7*7}} ${7*7} #{7*7} <%= 7*7 %></a>',
    "<details open ontoggle=window.__xss(8)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss(9)>",
    # Unicode tricks: right-to-left override, zero-width space, line/paragraph separators
    # (which end a JavaScript string literal in older engines), fullwidth brackets.
    "\u202e<b onmouseover=window.__xss(10)>\u200bevil\u2028\u2029</b>",
    "\uff1cscript\uff1ewindow.__xss(11)\uff1c/script\uff1e",
)
SHORT = PAYLOADS[0] + PAYLOADS[2]  # for fields capped at 200 characters (an exception's type)


def hostile_text(field: str) -> str:
    """Every payload in one string, marked with the field it travels in."""
    return f"[{field}] " + " ".join(PAYLOADS)


XSS_NAME = hostile_text("name")
XSS_QUEUE = hostile_text("queue")
EXPOSED_KEY = hostile_text("detail-key")
HIDDEN_KEY = hostile_text("hidden-key")


class Unprintable:
    """An object that cannot be shown or counted: str, repr and float all raise."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    __repr__ = __str__

    def __float__(self) -> float:
        raise RuntimeError("no number for you")


def nested(levels: int) -> list:
    """A list nested ``levels`` deep, built without recursion."""
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def circular() -> list:
    loop: list = []
    loop.append(loop)
    return loop


def progress_cases() -> dict[str, list[tuple[Any, Any, Any]]]:
    """Case name -> the (current, total, message) reports its task makes, in order."""
    return {
        "negative": [(-5, 10, "negative current")],
        "nan": [(math.nan, math.nan, "not a number")],
        "inf": [(math.inf, 10, "infinite current")],
        "minus_inf": [(-math.inf, math.inf, "infinite total")],
        "strings": [("many", "lots", "words for numbers")],
        "none": [(None, None, None)],
        "above_total": [(250, 100, "over the top")],
        "total_zero": [(5, 0, "zero total")],
        "total_negative": [(5, -10, "negative total")],
        "huge_int": [(10**400, 10**401, "integers beyond a float")],
        "tiny_total": [(1, 5e-324, "a total next to zero")],
        "huge_message": [(1, 2, "m" * 5_000_000)],
        "unprintable": [(Unprintable(), Unprintable(), Unprintable())],
        "bytes_message": [(1, 2, b"\xff\x00" * 100_000)],
        "sequence": [(1, 10, "one"), (-3, 10, "back"), (math.nan, 10, "lost"), (50, 10, "over"),
                     (1e308, 1e-300, "overflowing"), (5, 10, "half")],
    }


def result_cases() -> dict[str, Any]:
    """Case name -> a function making the value its task returns."""
    return {
        "huge": lambda: "r" * 20_000_000,
        "wide": lambda: list(range(2_000_000)),
        "deep_ok": lambda: nested(600),
        "deep": lambda: nested(5000),
        "circular": circular,
        "set": lambda: {1, 2, 3},
        "object": Unprintable,
        "nan": lambda: [math.nan, math.inf, -math.inf],
        "bytes": lambda: b"\xff\x00" * 10,
        "huge_int": lambda: 10**5000,
        "big_int": lambda: 2**100,
    }


def giant_details() -> dict[str, Any]:
    """Failure details that are each absurd, and far too many together."""
    details: dict[str, Any] = {f"k{n}": "v" * 16_000 for n in range(200)}
    details.update(blob="d" * 20_000_000, unprintable=Unprintable(), bigint=10**5000, loop=circular(),
                   deep=nested(5000), things={1, 2, 3}, raw=b"\xff" * 100, nan=math.nan)
    return details


def release_key(task_id: str) -> str:
    """Set it in Redis to let that one held task finish."""
    return f"{RELEASE_KEY}:{task_id}"


def _hold(task, seconds: float) -> None:
    """Stay running until the test sets RELEASE_KEY or this task's key (or ``seconds`` pass)."""
    client = task.app.backend.client
    deadline = time.monotonic() + min(seconds, HOLD_LIMIT)
    while time.monotonic() < deadline and not client.exists(RELEASE_KEY, release_key(task.request.id)):
        time.sleep(0.05)


LOG_FLOOD = 100_000  # lines of the "flood" log case
# Log lines no text should be: markup, lone surrogates, undecodable bytes, control characters.
ODD_LOG_LINES = (
    hostile_text("log"),
    "lone \ud800 and \udfff surrogates",
    os.fsdecode(b"undecodable \xff\xfe bytes"),  # surrogate-escaped, as a file name may come
    "NUL \x00, ESC \x1b[31m, DEL \x7f",
)
RAW_LOG_BYTES = b"raw \xff\x00 bytes"  # a bytes message, which logging shows as its repr


def log_lines(case: str) -> None:
    """Log ``case``'s lines on a task logger: ``flood`` (``LOG_FLOOD`` numbered lines), ``huge``
    (a 10 MB line) or ``odd`` (``ODD_LOG_LINES``, then ``RAW_LOG_BYTES``)."""
    logger = get_task_logger("hostile.logs")
    if case == "flood":
        for number in range(LOG_FLOOD):
            logger.info("flood line %d", number)
    elif case == "huge":
        logger.info("h" * 10_000_000)
    else:
        for line in ODD_LOG_LINES:
            logger.warning(line)
        logger.warning(RAW_LOG_BYTES)


def register(app: Celery) -> None:
    """Define the hostile tasks on ``app``."""

    @app.task(bind=True, name="hostile.progress")
    def absurd_progress(self, case: str, hold: float = HOLD_LIMIT) -> str:
        for current, total, message in progress_cases()[case]:
            report_progress(self, current, total, message)
        _hold(self, hold)
        return case

    @app.task(name="hostile.result")
    def absurd_result(case: str) -> Any:
        return result_cases()[case]()

    @app.task(name="hostile.raise_huge")
    def raise_huge(size: int) -> None:
        raise ValueError("e" * size)

    @app.task(bind=True, name="hostile.fail_giant")
    def fail_giant(self) -> None:
        fail(self, "f" * 5_000_000, exc_type="T" * 10_000, **giant_details())

    @app.task(bind=True, name="hostile.fail_odd")
    def fail_odd(self) -> None:
        fail(self, Unprintable(), exc_type=Unprintable(), unprintable=Unprintable(), bigint=10**5000,
             loop=circular(), deep=nested(5000), things={1, 2, 3}, nan=math.nan, step=3)

    @app.task(name="hostile.log_lines")
    def hostile_log_lines(case: str) -> str:
        log_lines(case)
        return case

    @app.task(name="hostile.swallow")
    def swallow(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    @app.task(bind=True, name=XSS_NAME)
    def xss_named(self, *args: Any, hold: float = 0.0, **kwargs: Any) -> dict:
        report_progress(self, 1, 3, hostile_text("message"))
        _hold(self, hold)
        return {hostile_text("result-key"): hostile_text("result")}

    @app.task(bind=True, name="hostile.xss_fail")
    def xss_fail(self) -> None:
        report_progress(self, 2, 4, hostile_text("message"))
        fail(self, hostile_text("exc-message"), exc_type=SHORT, expose=(EXPOSED_KEY,),
             **{EXPOSED_KEY: hostile_text("detail"), HIDDEN_KEY: hostile_text("hidden")})

    @app.task(name="hostile.xss_raise")
    def xss_raise() -> None:
        raise type(SHORT, (ValueError,), {})(hostile_text("raised"))

    @app.task(bind=True, name="hostile.xss_retry")
    def xss_retry(self) -> str:
        if not self.request.retries:
            raise self.retry(exc=ValueError(hostile_text("retry")), countdown=0.1, max_retries=2)
        return "retried"


@cache
def worker_app() -> Celery:
    """The Celery app a hostile worker runs: Pulse's own, with these tasks and the hostile queue."""
    from tasks.celery import app  # here: tasks.celery builds its app when imported

    register(app)
    app.conf.task_queues = [Queue(app.conf.task_default_queue), Queue(XSS_QUEUE)]
    return app


def __getattr__(name: str) -> Any:
    # Celery's -A looks up ``app`` here; built on demand, so only a worker pays for it.
    if name == "app":
        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
