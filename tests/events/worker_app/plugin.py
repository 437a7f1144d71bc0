"""A plugin for the runworker tests: consumes ``jobs`` and logs every attempt.

Each line of ``$MC_EVENTS_LOG`` is ``<what> <event id> <attempt> <pid> <payload>``;
lines are short single ``write()`` calls on an ``O_APPEND`` file, so lines from
several processes never interleave.
"""

from __future__ import annotations

import json
import os
import time

from mega_cluster import Plugin


def _log(what: str, ctx, payload) -> None:
    line = f"{what} {ctx.id} {ctx.attempt} {os.getpid()} {json.dumps(payload)}\n"
    fd = os.open(os.environ["MC_EVENTS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def handle(payload, ctx) -> None:
    _log("start", ctx, payload)
    time.sleep(float(os.environ.get("MC_EVENTS_SLEEP", "0")))
    _log("done", ctx, payload)


class EventsWorkerPlugin(Plugin):
    name = "events-worker"

    def before_load(self) -> None:
        self.event_queue.subscribe(
            "jobs",
            process=handle,
            concurrency=int(os.environ.get("MC_EVENTS_CONCURRENCY", "4")),
            max_retries=3,
        )
        if os.environ.get("MC_INBOX_TABLE"):  # tests/cluster/test_inbox_kills.py
            from .ledger import ledger

            self.event_queue.subscribe(
                "ledger",
                process=ledger,
                concurrency=int(os.environ.get("MC_INBOX_CONCURRENCY", "4")),
                max_retries=int(os.environ.get("MC_INBOX_RETRIES", "0")),
            )

    def load(self) -> None:
        fd = os.open(
            os.environ["MC_EVENTS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
        )
        try:
            os.write(fd, f"ready - 0 {os.getpid()} null\n".encode())
        finally:
            os.close(fd)
