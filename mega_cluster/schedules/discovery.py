"""Finding an app's jobs: the setting's, its plugins', and those added at run time."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .jobs import (
    SPEC_ATTRIBUTE,
    TASK_JOBS,
    Declared,
    Job,
    JobError,
    is_task,
    job_name,
    job_options,
)

if TYPE_CHECKING:
    from ..plugins.base import Plugin
    from ..registry import ClusterApp


def _job(name: str, func: Callable[..., Any], options: Any, **extra: Any) -> Job:
    return Job(name=name, func=func, **job_options(options), **extra)


def from_settings(app: ClusterApp) -> list[Job]:
    jobs: dict[str, Declared] = app.settings.sections["SCHEDULES"]["JOBS"]
    found = []
    for declared in jobs.values():
        where = f"MEGA_CLUSTER app {app.name!r} SCHEDULES JOBS[{declared.name!r}]"
        try:
            func = import_string(declared.function)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{where} FUNCTION {declared.function!r} cannot be imported: {exc}"
            ) from exc
        if declared.task:
            _check_task(func, f"{where} TASK {declared.function!r}")
            found.append(_task_job(declared.name, func, declared.options))
            continue
        if not callable(func):
            raise ImproperlyConfigured(
                f"{where} FUNCTION {declared.function!r} is not callable."
            )
        found.append(_job(declared.name, func, declared.options))
    return found


def _enqueued(run: Any) -> None:
    """A task job's function: never called (each tick enqueues the task)."""


def _task_job(name: str, task: Any, options: Any) -> Job:
    return _job(name, _enqueued, options, source=f"task {task.module_path}", task=task)


def _check_task(task: Any, where: str) -> None:
    from ..tasks import channel_for

    if not is_task(task):
        raise ImproperlyConfigured(f"{where} is not a django.tasks task.")
    try:
        channel_for(task)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from None


def _task_app(task: Any) -> str | None:
    from ..registry import registry

    name = task.get_backend().settings.app
    try:
        return registry.get(name).name
    except Exception:
        return name


def from_tasks(app: ClusterApp) -> list[Job]:
    """Tasks made periodic with ``@periodic`` whose backend runs on ``app``; the
    ``tasks`` modules of the installed apps are imported first (as Celery does)."""
    from ..tasks.consume import cluster_backends

    if not cluster_backends():
        return []
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("tasks")
    found = []
    for name, (task, spec) in sorted(TASK_JOBS.items()):
        where = f"@periodic on task {task.module_path}"
        _check_task(task, where)
        if _task_app(task) != app.name:
            continue
        try:
            found.append(_task_job(job_name(name), task, spec.options))
        except JobError as exc:
            raise ImproperlyConfigured(f"{where}: {exc}") from None
    return found


def _plugin_method(plugin: Plugin, attr: str) -> Callable[..., Any]:
    # Looked up on each run: a test may patch the method, and the plugin's
    # instance is the one of this node.
    @functools.wraps(getattr(type(plugin), attr))
    def call(run: Any) -> Any:
        return getattr(plugin, attr)(run)

    return call


def from_plugin(plugin: Plugin) -> list[Job]:
    found = []
    where = f"plugin {plugin.name!r}"
    extra = {"source": f"plugin {plugin.name}", "plugin": plugin.name}
    seen: set[str] = set()
    for cls in type(plugin).__mro__:
        for attr, value in vars(cls).items():
            spec = getattr(value, SPEC_ATTRIBUTE, None)
            if spec is None or attr in seen:
                continue
            seen.add(attr)
            name = spec.name or f"{plugin.name}.{attr}"
            try:
                job_name(name)
            except JobError as exc:
                raise ImproperlyConfigured(
                    f"{where}: @periodic on {attr}(): {exc}; pass name=."
                ) from None
            found.append(
                _job(name, _plugin_method(plugin, attr), spec.options, **extra)
            )
    declared = getattr(type(plugin), "schedules", None) or {}
    for name, options in dict(declared).items():
        where_job = f"{where} schedules[{name!r}]"
        try:
            job_name(name)
            options = dict(options)
            method = options.pop("method", None)
            if not isinstance(method, str) or not callable(
                getattr(type(plugin), method, None)
            ):
                raise JobError(
                    f"'method' must name a method of the plugin, got {method!r}"
                )
            found.append(_job(name, _plugin_method(plugin, method), options, **extra))
        except (JobError, TypeError) as exc:
            raise ImproperlyConfigured(f"{where_job}: {exc}") from None
    return found


def collect(app: ClusterApp, extra: Iterable[Job]) -> dict[str, Job]:
    """Every job of ``app`` by name; ``ImproperlyConfigured`` for a bad one or a
    name declared twice."""
    jobs: dict[str, Job] = {}
    sources = [from_settings(app)]
    sources += [from_plugin(p) for p in app.plugins.values()]
    sources.append(from_tasks(app))
    sources.append(list(extra))
    for job in (job for source in sources for job in source):
        if job.name in jobs:
            raise ImproperlyConfigured(
                f"Periodic job {job.name!r} of cluster app {app.name!r} is declared "
                f"twice ({jobs[job.name].source} and {job.source}); rename one."
            )
        jobs[job.name] = job
    return jobs
