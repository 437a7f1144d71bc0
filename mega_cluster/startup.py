"""What ``ClusterApp.start()`` checks and says: servers answer, one line on stderr.

One rule for every primitive: a cluster app whose explicitly configured server
does not answer at start-up does not start. The error is ``BackendUnavailable``
naming the setting to change (``MEGA_CLUSTER["LOCKS"]["OPTIONS"]["URL"]``), never
the URL itself (it can hold a password). After a start, an outage is each
primitive's business (reconnects, ``BackendUnavailable`` at the call).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings

from .exceptions import BackendUnavailable

NOT_INSTALLED = (
    "mega_cluster is used, but 'mega_cluster' is not in INSTALLED_APPS. Add "
    '"mega_cluster" to INSTALLED_APPS (above your plugin apps and "channels"), '
    "then run 'manage.py migrate'."
)

if TYPE_CHECKING:
    from .registry import ClusterApp

#: manager attribute -> the settings section of its backend.
SECTIONS = {
    "lock_manager": "LOCKS",
    "pubsub_manager": "PUBSUB",
    "sync_message_manager": "PUBSUB",
    "event_queue": "EVENT_QUEUE",
}
#: The option that says where a backend's server is, in the order looked for.
WHERE = ("URL", "BROKER_URL", "SENTINELS", "CACHE", "APP", "DATABASE")
PROCESS_LOCAL = ("memory", "local")


def setting_path(app: ClusterApp, section: str, option: str | None = None) -> str:
    """``MEGA_CLUSTER["LOCKS"]["OPTIONS"]["URL"]`` (with ``["APPS"]["name"]`` when
    the setting has several apps and the section is the app's own)."""
    raw = getattr(django_settings, "MEGA_CLUSTER", None) or {}
    base = "MEGA_CLUSTER"
    if isinstance(raw, dict) and "APPS" in raw and section in app.settings.raw:
        base += f'["APPS"]["{app.name}"]'
    backend = app.settings.sections[section].backend
    if option is None and backend is not None:
        option = next((k for k in WHERE if backend.options.get(k)), None)
    if option is None:
        return f'{base}["{section}"]'
    return f'{base}["{section}"]["OPTIONS"]["{option}"]'


def unreachable(app: ClusterApp, attr: str, exc: BaseException) -> BackendUnavailable:
    """The start-up error for the server behind ``attr`` (``"lock_manager"``...)."""
    section = SECTIONS[attr]
    backend = app.settings.sections[section].backend
    label = (backend.alias or backend.path) if backend is not None else "?"
    return BackendUnavailable(
        f"cluster app {app.name!r} cannot start: its {section} server ({label} "
        f"backend) does not answer ({type(exc).__name__}). Start that server, or "
        f"fix {setting_path(app, section)}."
    )


def check_servers(app: ClusterApp) -> None:
    """Ping the server of every explicitly configured, shared backend of ``app``.

    Raises the ``unreachable()`` error for the first that does not answer. A
    manager built only for the ping is dropped again (nothing else starts).
    """
    for attr in ("lock_manager", "pubsub_manager", "event_queue"):
        backend = app.settings.sections[SECTIONS[attr]].backend
        if backend is None or not backend.explicit or backend.alias in PROCESS_LOCAL:
            continue
        built = attr in app.built_components()
        component = app.component(attr)
        try:
            _ping(component.backend)
        except Exception as exc:
            raise unreachable(app, attr, exc) from exc
        finally:
            if not built:
                app.discard_component(attr)


def _ping(backend: Any) -> None:
    broker = getattr(backend, "broker", None)
    celery = getattr(broker, "celery", None)
    if celery is not None:  # the celery event queue's server is its broker
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
        return
    backend.ping()


def announce(
    app: ClusterApp, *, error: BaseException | None = None, serving: bool = True
) -> None:
    """Say on stderr that ``app`` started (node id, role, plugins) or why not.

    Printed, not only logged: a process without LOGGING configured shows it too.
    ``serving=False``: a shell or script started it on first use.
    """
    if error is not None:
        line = (
            f"mega_cluster: cluster app {app.name!r} failed to start on node "
            f"{app.node_id}: {app.start_error or error}"
        )
    else:
        built = app.built_components()
        role = getattr(built.get("node_registry"), "role", "web")
        if not serving:
            role = "shell or script"
        if not getattr(built.get("event_queue"), "consume", True):
            role += ", not consuming events"
        line = (
            f"mega_cluster: cluster app {app.name!r} started on node {app.node_id} "
            f"({role}, pid {os.getpid()}), plugins: "
            f"{', '.join(app.plugins) or 'none'}"
        )
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed or detached stderr
        pass
