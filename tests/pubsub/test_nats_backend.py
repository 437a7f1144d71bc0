"""NATS backend extras: publishing from a loop that awaits nothing else."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.conf import settings

from mega_cluster.testing import make_app

from .helpers import Recorder

pytestmark = pytest.mark.nats


def test_apublish_in_a_busy_loop_hands_messages_over_as_it_goes(unique_name):
    """A coroutine that calls apublish in a loop and awaits nothing else (blocking
    work between the calls) still gets its messages to the receivers while it
    runs: they are handed to the socket every 64 KiB, not once nats-py's 2 MiB
    buffer is full or the loop is finally free."""
    options = {"BACKEND": "nats", "OPTIONS": {"URL": settings.NATS_URL}}
    a, b = (
        make_app(unique_name, {"PUBSUB": options}, node_id=f"{unique_name}-{n}")
        for n in "ab"
    )
    seen = Recorder()
    b.pubsub_manager.subscribe("burst", seen)
    pad = "x" * 1000

    async def publish_until_received() -> int | None:
        manager = a.pubsub_manager
        await manager.astart()  # the listener is a task of this loop (ASGI)
        try:
            for i in range(1500):  # about 1.7 MB: below nats-py's buffer size
                await manager.apublish("burst", {"i": i, "pad": pad})
                if i % 100 == 99:
                    time.sleep(0.02)  # noqa: ASYNC251 - blocking work, on purpose
                    if seen.items:
                        return i
            return None
        finally:
            await manager.astop()

    try:
        received_at = asyncio.run(publish_until_received())
        assert received_at is not None and received_at < 1000
    finally:
        a.stop()
        b.stop()
