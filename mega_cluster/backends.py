"""What every backend class of every primitive shares.

A backend is chosen by ``BACKEND`` (alias or dotted path, see :mod:`mega_cluster.conf`)
and built once per cluster app with the app and its ``OPTIONS``. Constructing one
must not connect to anything: connections are made on first use or in ``start()``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .circuit import Circuit, guard
from .circuit import settings_of as circuit_settings
from .conf import missing_modules
from .exceptions import BackendUnavailable, ConfigurationError

if TYPE_CHECKING:
    from .registry import ClusterApp

#: Default ``timeout`` of :meth:`Backend.ping` (seconds).
PING_TIMEOUT = 2.0


class Backend:
    """Base of the backend classes of every primitive.

    Class attributes, read by the system checks without building the backend:

    ``cluster_safe``
        False for process-local backends (``memory``, ``local``); they get a warning
        under ``DEBUG=False``.
    ``requires``
        ``(module, pip extra)`` pairs; a missing module is check error ``E010``
        naming ``pip install "mega-cluster[extra]"``.
    ``required_options``
        ``OPTIONS`` keys that must be present (check error ``E011``).
    ``circuit_name``, ``guarded``
        The name of the backend's :class:`~mega_cluster.circuit.Circuit` and the
        methods that run through it: while the circuit is open they raise
        ``CircuitOpen`` at once (see :mod:`mega_cluster.circuit`). Each family's
        base lists the methods of its contract that reach the server.
    """

    cluster_safe: ClassVar[bool] = True
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    required_options: ClassVar[tuple[str, ...]] = ()
    circuit_name: ClassVar[str] = "backend"
    guarded: ClassVar[tuple[str, ...]] = ()

    def __init__(self, app: ClusterApp, options: Mapping[str, Any]) -> None:
        self.app = app
        self.options = dict(options)
        # The class's ping, not the guarded one: a probe must reach the server
        # while the circuit is open.
        self.circuit = Circuit(
            getattr(app, "name", "?"),
            self.circuit_name,
            probe=functools.partial(type(self).ping, self),
            **circuit_settings(app),
        )
        guard(self, self.guarded, self.circuit)
        stop = self.stop

        @functools.wraps(stop)
        def stop_and_close_circuit() -> None:
            try:
                stop()
            finally:
                self.circuit.reset()  # ends its probe thread; a restart starts closed

        self.stop = stop_and_close_circuit  # type: ignore[method-assign]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with ``options`` as sentences (empty when fine); never connects."""
        return [
            f"OPTIONS[{name!r}] is required by {cls.__name__}."
            for name in cls.required_options
            if not options.get(name)
        ]

    def start(self) -> None:
        """Start background work (listeners, renewal threads); idempotent."""

    def stop(self) -> None:
        """Stop background work and close connections; idempotent."""

    def circuits(self) -> list[Circuit]:
        """This backend's circuit and those of the parts it is built of (the Celery
        event queue's store); the health view reports any open one."""
        return [self.circuit]

    def databases(self) -> list[str]:
        """The Django database aliases this backend reads and writes (the health
        view pings each). Default: its ``alias`` attribute, the ``DATABASE`` a
        database-backed backend was configured with; empty without one."""
        alias = getattr(self, "alias", None)
        return [alias] if isinstance(alias, str) else []

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """Raise ``BackendUnavailable`` when the server cannot be reached.

        Returns or raises within about ``timeout`` seconds even when the server
        hangs (a frozen process accepts connections and never answers): the
        check uses connections with that socket timeout, never the backend's
        longer-lived ones. Process-local backends always answer. Default:
        ``SELECT 1`` on each of :meth:`databases` (a Django connection has no
        socket timeout of ours: the caller's deadline bounds the wait).
        """
        for alias in self.databases():
            select_one(alias, f"{type(self).__name__} of app {self.app.name!r}")


def select_one(alias: str, what: str) -> None:
    """``SELECT 1`` on database ``alias``; ``BackendUnavailable`` naming ``what``
    (driver error as ``__cause__``) when it fails."""
    from django.db import DatabaseError, connections

    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        if not connection.in_atomic_block:
            # A broken connection stays broken in a long-lived thread (a circuit's
            # probe): the next ping reconnects.
            with contextlib.suppress(DatabaseError):
                connection.close()
        raise BackendUnavailable(
            f"{what} cannot reach database {alias!r}: {exc}"
        ) from exc


B = TypeVar("B", bound=Backend)


def load_backend(app: ClusterApp, section: str, base: type[B]) -> B:
    """Build the backend ``MEGA_CLUSTER[...][section]["BACKEND"]`` names for ``app``.

    The one way every primitive finds its backend: the alias or dotted path is
    imported, the class must be a subclass of ``base``, the Python packages it
    ``requires`` must be installed and its ``check_options`` must find nothing;
    otherwise ``ConfigurationError`` (an ``ImproperlyConfigured``) says which
    setting of which app to change. Nothing connects: see :class:`Backend`.
    """
    settings = app.settings.sections[section].backend
    where = f"MEGA_CLUSTER app {app.name!r} {section}"
    if settings is None:  # pragma: no cover - every backend section resolves one
        raise ConfigurationError(f"{where} has no BACKEND.")
    label = settings.alias or settings.path
    cls = settings.load_class()
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigurationError(
            f"{where} BACKEND {settings.path!r} is not a {section.lower()} backend "
            f"(a subclass of {base.__module__}.{base.__qualname__})."
        )
    for module, extra in missing_modules(cls):
        raise ConfigurationError(
            f"{where} BACKEND {label!r} needs the Python package {module!r}: "
            f'pip install "mega-cluster[{extra}]".'
        )
    problems = cls.check_options(settings.options)
    if problems:
        raise ConfigurationError(
            f"{where}: {' '.join(problems)} Set it in MEGA_CLUSTER {section} OPTIONS."
        )
    return cls(app, settings.options)
