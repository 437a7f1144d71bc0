"""What the health view checks: every backend of every cluster app, all at once.

Each check is one backend's ``ping(timeout)`` (the lock, pub/sub and event-queue
backends — the Celery one pings its broker and its store —, every cache store in
use, the node registry's store) or a ``SELECT 1`` on a database alias that
mega_cluster uses (``default`` and every ``DATABASE`` of the backends). They run in
threads of their own, at the same time, and the report is built when all answered
or ``HEALTH_TIMEOUT`` seconds passed, whichever is first: a check still running
then is reported failed with ``"error": "Timeout"``, so one hung server (a frozen
Redis accepts connections and never answers) cannot hold the view. A check whose
previous ping still hangs is not started again; it is reported failed while it
hangs, so a load balancer polling the view never piles threads up.

Pings go through the backend's circuit (:meth:`Circuit.check`): a failed ping
counts towards opening it and an answer closes it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections

from .circuit import Circuit
from .exceptions import BackendUnavailable

if TYPE_CHECKING:
    from .registry import ClusterApp

#: Default of the app setting ``HEALTH_TIMEOUT`` (seconds).
DEADLINE = 2.0
#: Share of the deadline given to the pings' socket timeouts: they fail on their
#: own, with their real error, a little before the report is due.
PING_SHARE = 0.8
#: The checks whose backend may use a database alias of its own.
DATABASE_USERS = ("locks", "event_queue", "nodes")


@dataclass(frozen=True)
class Check:
    """One thing to ping: where it is reported and how to ping it."""

    app: str | None  # None: a database alias, reported under ``databases``
    key: str
    backend: str
    ping: Callable[[float], None]
    circuit: Circuit | None = None
    #: Circuits of the backend's parts (the Celery event queue's store), reported
    #: with its own: ``"circuit": "open"`` when any is.
    parts: tuple[Circuit, ...] = ()


def _backend_name(app: ClusterApp, section: str) -> str:
    backend = app.settings.sections[section].backend
    if backend is None:
        return ""
    return backend.alias or backend.path


def _owners(app: ClusterApp) -> list[tuple[str, str, Any]]:
    """``(check key, backend name, backend or store)`` of ``app``; an object that
    cannot be built (a configuration error) comes as the exception, so the check
    reports it instead of failing the whole view."""
    found: list[tuple[str, str, Any]] = []

    def add(key: str, name: Callable[[], str], build: Callable[[], Any]) -> None:
        try:
            found.append((key, name(), build()))
        except Exception as exc:
            found.append((key, "", exc))

    for key, section, attr in (
        ("locks", "LOCKS", "lock_manager"),
        ("pubsub", "PUBSUB", "pubsub_manager"),
        ("event_queue", "EVENT_QUEUE", "event_queue"),
    ):
        add(
            key,
            functools.partial(_backend_name, app, section),
            functools.partial(_backend_of, app, attr),
        )
    try:
        manager = app.cache_manager
        default = app.settings.cache["DEFAULT_STORE"]
        add("cache", lambda: default, lambda: manager.store(default))
        for alias, store in manager.stores().items():
            if alias != default:
                add(
                    f"cache:{alias}",
                    functools.partial(str, alias),
                    functools.partial(_same, store),
                )
    except Exception as exc:
        found.append(("cache", "", exc))
    add("nodes", lambda: app.node_registry.store.name, lambda: app.node_registry.store)
    return found


def _backend_of(app: ClusterApp, attr: str) -> Any:
    return app.component(attr).backend


def _same(value: Any) -> Any:
    return value


def _failing(exc: BaseException) -> Callable[[float], None]:
    def ping(timeout: float) -> None:
        raise exc

    return ping


def app_checks(app: ClusterApp) -> list[Check]:
    """The checks of ``app``'s backends (not its databases: :func:`databases`)."""
    checks = []
    for key, name, owner in _owners(app):
        if isinstance(owner, BaseException):
            checks.append(Check(app.name, key, name, _failing(owner)))
        else:
            circuit = getattr(owner, "circuit", None)
            circuits = getattr(owner, "circuits", None)
            parts = tuple(
                c for c in (circuits() if circuits else []) if c is not circuit
            )
            checks.append(Check(app.name, key, name, owner.ping, circuit, parts))
    return checks


def databases(apps: list[ClusterApp]) -> dict[str, list[str]]:
    """Database alias -> what of mega_cluster uses it (``default`` always)."""
    used: dict[str, list[str]] = {"default": ["mega_cluster"]}
    for app in apps:
        for what, _name, owner in _owners(app):
            if isinstance(owner, BaseException) or what not in DATABASE_USERS:
                continue
            for alias in owner.databases():
                users = used.setdefault(alias, [])
                label = f"{app.name}.{what}"
                if label not in users:
                    users.append(label)
    return used


def _database_ping(alias: str) -> Callable[[float], None]:
    def ping(timeout: float) -> None:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            raise BackendUnavailable(f"database {alias!r}: {exc}") from exc

    return ping


# running ------------------------------------------------------------------------

#: (app, key) -> when the ping still running began (monotonic).
_running: dict[tuple[str | None, str], float] = {}
_running_lock = threading.Lock()


def _run(check: Check, timeout: float, results: dict[str, Any], done: Any) -> None:
    started = time.monotonic()
    try:
        if check.circuit is not None:
            check.circuit.check(timeout)
        else:
            check.ping(timeout)
    except Exception as exc:
        # The exception type only: driver messages can carry hosts or user names.
        cause: BaseException = exc
        if isinstance(exc, BackendUnavailable) and exc.__cause__ is not None:
            cause = exc.__cause__
        results[check.key] = {"ok": False, "error": type(cause).__name__}
    else:
        elapsed = (time.monotonic() - started) * 1000
        results[check.key] = {"ok": True, "latency_ms": round(elapsed, 2)}
    finally:
        with _running_lock:
            _running.pop((check.app, check.key), None)
        connections.close_all()  # this thread's own
        with done:
            done.notify_all()


def run(checks: list[Check], deadline: float) -> dict[tuple[str | None, str], Any]:
    """Ping every check at once; ``{(app, key): result}`` within ``deadline``."""
    started = time.monotonic()
    done = threading.Condition()
    slots: dict[tuple[str | None, str], dict[str, Any]] = {}
    pending: list[tuple[Check, dict[str, Any]]] = []
    for check in checks:
        ident = (check.app, check.key)
        results: dict[str, Any] = {}
        slots[ident] = results
        with _running_lock:
            hung_since = _running.get(ident)
            if hung_since is None:
                _running[ident] = started
        if hung_since is not None:
            results[check.key] = {
                "ok": False,
                "error": "Timeout",
                "pending_for": round(started - hung_since, 3),
            }
            continue
        pending.append((check, results))
        threading.Thread(
            target=_run,
            args=(check, deadline * PING_SHARE, results, done),
            name=f"mega_cluster-health-{check.key}",
            daemon=True,
        ).start()
    with done:
        done.wait_for(
            lambda: all(check.key in results for check, results in pending),
            timeout=max(0.0, deadline - (time.monotonic() - started)),
        )
    report: dict[tuple[str | None, str], Any] = {}
    for check in checks:
        ident = (check.app, check.key)
        result = dict(slots[ident].get(check.key) or {"ok": False, "error": "Timeout"})
        entry: dict[str, Any] = {}
        if check.app is not None:
            entry["backend"] = check.backend
        entry.update(result)
        if check.circuit is not None:
            entry["circuit"] = check.circuit.state
            opened = [c.name for c in check.parts if c.is_open]
            if opened:
                entry["circuit"] = "open"
                entry["open_circuits"] = opened
        report[ident] = entry
    return report


def report(apps: list[ClusterApp]) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """``(ok, databases, apps)`` of the health view's body."""
    deadline = max(
        (float(app.settings.values.get("HEALTH_TIMEOUT", DEADLINE)) for app in apps),
        default=DEADLINE,
    )
    checks: list[Check] = []
    used = databases(apps)
    for alias in used:
        checks.append(Check(None, alias, alias, _database_ping(alias)))
    for app in apps:
        checks += app_checks(app)
    results = run(checks, deadline)
    dbs = {
        alias: {**results[(None, alias)], "used_by": users}
        for alias, users in used.items()
    }
    per_app: dict[str, Any] = {app.name: {} for app in apps}
    for check in checks:
        if check.app is not None:
            per_app[check.app][check.key] = results[(check.app, check.key)]
    ok = all(result["ok"] for result in results.values())
    return ok, dbs, per_app
