"""The loop behind ``manage.py runworker``, in a plain class you can reuse.

:class:`Worker` starts the cluster apps (plugins, pub/sub and sync-message
listeners, the event consumer), then waits. SIGTERM or SIGINT starts a drain: no
new events are taken, running ones finish (up to the drain timeout; after it they
are cancelled and handed back), then the apps stop and :meth:`Worker.run` returns
0. A second signal exits at once with status 1; the events it was running are
redelivered when their lease lapses. A fatal consumer error makes ``run`` return 1.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.events.worker")

#: ``hook(worker)`` callables run every ``Worker.tick_interval`` seconds while the
#: worker runs (the node registry heartbeats from here).
tick_hooks: list[Callable[[Worker], None]] = []


class Worker:
    role = "worker"
    tick_interval = 1.0

    def __init__(
        self,
        apps: Sequence[ClusterApp],
        *,
        channels: Iterable[str] | None = None,
        concurrency: int | None = None,
        drain_timeout: float | None = None,
    ) -> None:
        self.apps = list(apps)
        self.channels = None if channels is None else list(channels)
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self._stop = threading.Event()
        self._signals = 0
        self._schedulers: list[Any] = []

    # signals ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            logger.warning("%s again: exiting now without draining", name)
            logging.shutdown()
            os._exit(1)
        logger.warning("%s: draining running events (send it again to force)", name)
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    # running ------------------------------------------------------------------------

    def start(self) -> None:
        for app in self.apps:
            queue = app.event_queue
            queue.configure_worker(channels=self.channels, concurrency=self.concurrency)
            app.node_registry.role = self.role  # listed as a worker on Nodes
            schedules = self._schedules(app)
            app.start()
            if schedules is not None:
                self._schedulers.append(schedules)
                schedules.start()
            subscribed = sorted(queue.subscriptions())
            consumed = [
                c for c in subscribed if self.channels is None or c in self.channels
            ]
            missing = sorted(set(self.channels or ()) - set(subscribed))
            if missing:
                logger.warning(
                    "app %s: no plugin subscribes %s on this node; not consumed",
                    app.name,
                    ", ".join(missing),
                )
            logger.info(
                "worker for app %s on node %s consuming %s",
                app.name,
                app.node_id,
                ", ".join(consumed) or "no channels",
            )

    def run(self) -> int:
        """Start, serve until signalled (or a fatal error), drain, stop. Exit status."""
        status = 0
        try:
            self.start()
            while not self._stop.wait(self.tick_interval):
                error = self.fatal_error()
                if error is not None:
                    logger.critical("stopping: event consumer failed: %r", error)
                    status = 1
                    break
                self.tick()
        finally:
            self.stop()
        return status

    def fatal_error(self) -> BaseException | None:
        for app in self.apps:
            queue = app.built_components().get("event_queue")
            error = queue.wait_failed(0) if queue is not None else None
            if error is not None:
                return error
        return None

    def tick(self) -> None:
        for hook in list(tick_hooks):
            try:
                hook(self)
            except Exception:
                logger.exception("worker tick hook %r failed", hook)

    def _schedules(self, app: ClusterApp) -> Any:
        """The thread deciding ``app``'s periodic jobs, once they are subscribed
        here (None when the app has none)."""
        from ..schedules.scheduler import get_schedules
        from ..schedules.worker import SchedulerThread

        schedules = get_schedules(app)
        if not schedules.jobs():
            return None
        schedules.subscribe()
        return SchedulerThread(schedules)

    def stop(self) -> None:
        for thread in self._schedulers:
            thread.stop()
        self._schedulers.clear()
        for app in self.apps:
            queue: Any = app.built_components().get("event_queue")
            if queue is not None:
                queue.stop(self.drain_timeout)
            app.stop()
        logger.info("worker stopped")
