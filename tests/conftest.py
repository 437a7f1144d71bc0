"""Fixture layer: services per marker, per-run isolation, process clean-up."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from . import services
from .dist import dist  # noqa: F401 - the shared wheel fixture (session scope)
from .procs import ProcessGroup

_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """The suite's own process starts no cluster app by itself: tests start the
    apps they need (the autostart tests turn it on, or run real processes)."""
    from mega_cluster.registry import registry

    registry.autostart = False
    _flush_postgres_with_delete()
    _keep_content_types_across_flushes()


def _flush_postgres_with_delete() -> None:
    """Empty the PostgreSQL test database after a transactional test with ``DELETE``
    instead of ``TRUNCATE``: the same empty tables, and neither resets a sequence
    (the suite asks for no ``reset_sequences``), but ``TRUNCATE`` gives every table
    new files, ~0.1 s per test on 500 tests; ``DELETE`` of a test's few rows takes
    ~0.01 s. Django's foreign keys on PostgreSQL are ``DEFERRABLE INITIALLY
    DEFERRED`` and the flush runs in one transaction, so the order of the tables
    does not matter; a key that still points elsewhere fails the flush at commit,
    as ``TRUNCATE`` without ``CASCADE`` would. The database has no triggers."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(
        self, style, tables, *, reset_sequences=False, allow_cascade=False
    ) -> list[str]:
        if not tables or reset_sequences or allow_cascade:
            return truncate(
                self,
                style,
                tables,
                reset_sequences=reset_sequences,
                allow_cascade=allow_cascade,
            )
        return [
            f"{style.SQL_KEYWORD('DELETE FROM')} "
            f"{style.SQL_FIELD(self.quote_name(table))};"
            for table in tables
        ]

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]


#: Rows that ``post_migrate`` (``create_contenttypes``, ``create_permissions``)
#: writes again after every flush: the same rows for every test.
_POST_MIGRATE_TABLES = frozenset({"django_content_type", "auth_permission"})


def _keep_content_types_across_flushes() -> None:
    """A transactional test's flush leaves the content types and permissions in
    place: Django emits ``post_migrate`` after it all the same, which creates any
    that are missing (none) instead of all of them (~40 ms less per test on SQLite,
    ~20 ms on PostgreSQL, ~1,000 tests). Each test still starts with exactly the
    installed models' content types and default permissions (no test writes
    others); only their ids stay the same from one test to the next."""
    from django.db.backends.postgresql.operations import (
        DatabaseOperations as PostgresOperations,
    )
    from django.db.backends.sqlite3.operations import (
        DatabaseOperations as SQLiteOperations,
    )

    for cls in (PostgresOperations, SQLiteOperations):
        flush = cls.sql_flush

        def sql_flush(
            self,
            style,
            tables,
            *,
            reset_sequences=False,
            allow_cascade=False,
            _flush=flush,
        ) -> list[str]:
            if not reset_sequences and not allow_cascade:
                tables = [t for t in tables if t not in _POST_MIGRATE_TABLES]
            return _flush(
                self,
                style,
                tables,
                reset_sequences=reset_sequences,
                allow_cascade=allow_cascade,
            )

        cls.sql_flush = sql_flush  # type: ignore[method-assign]


def pytest_collection_modifyitems(session: pytest.Session, config, items) -> None:
    """Start (or find) the servers the selected tests need, once, before any runs."""
    needed: set[str] = set()
    for item in items:
        for marker in item.iter_markers():
            needed.update(services.MARKER_SERVICES.get(marker.name, ()))
        if any(
            "postgres" in (m.kwargs.get("databases") or ())
            for m in item.iter_markers("django_db")
        ):
            needed.add("postgres")
    for name in sorted(needed):
        try:
            services.ensure(name)
        except RuntimeError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete every Redis key this run wrote (they all carry the run id)."""
    if not services.port_open(settings.REDIS_HOST, settings.REDIS_PORT):
        return
    try:
        import redis
    except ImportError:
        return
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        batch = list(client.scan_iter(match=f"*{settings.RUN_ID}*", count=1000))
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])
    finally:
        client.close()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test databases; before they are dropped, the sessions still
    open on the PostgreSQL one are ended (DROP DATABASE would wait 5 s for them,
    then fail and leave the database behind). What they were is printed."""
    yield
    from django.db import connections

    if "postgres" not in connections:
        return
    name = connections["postgres"].settings_dict["NAME"]
    with django_db_blocker.unblock():
        connections.close_all()
        import psycopg

        params = connections["postgres"].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params["dbname"] = "postgres"
        try:
            with psycopg.connect(**params, autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT application_name, state, left(query, 120), "
                    "pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    [name],
                ).fetchall()
        except psycopg.Error as exc:
            print(f"\nending the sessions on {name} failed: {exc}")
            return
    for application, state, query, _ in ended:
        print(f"\nended a session left on {name}: {application!r} {state}: {query}")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A cluster app name unique to this test and run (safe on shared servers)."""
    return f"t{settings.RUN_ID}-{next(_counter)}"[:50]


@pytest.fixture
def procs() -> Iterator[ProcessGroup]:
    """Spawn real processes; every one still running is killed at teardown."""
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture
def redis_url() -> str:
    return settings.REDIS_URL


@pytest.fixture
def nats_url() -> str:
    return settings.NATS_URL


@pytest.fixture(scope="session")
def sentinel_topology() -> Iterator[Any]:
    """A private primary + replica + 3 sentinels for the whole run (tests that
    kill the primary start their own with :func:`tests.topologies.redis_sentinel`)."""
    from .topologies import redis_sentinel

    with redis_sentinel() as topology:
        yield topology


@pytest.fixture(scope="session")
def cluster_topology() -> Iterator[Any]:
    """A private three-primary Redis Cluster for the whole run."""
    from .topologies import redis_cluster

    with redis_cluster() as topology:
        yield topology


@pytest.fixture(scope="session")
def pgbouncer_topology(django_db_setup: Any) -> Iterator[Any]:
    """PgBouncer in transaction mode in front of the suite's PostgreSQL. After the
    test databases (so it stops before they are dropped: its server connections
    would keep the run's database from being dropped)."""
    from .topologies import pgbouncer

    with pgbouncer() as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_alias(pgbouncer_topology: Any, django_db_blocker: Any) -> Iterator[str]:
    """DATABASES alias ``pgbouncer``: the run's PostgreSQL test database through
    PgBouncer in transaction mode (marked as Django documents it:
    ``DISABLE_SERVER_SIDE_CURSORS``). The test needs the ``postgres`` database."""
    from django.db import connections

    config = dict(connections.settings["postgres"])
    config.update(
        HOST="127.0.0.1",
        PORT=str(pgbouncer_topology.port),
        DISABLE_SERVER_SIDE_CURSORS=True,
    )
    settings.DATABASES["pgbouncer"] = config
    try:
        with django_db_blocker.unblock():
            yield "pgbouncer"
    finally:
        connections["pgbouncer"].close()
        del connections["pgbouncer"]
        connections.settings.pop("pgbouncer", None)
        settings.DATABASES.pop("pgbouncer", None)
