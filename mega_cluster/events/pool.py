"""A small elastic thread pool for the event consumer.

``concurrent.futures.ThreadPoolExecutor`` keeps a timed-out handler's thread busy
while new events queue behind it; here a job always gets a thread (an idle one, or
a new one up to ``max_threads``), so a slot freed by a timeout is really free.
Each thread closes its Django database connections when it exits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from django.db import connections

_STOP = object()


class ThreadPool:
    def __init__(
        self, name: str, *, max_threads: int | None = None, idle_timeout: float = 60.0
    ) -> None:
        self.name = name
        self.max_threads = max_threads
        self.idle_timeout = idle_timeout
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._queued = 0
        self._counter = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"thread pool {self.name} is shut down")
            self._queued += 1
            spawn = self._queued > self._idle and (
                self.max_threads is None or len(self._threads) < self.max_threads
            )
            if spawn:
                self._counter += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{self._counter}", daemon=True
                )
                self._threads.add(thread)
            self._jobs.put((future, fn, args))
        if spawn:
            thread.start()
        return future

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._lock:
                    self._idle += 1
                try:
                    job = self._jobs.get(timeout=self.idle_timeout)
                except queue.Empty:
                    job = None
                with self._lock:
                    self._idle -= 1
                    if job is None:
                        # Idle for long: exit unless a job arrived meanwhile.
                        if self._queued:
                            continue
                        self._threads.discard(me)
                        return
                    if job is _STOP:
                        self._threads.discard(me)
                        return
                    self._queued -= 1
                future, fn, args = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                del future, fn, args, job
        finally:
            connections.close_all()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the threads once their current job is done (waits up to ``timeout``)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)
        for thread in threads:
            thread.join(timeout)
