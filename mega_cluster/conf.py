"""The ``MEGA_CLUSTER`` setting: parsing, defaults and backend resolution.

Two shapes are accepted::

    MEGA_CLUSTER = {"APP_NAME": "main", "PUBSUB": {...}, "LOCKS": {...}, ...}

    MEGA_CLUSTER = {
        "PUBSUB": {...},                      # shared defaults for every app
        "APPS": {"main": {...}, "admin": {"LOCKS": {...}}},
    }

With no ``MEGA_CLUSTER`` at all one app named ``"main"`` runs on the embedded
defaults: memory pub/sub, local locks, the database event queue and Django's
``default`` cache. Parsing never connects to anything; problems are collected as
:class:`SettingsProblem` values that :mod:`mega_cluster.checks` turns into Django
system check messages, and :func:`get_settings` raises ``ConfigurationError`` for
the first error when the registry is used with a broken configuration.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from .conf_keys import APP_KEYS, SECTION_KEYS, SECTIONS, OptionError
from .exceptions import ConfigurationError

SETTING_NAME = "MEGA_CLUSTER"
DEFAULT_APP_NAME = "main"
APP_NAME_RE = re.compile(r"\A[A-Za-z0-9_-]{1,50}\Z")  # \Z: no trailing newline

#: Short backend names per primitive section.
BACKEND_ALIASES: dict[str, dict[str, str]] = {
    "PUBSUB": {
        "memory": "mega_cluster.pubsub.backends.memory.MemoryPubSubBackend",
        "redis": "mega_cluster.pubsub.backends.redis.RedisPubSubBackend",
        "nats": "mega_cluster.pubsub.backends.nats.NatsPubSubBackend",
        "channels": "mega_cluster.pubsub.backends.channels.ChannelsPubSubBackend",
    },
    "LOCKS": {
        "local": "mega_cluster.locks.backends.local.LocalLockBackend",
        "redis": "mega_cluster.locks.backends.redis.RedisLockBackend",
        "database": "mega_cluster.locks.backends.database.DatabaseLockBackend",
    },
    "EVENT_QUEUE": {
        "memory": "mega_cluster.events.backends.memory.MemoryEventBackend",
        "database": "mega_cluster.events.backends.database.DatabaseEventBackend",
        "celery": "mega_cluster.events.backends.celery.CeleryEventBackend",
    },
}

#: The embedded defaults, used for a section that is not configured.
DEFAULT_BACKENDS = {"PUBSUB": "memory", "LOCKS": "local", "EVENT_QUEUE": "database"}


# Parsed values --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    """One primitive's backend choice for one app."""

    section: str
    alias: str | None
    path: str
    options: Mapping[str, Any]
    explicit: bool

    def load_class(self) -> type:
        """Import the backend class (raises ``ConfigurationError`` with the reason)."""
        try:
            return import_string(self.path)
        except ImportError as exc:
            raise ConfigurationError(
                f"MEGA_CLUSTER {self.section} BACKEND {self.path!r} cannot be imported: "
                f"{exc}"
            ) from exc


@dataclass(frozen=True, kw_only=True)
class SectionSettings:
    """A primitive section: backend (where it has one) plus its typed keys."""

    name: str
    backend: BackendSettings | None
    values: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    """Everything one cluster app needs, parsed and typed."""

    name: str
    sections: Mapping[str, SectionSettings]
    values: Mapping[str, Any]
    plugins: tuple[str, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pubsub(self) -> SectionSettings:
        return self.sections["PUBSUB"]

    @property
    def locks(self) -> SectionSettings:
        return self.sections["LOCKS"]

    @property
    def event_queue(self) -> SectionSettings:
        return self.sections["EVENT_QUEUE"]

    @property
    def outbox(self) -> SectionSettings:
        return self.sections["OUTBOX"]

    @property
    def cache(self) -> SectionSettings:
        return self.sections["CACHE"]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


@dataclass(frozen=True, kw_only=True)
class SettingsProblem:
    """One thing wrong with the setting; ``level`` is ``"error"`` or ``"warning"``."""

    id: str
    msg: str
    hint: str
    level: str = "error"


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    apps: Mapping[str, AppSettings]
    problems: tuple[SettingsProblem, ...]
    configured: bool

    def raise_for_errors(self) -> None:
        for problem in self.problems:
            if problem.level == "error":
                raise ConfigurationError(f"{problem.msg} {problem.hint}".strip())


# Parsing ------------------------------------------------------------------------


def _resolve_backend(
    section: str, raw: Any, problems: list[SettingsProblem], where: str
) -> BackendSettings | None:
    if section not in BACKEND_ALIASES:
        return None
    explicit = raw is not None and "BACKEND" in raw
    name = raw.get("BACKEND") if explicit else DEFAULT_BACKENDS[section]
    options = (raw or {}).get("OPTIONS", {}) or {}
    if not isinstance(options, Mapping):
        problems.append(
            SettingsProblem(
                id="mega_cluster.E004",
                msg=f"{where}{section} OPTIONS must be a dict, got {options!r}.",
                hint="Write OPTIONS as a dict of option names to values.",
            )
        )
        options = {}
    aliases = BACKEND_ALIASES[section]
    if not isinstance(name, str) or not name:
        problems.append(
            SettingsProblem(
                id="mega_cluster.E002",
                msg=f"{where}{section} BACKEND must be a string, got {name!r}.",
                hint=f"Use one of {', '.join(aliases)} or a dotted path to a class.",
            )
        )
        return None
    if name in aliases:
        path, alias = aliases[name], name
    elif "." in name:
        path, alias = name, None
    else:
        problems.append(
            SettingsProblem(
                id="mega_cluster.E002",
                msg=f"{where}{section} BACKEND {name!r} is not a known backend.",
                hint=f"Use one of {', '.join(aliases)} or a dotted path to a class.",
            )
        )
        return None
    return BackendSettings(
        section=section,
        alias=alias,
        path=path,
        options=dict(options),
        explicit=explicit,
    )


def _parse_keys(
    keys: Mapping[str, tuple[Callable[[Any], Any], Any]],
    raw: Mapping[str, Any],
    base: Mapping[str, Any],
    problems: list[SettingsProblem],
    where: str,
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, (parse, default) in keys.items():
        if key in raw:
            try:
                values[key] = parse(raw[key])
            except OptionError as exc:
                problems.append(
                    SettingsProblem(
                        id="mega_cluster.E005",
                        msg=f"{where}{key}: {exc}.",
                        hint=f"Set {key} to a valid value or remove it "
                        f"(default {default!r}).",
                    )
                )
                values[key] = base.get(key, default)
        else:
            values[key] = base.get(key, default)
    return values


def _unknown_keys(
    raw: Mapping[str, Any],
    allowed: set[str],
    problems: list[SettingsProblem],
    where: str,
) -> None:
    for key in raw:
        if key not in allowed:
            problems.append(
                SettingsProblem(
                    id="mega_cluster.E006",
                    msg=f"{where}unknown key {key!r}.",
                    hint=f"Allowed keys here: {', '.join(sorted(allowed))}.",
                )
            )


def parse_app(
    name: str,
    raw: Mapping[str, Any] | None,
    *,
    defaults: Mapping[str, Any] | None = None,
    problems: list[SettingsProblem] | None = None,
) -> AppSettings:
    """Parse one app's settings (``defaults`` holds shared top-level sections)."""
    problems = [] if problems is None else problems
    raw = dict(raw or {})
    defaults = dict(defaults or {})
    where = f"MEGA_CLUSTER app {name!r}: "
    if not isinstance(name, str) or not APP_NAME_RE.fullmatch(name):
        problems.append(
            SettingsProblem(
                id="mega_cluster.E003",
                msg=f"App name {name!r} is not valid.",
                hint="Use 1-50 characters of letters, digits, '_' and '-'.",
            )
        )
    allowed = {*SECTIONS, *APP_KEYS, "APP_NAME", "PLUGINS"}
    _unknown_keys(raw, allowed, problems, where)
    sections: dict[str, SectionSettings] = {}
    for section in SECTIONS:
        sect_raw = raw.get(section, defaults.get(section))
        if sect_raw is not None and not isinstance(sect_raw, Mapping):
            problems.append(
                SettingsProblem(
                    id="mega_cluster.E004",
                    msg=f"{where}{section} must be a dict, got {sect_raw!r}.",
                    hint=f"Write {section} as a dict, e.g. {{'BACKEND': '...'}}.",
                )
            )
            sect_raw = None
        sect_raw = dict(sect_raw or {})
        allowed_keys = set(SECTION_KEYS[section])
        if section in BACKEND_ALIASES:
            allowed_keys |= {"BACKEND", "OPTIONS"}
        _unknown_keys(sect_raw, allowed_keys, problems, f"{where}{section}: ")
        sections[section] = SectionSettings(
            name=section,
            backend=_resolve_backend(section, sect_raw or None, problems, where),
            values=_parse_keys(
                SECTION_KEYS[section], sect_raw, {}, problems, f"{where}{section} "
            ),
        )
    app_values = _parse_keys(
        APP_KEYS, raw, _parse_keys(APP_KEYS, defaults, {}, [], ""), problems, where
    )
    plugins = raw.get("PLUGINS")
    if plugins is not None and (
        not isinstance(plugins, list | tuple)
        or not all(isinstance(p, str) for p in plugins)
    ):
        problems.append(
            SettingsProblem(
                id="mega_cluster.E005",
                msg=f"{where}PLUGINS must be a list of app labels, got {plugins!r}.",
                hint="List the app labels of the plugins this cluster app loads.",
            )
        )
        plugins = None
    return AppSettings(
        name=name,
        sections=sections,
        values=app_values,
        plugins=tuple(plugins) if plugins is not None else None,
        raw=raw,
    )


def parse(raw: Any) -> ClusterSettings:
    """Parse a whole ``MEGA_CLUSTER`` value (``None`` means not set)."""
    problems: list[SettingsProblem] = []
    if raw is None:
        app = parse_app(DEFAULT_APP_NAME, {}, problems=problems)
        return ClusterSettings(
            apps={app.name: app}, problems=tuple(problems), configured=False
        )
    if not isinstance(raw, Mapping):
        problems.append(
            SettingsProblem(
                id="mega_cluster.E001",
                msg=f"MEGA_CLUSTER must be a dict, got {type(raw).__name__}.",
                hint="See docs/settings.md for the shape of the setting.",
            )
        )
        app = parse_app(DEFAULT_APP_NAME, {}, problems=[])
        return ClusterSettings(
            apps={app.name: app}, problems=tuple(problems), configured=True
        )
    apps: dict[str, AppSettings] = {}
    if "APPS" in raw:
        _unknown_keys(raw, {"APPS", *SECTIONS, *APP_KEYS}, problems, "MEGA_CLUSTER: ")
        entries = raw["APPS"]
        if not isinstance(entries, Mapping) or not entries:
            problems.append(
                SettingsProblem(
                    id="mega_cluster.E001",
                    msg="MEGA_CLUSTER APPS must be a non-empty dict of app name to "
                    "settings.",
                    hint='Example: "APPS": {"main": {}, "admin": {"LOCKS": {...}}}.',
                )
            )
            entries = {DEFAULT_APP_NAME: {}}
        shared = {k: v for k, v in raw.items() if k != "APPS"}
        for name, app_raw in entries.items():
            if app_raw is not None and not isinstance(app_raw, Mapping):
                problems.append(
                    SettingsProblem(
                        id="mega_cluster.E001",
                        msg=f"MEGA_CLUSTER APPS[{name!r}] must be a dict.",
                        hint="Give each app a dict of settings (may be empty).",
                    )
                )
                app_raw = {}
            app_raw = dict(app_raw or {})
            if "APP_NAME" in app_raw and app_raw["APP_NAME"] != name:
                problems.append(
                    SettingsProblem(
                        id="mega_cluster.E003",
                        msg=f"MEGA_CLUSTER APPS[{name!r}] has APP_NAME "
                        f"{app_raw['APP_NAME']!r}.",
                        hint="Inside APPS the key is the app name; drop APP_NAME.",
                    )
                )
            apps[name] = parse_app(name, app_raw, defaults=shared, problems=problems)
    else:
        name = raw.get("APP_NAME", DEFAULT_APP_NAME)
        apps[name] = parse_app(name, raw, problems=problems)
    return ClusterSettings(apps=apps, problems=tuple(problems), configured=True)


@cache
def get_settings() -> ClusterSettings:
    """The parsed setting of the current Django settings (cached until it changes)."""
    return parse(getattr(django_settings, SETTING_NAME, None))


def clear_cache() -> None:
    get_settings.cache_clear()


def missing_modules(backend_class: type) -> list[tuple[str, str]]:
    """``(module, pip extra)`` pairs a backend class needs that are not installed."""
    needed = getattr(backend_class, "requires", ())
    return [
        (mod, extra) for mod, extra in needed if importlib.util.find_spec(mod) is None
    ]
