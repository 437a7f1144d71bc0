"""The Celery backend's broker side: the Celery app, a queue per channel, sending
an event's message and counting what waits in a queue. Knows nothing of the store.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from django.utils.module_loading import import_string

from ....exceptions import BackendUnavailable, ConfigurationError
from . import task
from .protocol import CELERY_SETTINGS, TASK_NAME

logger = logging.getLogger("mega_cluster.events.celery")


class Broker:
    """Messages of one cluster app's event queue on its Celery broker.

    Options: ``APP`` (dotted path to the project's Celery app) or ``BROKER_URL``
    (a Celery app is built with :data:`CELERY_SETTINGS`) or, for a Redis broker
    behind Sentinel, the settings shape of :mod:`mega_cluster.redis_client`
    (``BROKER_URL = "sentinel://host:port,…/SERVICE/DB"``, or ``SENTINELS`` +
    ``SERVICE_NAME`` + ``PASSWORD``…, see :func:`sentinel_broker`),
    ``QUEUE_PREFIX`` (default ``mc.<app name>.``), ``QUEUE_ARGUMENTS``,
    ``TRANSPORT_OPTIONS``.
    """

    def __init__(self, app_name: str, options: Mapping[str, Any]) -> None:
        self.app_name = app_name
        self.options = options
        self.queue_prefix: str = options.get("QUEUE_PREFIX") or f"mc.{app_name}."
        self._celery: Any = None
        self._queues: dict[str, Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def check_options(options: Mapping[str, Any]) -> list[str]:
        where = [k for k in ("APP", "BROKER_URL", "SENTINELS") if options.get(k)]
        if not where:
            return [
                "CeleryEventBackend needs OPTIONS['APP'] (dotted path to your Celery "
                "app), OPTIONS['BROKER_URL'] or OPTIONS['SENTINELS'] with "
                "OPTIONS['SERVICE_NAME']."
            ]
        if "SENTINELS" in where and len(where) > 1:
            return [
                f"CeleryEventBackend: set only one of OPTIONS {where}, they all say "
                "where the broker is."
            ]
        try:
            sentinel_broker(options)
        except ValueError as exc:
            return [f"CeleryEventBackend: OPTIONS Sentinel settings: {exc}."]
        return []

    @property
    def celery(self) -> Any:
        """The Celery app (built or imported at first use, the task registered)."""
        with self._lock:
            if self._celery is None:
                self._celery = self._build()
            return self._celery

    def _build(self) -> Any:
        if self.options.get("APP"):
            try:
                celery_app = import_string(self.options["APP"])
            except ImportError as exc:
                raise ConfigurationError(
                    f"MEGA_CLUSTER EVENT_QUEUE OPTIONS['APP'] {self.options['APP']!r} "
                    f"cannot be imported: {exc}."
                ) from exc
        else:
            from celery import Celery

            url = self.options.get("BROKER_URL")
            transport = dict(self.options.get("TRANSPORT_OPTIONS") or {})
            sentinel = sentinel_broker(self.options)
            if sentinel is not None:
                url, translated = sentinel
                transport = {**translated, **transport}
            if str(url or "").startswith(("redis", "rediss", "sentinel")):
                # kombu's Redis transport waits forever by default: a publish to a
                # frozen broker would hang instead of raising BackendUnavailable.
                for key in ("socket_timeout", "socket_connect_timeout"):
                    transport.setdefault(key, REDIS_SOCKET_TIMEOUT)
            celery_app = Celery(
                f"mega_cluster-{self.app_name}", broker=url, set_as_current=False
            )
            celery_app.conf.update(
                **CELERY_SETTINGS, broker_transport_options=transport
            )
        task.register(celery_app)
        return celery_app

    def ping(self, timeout: float) -> None:
        """One connection attempt to the broker with ``timeout`` as its connect and
        socket timeouts; ``BackendUnavailable`` when it fails."""
        celery_app = self.celery
        options = dict(celery_app.conf.broker_transport_options or {})
        url = str(celery_app.conf.broker_url or "")
        if url.startswith(("redis", "rediss", "sentinel")):
            options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
        elif url.startswith(("amqp", "pyamqp")):
            options.update(read_timeout=timeout, write_timeout=timeout)
        conn = celery_app.connection_for_write(
            connect_timeout=timeout, transport_options=options
        )
        try:
            conn.connect()  # one attempt, no retries
        except Exception as exc:
            raise BackendUnavailable(
                f"Celery broker of the event queue of app {self.app_name!r} is "
                f"unreachable: {type(exc).__name__}"
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                conn.release()

    def queue_name(self, channel: str) -> str:
        return f"{self.queue_prefix}{channel}"

    def queue(self, channel: str) -> Any:
        """The channel's kombu ``Queue``. One object per channel: kombu remembers
        what it declared by object, so a fresh one per message would be declared
        again on every send."""
        try:
            return self._queues[channel]
        except KeyError:
            pass
        from kombu import Exchange, Queue

        name = self.queue_name(channel)
        queue = self._queues[channel] = Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            queue_arguments=dict(self.options.get("QUEUE_ARGUMENTS") or {}) or None,
        )
        return queue

    def send(
        self,
        channel: str,
        event_id: str,
        countdown: float | None = None,
        carried: list[Any] | None = None,
    ) -> None:
        """Send the message of ``event_id`` (a first message ``carried`` the event,
        see :func:`~.protocol.first_message`); ``BackendUnavailable`` when the
        broker refuses it."""
        celery_app = self.celery  # configuration errors propagate as they are
        args: list[Any] = [self.app_name, event_id, channel]
        if carried is not None:
            args.append(carried)
        try:
            celery_app.send_task(
                TASK_NAME,
                args=args,
                queue=self.queue(channel),
                countdown=countdown if countdown and countdown > 0 else None,
                ignore_result=True,
                # What monitors show for the arguments. Celery's default, a bounded
                # repr of all of them (the payload too), costs a publish more CPU
                # than building the rest of its message.
                argsrepr=f"[{self.app_name!r}, {event_id!r}, {channel!r}"
                + (", <event>]" if carried is not None else "]"),
            )
        except Exception as exc:
            raise BackendUnavailable(
                f"Celery broker of the event queue is unreachable: {exc}"
            ) from exc

    def queued(self, channel: str) -> int | None:
        """Messages waiting in the channel's broker queue (0 when the broker has no
        such queue), or None when the broker cannot tell."""
        return self.queue_depths([channel]).get(channel)

    def queue_depths(self, channels: list[str]) -> dict[str, int]:
        """Messages waiting in each channel's broker queue (0 when the broker has no
        such queue), over one pooled connection; a channel the broker cannot count
        is left out (and logged)."""
        depths: dict[str, int] = {}
        if not channels:
            return depths
        try:
            with self.celery.pool.acquire(block=True, timeout=5) as conn:
                broker_channel = None
                try:
                    for channel in channels:
                        if broker_channel is None:
                            broker_channel = conn.channel()
                        try:
                            depths[channel] = broker_channel.queue_declare(
                                queue=self.queue_name(channel), passive=True
                            ).message_count
                        except Exception as exc:
                            if not _not_found(exc):
                                raise
                            depths[channel] = 0
                            # AMQP closes a channel on a failed passive declare.
                            with contextlib.suppress(Exception):
                                broker_channel.close()
                            broker_channel = None
                finally:
                    if broker_channel is not None:
                        with contextlib.suppress(Exception):
                            broker_channel.close()
        except Exception as exc:
            logger.warning(
                "event queue: cannot count the broker queues of channel(s) %s: %s",
                ", ".join(c for c in channels if c not in depths),
                exc,
            )
        return depths


def sentinel_broker(options: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """kombu's spelling of the Sentinel settings in ``options``: its broker URL
    (``sentinel://[user:password@]host:port/DB`` per sentinel, joined by ``;``)
    and transport options (``master_name``, ``sentinel_kwargs`` with the
    sentinels' credentials and timeouts); ``None`` when the broker is not given
    in our Sentinel shape (a kombu ``sentinel://…;sentinel://…`` URL with
    ``TRANSPORT_OPTIONS["master_name"]`` is used as it is). Raises
    ``ValueError`` for malformed settings."""
    from urllib.parse import quote

    from ....redis_client import sentinel_spec

    transport = options.get("TRANSPORT_OPTIONS") or {}
    url = options.get("BROKER_URL")
    if url is not None and not isinstance(url, str):
        raise ValueError(f"BROKER_URL must be a string, got {url!r}")
    if "master_name" in transport:
        return None  # kombu's own Sentinel spelling
    if url and ";" in url:
        if url.startswith("sentinel://"):
            raise ValueError(
                f"BROKER_URL {url!r} is kombu's Sentinel spelling, which needs "
                "TRANSPORT_OPTIONS['master_name']; or write "
                "sentinel://host:port,host:port/SERVICE_NAME/db"
            )
        return None  # kombu's failover list of brokers
    spec = sentinel_spec({"URL": url} if url else options)
    if spec is None:
        return None
    userinfo = ""
    if spec.password is not None or spec.username is not None:
        userinfo = f"{quote(spec.username or '', safe='')}"
        if spec.password is not None:
            userinfo += f":{quote(spec.password, safe='')}"
        userinfo += "@"
    broker = ";".join(
        f"sentinel://{userinfo}{host}:{port}/{spec.db}" for host, port in spec.sentinels
    )
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if spec.sentinel_password is not None:
        sentinel_kwargs["password"] = spec.sentinel_password
    if spec.sentinel_username is not None:
        sentinel_kwargs["username"] = spec.sentinel_username
    return broker, {"master_name": spec.service, "sentinel_kwargs": sentinel_kwargs}


#: Socket timeouts of a Redis broker's connections (``TRANSPORT_OPTIONS`` may set
#: ``socket_timeout`` / ``socket_connect_timeout`` otherwise; above kombu's 1 s
#: BRPOP wait). A publish to a broker that stops answering fails after that long.
REDIS_SOCKET_TIMEOUT = 5.0

#: Connect and read timeout of the connections to the sentinels (seconds): they
#: answer "where is the primary" at once, a silent one is skipped for the next.
SENTINEL_TIMEOUT = 5.0


def _not_found(exc: BaseException) -> bool:
    """The broker has no such queue (AMQP 404, or kombu's virtual transports)."""
    return "NOT_FOUND" in str(exc) or getattr(exc, "code", None) == 404
