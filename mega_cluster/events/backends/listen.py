"""Wake-ups of the ``database`` backend on PostgreSQL: a thread that ``LISTEN``s
on the app's notification channel (every publish sends ``NOTIFY`` in its insert)
and wakes the consumer of the channel named in each notification.

``LISTEN`` needs a session of its own: it connects to ``OPTIONS["LISTEN_DATABASE"]``
(default ``DATABASE``), a direct alias when ``DATABASE`` goes through PgBouncer in
transaction mode. Its no-op queries are never prepared (``prepare_threshold``
None), so even a pooler before PgBouncer 1.21 could carry them."""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import connections

from ...pooling import through_pooler

logger = logging.getLogger("mega_cluster.events.database")


class Listener:
    """``OPTIONS``: ``LISTEN_DATABASE`` (default: the backend's ``DATABASE``)."""

    def __init__(
        self,
        options: Mapping[str, Any],
        alias: str,
        pg_channel: str,
        wake: Callable[[str | None], None],
    ) -> None:
        #: LISTEN needs a session: a direct alias when ``alias`` is pooled.
        self.alias: str = options.get("LISTEN_DATABASE", alias)
        self.pg_channel = pg_channel
        self.wake = wake
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @staticmethod
    def check_options(options: Mapping[str, Any], alias: str) -> list[str]:
        listen = options.get("LISTEN_DATABASE", alias)
        if listen not in settings.DATABASES:
            return [
                f"OPTIONS['LISTEN_DATABASE'] is {listen!r}, which is not a DATABASES "
                f"alias (have {', '.join(settings.DATABASES)})."
            ]
        return []

    @property
    def pooled(self) -> bool:
        """Whether the LISTEN alias goes through a transaction pooler, where it
        would hear nothing (the backend then never listens: consumers poll)."""
        return through_pooler(self.alias)

    @property
    def running(self) -> bool:
        return self._thread is not None

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
                params.pop("cursor_factory", None)
                params.pop("context", None)
                params["prepare_threshold"] = None
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
