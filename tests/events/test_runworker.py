"""The runworker command and the Worker loop, in-process."""

from __future__ import annotations

import threading

import pytest
from django.core.management import CommandError, call_command

from mega_cluster.events.worker import Worker, tick_hooks
from mega_cluster.testing import make_app

from .conftest import queue_settings, wait_until


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": -1}, "--concurrency"),
        ({"drain_timeout": -1.0}, "--drain-timeout"),
        ({"channels": " , "}, "--channels"),
        ({"app": "no-such-app"}, "No cluster app named"),
    ],
)
def test_bad_options_are_command_errors(options, message):
    """Bad options stop the command with a message naming the option."""
    with pytest.raises(CommandError, match=message):
        call_command("runworker", **options)


def test_positional_channel_names_run_channels_worker():
    """Positional names go to Channels' runworker (here: no layer configured)."""
    with pytest.raises(CommandError, match="CHANNEL_LAYERS"):
        call_command("runworker", "thumbnails")


@pytest.mark.django_db(transaction=True)
def test_worker_consumes_only_given_channels_and_drains(unique_name):
    """--channels limits consumption; stop drains; tick hooks run while serving."""
    app = make_app(unique_name, queue_settings("memory", None))
    queue = app.event_queue  # app.stop() drops it; keep it to read its stats
    seen = []
    app.event_queue.subscribe("a", process=lambda p, c: seen.append(("a", p)))
    app.event_queue.subscribe("b", process=lambda p, c: seen.append(("b", p)))
    worker = Worker([app], channels=["a"], concurrency=3, drain_timeout=5)
    worker.tick_interval = 0.05
    ticks = []
    tick_hooks.append(ticks.append)
    try:
        app.event_queue.publish("a", 1)
        app.event_queue.publish("b", 2)
        result = []
        thread = threading.Thread(target=lambda: result.append(worker.run()))
        thread.start()
        wait_until(lambda: seen and ticks, what="the event and a tick")
        worker.request_stop()
        thread.join(10)
        assert result == [0]
        assert seen == [("a", 1)]
        assert queue.stats("b")["b"]["pending"] == 1
        assert ticks[0] is worker
    finally:
        tick_hooks.remove(ticks.append)
        app.stop()
