"""System checks of the event queue's timing (ids in docs/checks.md)."""

from __future__ import annotations

from django.core.checks import CheckMessage, Warning

from .. import conf


def check_celery_timing(app: conf.AppSettings) -> list[CheckMessage]:
    """W007: with ``BOOKKEEPING = "failures"``, Redis' visibility timeout could hand a
    lean event to a second worker before its first lease renewal gave it a row (so
    nothing would stop the copy from running it at the same time).

    Only ``OPTIONS["TRANSPORT_OPTIONS"]`` is read; a Celery app passed as ``APP``
    keeps its own (docs/deployment.md)."""
    section = app.event_queue
    backend = section.backend
    if backend is None or backend.path != conf.BACKEND_ALIASES["EVENT_QUEUE"].get(
        "celery"
    ):
        return []
    options = backend.options
    if options.get("BOOKKEEPING", "all") != "failures":
        return []
    visibility = (options.get("TRANSPORT_OPTIONS") or {}).get("visibility_timeout")
    if (
        isinstance(visibility, bool)
        or not isinstance(visibility, int | float)
        or visibility > section["LEASE"] / 3
    ):
        return []
    return [
        Warning(
            f"MEGA_CLUSTER app {app.name!r} EVENT_QUEUE: the broker's "
            f"visibility_timeout ({visibility:g}s) is not longer than LEASE/3 "
            f"({section['LEASE'] / 3:g}s). With BOOKKEEPING 'failures' an event "
            "gets the row that stops a redelivered copy at its first lease "
            "renewal; a copy sent before that runs the event a second time at once.",
            hint="Raise TRANSPORT_OPTIONS['visibility_timeout'] above your longest "
            "handler (Celery's default is 3600 s), or lower LEASE.",
            id="mega_cluster.W007",
        )
    ]
