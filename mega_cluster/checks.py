"""Django system checks for the ``MEGA_CLUSTER`` setting (ids in docs/checks.md)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from . import conf

NON_SHARED_CACHE_BACKENDS = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


def _message(problem: conf.SettingsProblem) -> CheckMessage:
    cls = Error if problem.level == "error" else Warning
    return cls(problem.msg, hint=problem.hint, id=problem.id)


def _backend_messages(app: conf.AppSettings, debug: bool) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for section in app.sections.values():
        backend = section.backend
        if backend is None:
            continue
        where = f"MEGA_CLUSTER app {app.name!r} {section.name}"
        try:
            cls = backend.load_class()
        except conf.ConfigurationError as exc:
            messages.append(
                Error(
                    f"{where} BACKEND {backend.path!r} cannot be imported: "
                    f"{exc.__cause__ or exc}.",
                    hint="Check the dotted path, or use one of "
                    f"{', '.join(conf.BACKEND_ALIASES[section.name])}.",
                    id="mega_cluster.E010",
                )
            )
            continue
        missing = conf.missing_modules(cls)
        for module, extra in missing:
            messages.append(
                Error(
                    f"{where} BACKEND {backend.alias or backend.path!r} needs the "
                    f"Python package {module!r}, which is not installed.",
                    hint=f'pip install "mega-cluster[{extra}]"',
                    id="mega_cluster.E011",
                )
            )
        if missing:
            continue
        check_options = getattr(cls, "check_options", None)
        for problem in check_options(backend.options) if check_options else ():
            messages.append(
                Error(
                    f"{where}: {problem}",
                    hint=f"Set it in MEGA_CLUSTER {section.name} OPTIONS.",
                    id="mega_cluster.E012",
                )
            )
        if not debug and not getattr(cls, "cluster_safe", True):
            label = backend.alias or backend.path
            messages.append(
                Warning(
                    f"{where} uses the {label!r} backend, which works inside one "
                    "process only; with several web or worker processes it is not "
                    "cluster-safe.",
                    hint=f"Set MEGA_CLUSTER {section.name} BACKEND to a shared backend "
                    f"({_shared_aliases(section.name)}).",
                    id="mega_cluster.W001",
                )
            )
    return messages


#: (section, alias, option) -> the URL schemes that backend accepts. Redis URLs are
#: checked by the Redis backends' own ``check_options``.
URL_SCHEMES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("PUBSUB", "nats", "URL"): ("nats", "tls", "ws", "wss"),
}


def _url_messages(app: conf.AppSettings) -> list[CheckMessage]:
    """A server URL without a valid ``scheme://``: a check error now, not an
    "is the server running?" at start-up."""
    messages: list[CheckMessage] = []
    for section in app.sections.values():
        backend = section.backend
        if backend is None:
            continue
        for option in ("URL", "BROKER_URL"):
            value = backend.options.get(option)
            if not isinstance(value, str) or not value:
                continue
            schemes = URL_SCHEMES.get((section.name, backend.alias or "", option))
            if schemes is None and option == "BROKER_URL":
                schemes = _broker_schemes()
            if schemes is None:
                continue
            # sentinel://host:port,host:port/SERVICE (redis_client's shape) is one URL
            ours = value.startswith("sentinel://") and ";" not in value
            urls = [value] if ours else value.replace(";", ",").split(",")
            for url in filter(None, (u.strip() for u in urls)):
                scheme, sep, _ = url.partition("://")
                if sep and scheme.split("+")[0].lower() in schemes:
                    continue
                shown = f"{scheme}://" if sep else "no scheme"
                messages.append(
                    Error(
                        f"MEGA_CLUSTER app {app.name!r} {section.name}: "
                        f"OPTIONS[{option!r}] has {shown}; the "
                        f"{backend.alias or backend.path} backend needs a URL "
                        f"starting with {_listed(schemes)}.",
                        hint=f'Write MEGA_CLUSTER["{section.name}"]["OPTIONS"]'
                        f'["{option}"] as e.g. {schemes[0]}://host:port.',
                        id="mega_cluster.E012",
                    )
                )
                break
    return messages


def _listed(schemes: tuple[str, ...]) -> str:
    shown = ", ".join(f"{s}://" for s in schemes[:4])
    return f"{shown} or another Kombu transport" if len(schemes) > 4 else shown


def _broker_schemes() -> tuple[str, ...] | None:
    try:
        from kombu.transport import TRANSPORT_ALIASES
    except ImportError:  # Celery missing: E011 says so
        return None
    return tuple(
        sorted({a.lower() for a in TRANSPORT_ALIASES}, key=lambda a: a != "redis")
    )


def _shared_aliases(section: str) -> str:
    shared = {"PUBSUB": "redis, nats, channels", "LOCKS": "redis, database"}
    return shared.get(section, "database, celery")


def _cache_messages(app: conf.AppSettings, debug: bool) -> list[CheckMessage]:
    store = app.cache["DEFAULT_STORE"]
    caches: dict[str, Any] = getattr(settings, "CACHES", {}) or {}
    if store not in caches:
        return [
            Error(
                f"MEGA_CLUSTER app {app.name!r} CACHE DEFAULT_STORE {store!r} is not a "
                "CACHES alias.",
                hint=f"Use one of {', '.join(caches) or '(none defined)'} or add "
                f"{store!r} to CACHES.",
                id="mega_cluster.E013",
            )
        ]
    if not debug and caches[store].get("BACKEND") in NON_SHARED_CACHE_BACKENDS:
        return [
            Warning(
                f"MEGA_CLUSTER app {app.name!r} caches in CACHES[{store!r}] "
                f"({caches[store].get('BACKEND')}), which each process keeps to "
                "itself: a reset or a wrap on one node is not seen by the others.",
                hint="Point CACHE DEFAULT_STORE at a shared store such as "
                "django.core.cache.backends.redis.RedisCache or django-redis.",
                id="mega_cluster.W003",
            )
        ]
    return []


def _inbox_messages(app: conf.AppSettings) -> list[CheckMessage]:
    alias = app.sections["INBOX"]["DATABASE"]
    databases: dict[str, Any] = getattr(settings, "DATABASES", {}) or {}
    if alias in databases:
        return []
    return [
        Error(
            f"MEGA_CLUSTER app {app.name!r} INBOX DATABASE {alias!r} is not a "
            "DATABASES alias (the inbox of idempotent handlers lives there).",
            hint=f'Set MEGA_CLUSTER["INBOX"]["DATABASE"] to one of '
            f"{', '.join(databases) or '(none defined)'}: the database your "
            "idempotent handlers write to.",
            id="mega_cluster.E017",
        )
    ]


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem with ``MEGA_CLUSTER``: shape, backends, dependencies, options."""
    from .cache.checks import check_shared_caches
    from .events.checks import check_celery_timing
    from .locks.checks import check_listen_through_pooler
    from .nodes.checks import check_node_timing

    parsed = conf.parse(getattr(settings, conf.SETTING_NAME, None))
    messages = [_message(p) for p in parsed.problems]
    if any(p.level == "error" for p in parsed.problems):
        return messages
    debug = bool(settings.DEBUG)
    for app in parsed.apps.values():
        messages += _backend_messages(app, debug)
        messages += _url_messages(app)
        messages += _cache_messages(app, debug)
        messages += _inbox_messages(app)
        messages += check_shared_caches(app, debug)
        messages += check_node_timing(app)
        messages += check_celery_timing(app)
        messages += check_listen_through_pooler(app)
    return messages


@register(Tags.caches, deploy=True)
def check_redis_clusters(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E015: a one-server Redis client (a ``CACHES`` entry, a Redis LOCKS or PUBSUB
    section without ``CLUSTER``) pointed at a Redis Cluster node. Asks each server
    once (``INFO cluster``, 1 s timeout); a server that does not answer is skipped.
    A deployment check (``check --deploy``): a plain ``check``, as ``migrate`` and
    ``runserver`` run it, opens no connection."""
    from .redis_client.checks import check_cluster_clients

    parsed = conf.parse(getattr(settings, conf.SETTING_NAME, None))
    return check_cluster_clients(list(parsed.apps.values()))


@register(Tags.compatibility)
def check_installed_apps(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``mega_cluster`` must come before ``channels`` so our ``runworker`` wins."""
    names = [a.split(".apps.")[0] for a in settings.INSTALLED_APPS]
    if "channels" in names and "mega_cluster" in names:
        if names.index("channels") < names.index("mega_cluster"):
            return [
                Warning(
                    "'channels' is listed before 'mega_cluster' in INSTALLED_APPS, "
                    "so Channels' runworker command hides mega_cluster's.",
                    hint="Move 'mega_cluster' above 'channels' in INSTALLED_APPS; "
                    "mega_cluster's runworker still runs channel-layer workers when "
                    "given channel names.",
                    id="mega_cluster.W002",
                )
            ]
    return []


# Not Tags.database: Django runs those only with ``check --database``, and this one
# reads settings only (no query), so a plain ``manage.py check`` shows W006.
@register(Tags.compatibility)
def check_sqlite_transaction_mode(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """SQLite must begin transactions IMMEDIATE when mega_cluster writes beside them.

    Heartbeats, database locks and the database event queue write from background
    threads and other processes. A deferred SQLite transaction that reads and then
    writes cannot wait for them: it fails at once with "database is locked".
    """
    messages: list[CheckMessage] = []
    for alias, db in (getattr(settings, "DATABASES", {}) or {}).items():
        if "sqlite3" not in str(db.get("ENGINE", "")):
            continue
        mode = (db.get("OPTIONS") or {}).get("transaction_mode")
        if str(mode or "").upper() != "IMMEDIATE":
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite with transaction_mode "
                    f"{mode or 'DEFERRED'!s}: a transaction that reads and then "
                    "writes fails with 'database is locked' while mega_cluster "
                    "writes in the background (heartbeats, locks, events).",
                    hint=f'Add "transaction_mode": "IMMEDIATE" to DATABASES[{alias!r}]'
                    '["OPTIONS"] (and a "timeout" of a few seconds).',
                    id="mega_cluster.W006",
                )
            )
    return messages
