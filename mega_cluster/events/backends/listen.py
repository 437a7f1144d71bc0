"""Wake-ups of the ``database`` backend on PostgreSQL: a thread that ``LISTEN``s
on the app's notification channel (every publish sends ``NOTIFY`` in its insert)
and wakes the consumer of the channel named in each notification."""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger("mega_cluster.events.database")


class Listener:
    def __init__(
        self, alias: str, pg_channel: str, wake: Callable[[str | None], None]
    ) -> None:
        self.alias = alias
        self.pg_channel = pg_channel
        self.wake = wake
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._listen,
                name=f"mc-events-listen-{self.pg_channel}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            conn = None
            try:
                params = connections[self.alias].get_connection_params()
                conn = psycopg.connect(**params, autocommit=True)
                conn.execute(f'LISTEN "{self.pg_channel}"')
                self.wake(None)  # whatever was published while not listening
                # psycopg 3.1 has no notifies(timeout=): wait on the socket, then
                # let a no-op query deliver the notifications to the handler.
                conn.add_notify_handler(lambda notify: self.wake(notify.payload))
                while not self._stop.is_set():
                    ready, _, _ = select.select([conn.fileno()], [], [], 0.25)
                    if ready:
                        conn.execute("SELECT 1")
            except Exception as exc:
                logger.warning(
                    "event queue LISTEN on database %r failed (%s); polling every "
                    "POLL_INTERVAL until it is back",
                    self.alias,
                    exc,
                )
                self._stop.wait(1.0)
            finally:
                if conn is not None:
                    conn.close()
