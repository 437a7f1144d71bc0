"""The attempt library: one attempt of an event, as every consumer runs it.

``runner``: :class:`HandlerRunner`, the one rule for running a sync or async
handler with its timeout; ``record``: the attempt's budget, :func:`finish_attempt`
(success, retry with :func:`backoff`, dead letter), :func:`keep_trying` for writes
that wait out an outage, and the log lines. A delivery walks one direction:
queue → consumer → attempts → handler.
"""

from .record import (
    SETTLED,
    STORE_DOWN,
    STORE_RETRY_CAP,
    Attempt,
    Outcome,
    OutcomeStore,
    RetryingStore,
    Write,
    backoff,
    finish_attempt,
    keep_trying,
    log_dead,
    log_lost,
    log_start,
    report_spent,
    store_writer,
    upkeep_interval,
    write_to_store,
)
from .runner import HandlerRunner, call_sync

__all__ = [
    "SETTLED",
    "STORE_DOWN",
    "STORE_RETRY_CAP",
    "Attempt",
    "HandlerRunner",
    "Outcome",
    "OutcomeStore",
    "RetryingStore",
    "Write",
    "backoff",
    "call_sync",
    "finish_attempt",
    "keep_trying",
    "log_dead",
    "log_lost",
    "log_start",
    "report_spent",
    "store_writer",
    "upkeep_interval",
    "write_to_store",
]
