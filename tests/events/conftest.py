"""Fixtures of the event-queue contract suite: one app per backend under test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from mega_cluster.registry import ClusterApp
from mega_cluster.testing import (
    make_app,
    wait_until,  # noqa: F401 - re-exported
)
from tests.databases import ON_POSTGRES

#: Short timings so the suite is fast; every wait in a test is still bounded.
FAST = {"LEASE": 2.0, "POLL_INTERVAL": 0.05, "RETRY_BASE": 0.01, "RETRY_CAP": 0.05}

#: The ``pgbouncer_alias`` fixture's alias: PostgreSQL through PgBouncer in
#: transaction mode.
PGBOUNCER = "pgbouncer"

#: Celery backends under test: OPTIONS beyond the broker's and the store's.
CELERY_MODES: dict[str, dict[str, Any]] = {
    "celery": {},
    # A row only for events that need one (docs/events.md).
    "celery-failures": {"BOOKKEEPING": "failures"},
    # A Redis broker behind Sentinel (the run's private topology), given in the
    # documented sentinel:// shape (redis_client) that the broker translates.
    "celery-sentinel": {},
}

BACKENDS = [
    pytest.param(
        ("memory", None),
        id="memory",
        marks=pytest.mark.django_db(transaction=True),
    ),
    pytest.param(
        ("database", "default"),
        id="database-sqlite",
        marks=pytest.mark.django_db(transaction=True),
    ),
    pytest.param(
        ("database", "postgres"),
        id="database-postgres",
        marks=ON_POSTGRES,
    ),
    *(
        pytest.param(
            (mode, "postgres"),
            id=f"{mode}-rabbitmq",
            marks=[pytest.mark.celery, pytest.mark.rabbitmq, *ON_POSTGRES],
        )
        for mode in CELERY_MODES
        if mode != "celery-sentinel"
    ),
]

#: The event-queue contract also runs on a Redis broker behind Sentinel, and
#: through PgBouncer in transaction mode in front of the same PostgreSQL (LISTEN on
#: the direct alias, as docs/deployment.md says): the database backend and the
#: celery backend's store.
CONTRACT_BACKENDS = [
    *BACKENDS,
    pytest.param(
        ("database", PGBOUNCER),
        id="database-pgbouncer",
        marks=ON_POSTGRES,
    ),
    pytest.param(
        ("celery", PGBOUNCER),
        id="celery-rabbitmq-pgbouncer",
        marks=[pytest.mark.celery, pytest.mark.rabbitmq, *ON_POSTGRES],
    ),
    pytest.param(
        ("celery-sentinel", "postgres"),
        id="celery-sentinel",
        marks=[pytest.mark.celery, pytest.mark.redis, *ON_POSTGRES],
    ),
]

#: The ``sentinel://`` URL of the run's Sentinel topology, set by the ``apps``
#: fixture for the celery-sentinel parameter.
SENTINEL_BROKER: dict[str, str] = {}


def celery_options(database: str, mode: str = "celery") -> dict[str, Any]:
    """A real RabbitMQ broker; queues carry the app name (so the run id) and expire
    ten minutes after their last use, so the shared broker keeps no leftovers.
    ``mode``: a key of :data:`CELERY_MODES` (``celery-sentinel``: Redis behind the
    run's Sentinel topology instead)."""
    if mode == "celery-sentinel":
        return {"BROKER_URL": SENTINEL_BROKER["url"], "DATABASE": database}
    return {
        "BROKER_URL": settings.AMQP_URL,
        "DATABASE": database,
        "QUEUE_ARGUMENTS": {"x-expires": 600_000},
        **CELERY_MODES[mode],
    }


def queue_settings(backend: str, database: str | None, **overrides: Any) -> dict:
    section: dict[str, Any] = {"BACKEND": backend, **FAST, **overrides}
    if backend in CELERY_MODES:
        section["BACKEND"] = "celery"
        section["OPTIONS"] = celery_options(database or "default", backend)
    elif database is not None:
        section["OPTIONS"] = {"DATABASE": database}
        if database == PGBOUNCER:  # LISTEN needs a session: the direct alias
            section["OPTIONS"]["LISTEN_DATABASE"] = "postgres"
    return {"EVENT_QUEUE": section}


class Apps:
    """Builds cluster apps on the backend under test; stops them all at teardown."""

    def __init__(self, backend: str, database: str | None, name: str) -> None:
        self.backend = backend
        self.database = database
        self.name = name
        self.apps: list[ClusterApp] = []

    @property
    def transaction_alias(self) -> str:
        return self.database or "default"

    def make(self, *, name: str | None = None, **overrides: Any) -> ClusterApp:
        app = make_app(
            name or self.name, queue_settings(self.backend, self.database, **overrides)
        )
        self.apps.append(app)
        return app

    def stop(self) -> None:
        for app in reversed(self.apps):
            app.stop()


def apps_of(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Apps]:
    """The ``apps`` fixture's body, for the backend in ``request.param``."""
    backend, database = request.param
    if backend == "celery-sentinel":
        SENTINEL_BROKER["url"] = request.getfixturevalue("sentinel_topology").url
    if database == PGBOUNCER:
        request.getfixturevalue("pgbouncer_alias")
    group = Apps(backend, database, unique_name)
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture(params=BACKENDS)
def apps(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Apps]:
    yield from apps_of(request, unique_name)


@pytest.fixture
def proxied_store(django_db_blocker):
    """The run's PostgreSQL test database reached through a :class:`TcpProxy`, as
    DATABASES alias ``proxied``: the test cuts the store off without touching the
    shared server."""
    from django.conf import settings as django_settings
    from django.db import connections

    from tests.servers import TcpProxy

    config = dict(connections.settings["postgres"])
    proxy = TcpProxy(int(config.get("PORT") or 5432), config.get("HOST") or None)
    config.update(
        HOST="127.0.0.1",
        PORT=str(proxy.port),
        OPTIONS={**config.get("OPTIONS", {}), "connect_timeout": 2},
    )
    django_settings.DATABASES["proxied"] = config
    try:
        with django_db_blocker.unblock():
            yield proxy
    finally:
        proxy.close()
        # This thread's wrapper would keep the closed proxy's port.
        connections["proxied"].close()
        del connections["proxied"]
        connections.settings.pop("proxied", None)
        django_settings.DATABASES.pop("proxied", None)
