"""What a periodic job is: its name, what it runs, when, and its policies.

Nothing here touches the database or the registry (the setting parser imports
it): :class:`Job` is a frozen value and :func:`job_options` the one validator of
the options every way of declaring a job shares (settings, ``@periodic``, a
plugin's ``schedules`` attribute, a task).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .cron import Cron, CronError

UTC = dt.UTC
NAME_RE = re.compile(r"\A[A-Za-z0-9_.:-]{1,150}\Z")
MISSED = ("skip", "latest")
#: The options of a job, lower-case (``periodic()``, a plugin's ``schedules``);
#: the setting spells them upper-case.
OPTIONS = (
    "every",
    "cron",
    "timezone",
    "missed",
    "grace",
    "overlap",
    "jitter",
    "max_retries",
    "timeout",
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
#: Retries of a run by default: a run lost with its node counts as an attempt
#: (as for every event), so 0 would dead-letter it instead of running it again.
DEFAULT_RETRIES = 3
#: The longest ``every``: a bit more than a year.
MAX_EVERY = 400 * 86400


class JobError(ValueError):
    """A periodic job declared with a bad name or option."""


def _seconds(name: str, value: Any, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise JobError(
            f"{name} must be between {low:g} and {high:g} seconds, got {value!r}"
        )
    return float(value)


def job_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated options (defaults filled in); ``JobError`` saying what is wrong."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise JobError(f"unknown option {unknown[0]!r} (options: {', '.join(OPTIONS)})")
    every, cron = options.get("every"), options.get("cron")
    if (every is None) == (cron is None):
        raise JobError("give exactly one of every= (seconds) or cron= (an expression)")
    result: dict[str, Any] = {"every": None, "cron": None}
    if every is not None:
        if (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or every != int(every)
        ):
            raise JobError(f"every must be a whole number of seconds, got {every!r}")
        if not 1 <= every <= MAX_EVERY:
            raise JobError(
                f"every must be between 1 and {MAX_EVERY} seconds, got {every!r}"
            )
        result["every"] = int(every)
        if options.get("timezone") is not None:
            raise JobError(
                "timezone applies to cron= only (every= counts real seconds)"
            )
    else:
        try:
            result["cron"] = Cron(str(cron), options.get("timezone") or "UTC")
        except CronError as exc:
            raise JobError(f"cron: {exc}") from None
    missed = options.get("missed", "skip")
    if missed not in MISSED:
        raise JobError(f"missed must be one of {', '.join(MISSED)}, got {missed!r}")
    result["missed"] = missed
    result["grace"] = _seconds(
        "grace", options.get("grace", 60.0), low=0, high=MAX_EVERY
    )
    overlap = options.get("overlap", True)
    if not isinstance(overlap, bool):
        raise JobError(f"overlap must be True or False, got {overlap!r}")
    result["overlap"] = overlap
    result["jitter"] = _seconds("jitter", options.get("jitter", 0.0), low=0, high=3600)
    retries = options.get("max_retries", DEFAULT_RETRIES)
    if (
        isinstance(retries, bool)
        or not isinstance(retries, int)
        or not 0 <= retries <= 1000
    ):
        raise JobError(f"max_retries must be a whole number 0-1000, got {retries!r}")
    result["max_retries"] = retries
    timeout = options.get("timeout")
    result["timeout"] = (
        None
        if timeout is None
        else _seconds("timeout", timeout, low=0.001, high=MAX_EVERY)
    )
    return result


def job_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise JobError(
            f"a job name is 1-150 characters of A-Z a-z 0-9 _ . : -, got {name!r}"
        )
    return name


@dataclass(frozen=True, kw_only=True)
class Job:
    """A periodic job of a cluster app.

    ``func`` is called with one argument, a :class:`~.runs.JobRun`. ``every``
    (whole seconds, ticks aligned on the Unix epoch, so every node computes the
    same ticks) or ``cron`` (a :class:`~.cron.Cron` in its time zone) says when.
    """

    name: str
    func: Callable[..., Any] = field(compare=False)
    every: int | None = None
    cron: Cron | None = field(default=None, compare=False)
    missed: str = "skip"
    grace: float = 60.0
    overlap: bool = True
    jitter: float = 0.0
    max_retries: int = DEFAULT_RETRIES
    timeout: float | None = None
    #: Where it was declared: ``settings``, ``plugin <name>``, ``task <name>``.
    source: str = "settings"
    #: The plugin whose job it is (it is skipped while the plugin is disabled).
    plugin: str | None = None
    #: A ``django.tasks`` Task: each tick enqueues it (its backend runs it).
    task: Any = field(default=None, compare=False)

    @property
    def channel(self) -> str:
        """The event-queue channel its runs go through."""
        return f"mc.schedule.{self.name}"

    @property
    def schedule(self) -> str:
        """The schedule as people read it: ``every 60s`` or the cron and zone."""
        if self.cron is not None:
            return f"cron {self.cron.expression} ({self.cron.tz})"
        return f"every {self.every}s"

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``when`` (UTC)."""
        if self.cron is not None:
            return self.cron.next_after(when)
        assert self.every is not None
        seconds = (when - _EPOCH) // dt.timedelta(seconds=1)
        return _EPOCH + dt.timedelta(seconds=(seconds // self.every + 1) * self.every)

    def ticks(self, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
        """The ticks in ``(after, until]``, oldest first."""
        tick = self.next_after(after)
        while tick <= until:
            yield tick
            tick = self.next_after(tick)

    def latest(self, until: dt.datetime, after: dt.datetime) -> dt.datetime | None:
        """The last tick in ``(after, until]``, or None."""
        if self.cron is None:
            assert self.every is not None
            last = self.next_after(until - dt.timedelta(seconds=self.every))
            return last if after < last <= until else None
        window = dt.timedelta(hours=1)
        while True:
            start = max(after, until - window)
            found = None
            for found in self.ticks(start, until):  # noqa: B007 - the last one
                pass
            if found is not None or start == after:
                return found
            window *= 4

    def offset(self, tick: dt.datetime) -> float:
        """This tick's jitter: the same on every node (a hash of job and tick)."""
        if not self.jitter:
            return 0.0
        digest = hashlib.blake2b(
            f"{self.name}@{tick.isoformat()}".encode(), digest_size=8
        )
        return int.from_bytes(digest.digest()) / 2**64 * self.jitter


@dataclass(frozen=True, kw_only=True)
class Declared:
    """A job as the setting declares it: the dotted path of what it runs."""

    name: str
    function: str
    options: Mapping[str, Any]
    #: ``function`` names a ``django.tasks`` Task (``TASK``), not a function.
    task: bool = False


def parse_jobs(value: Any) -> dict[str, Declared]:
    """``SCHEDULES["JOBS"]``: ``{name: {"FUNCTION": "dotted.path", "EVERY": 60,
    ...}}``; raises ``JobError`` naming the job and the key that is wrong."""
    if not isinstance(value, Mapping):
        raise JobError(f"expected a dict of job name to job settings, got {value!r}")
    jobs: dict[str, Declared] = {}
    for name, spec in value.items():
        try:
            job_name(name)
        except JobError as exc:
            raise JobError(f"job {name!r}: {exc}") from None
        if not isinstance(spec, Mapping):
            raise JobError(f"job {name!r}: expected a dict, got {spec!r}")
        if ("FUNCTION" in spec) == ("TASK" in spec):
            raise JobError(
                f"job {name!r}: give FUNCTION (the dotted path of a function) or "
                "TASK (of a django.tasks task), not both or neither"
            )
        key_name = "FUNCTION" if "FUNCTION" in spec else "TASK"
        function = spec[key_name]
        if not isinstance(function, str) or "." not in function:
            raise JobError(
                f"job {name!r}: {key_name} must be a dotted path, got {function!r}"
            )
        lower = {}
        for key, option in spec.items():
            if key in ("FUNCTION", "TASK"):
                continue
            if not isinstance(key, str) or key != key.upper():
                raise JobError(f"job {name!r}: keys are upper-case, got {key!r}")
            lower[key.lower()] = option
        try:
            job_options(lower)
        except JobError as exc:
            raise JobError(f"job {name!r}: {_upper(exc)}") from None
        jobs[name] = Declared(
            name=name, function=function, options=lower, task=key_name == "TASK"
        )
    return jobs


def _upper(exc: JobError) -> str:
    """The message with option names as the setting spells them (``EVERY``)."""
    text = str(exc)
    for option in OPTIONS:
        text = re.sub(rf"\b{option}\b(?==| must| applies|:)", option.upper(), text)
    return text


@dataclass(frozen=True, kw_only=True)
class PeriodicSpec:
    """What ``@periodic`` puts on a plugin method (``name`` None: the default)."""

    name: str | None
    options: Mapping[str, Any]


#: The attribute ``@periodic`` sets on the function it decorates.
SPEC_ATTRIBUTE = "periodic_spec"
#: ``django.tasks`` tasks made periodic with ``@periodic``: job name -> (task, spec).
TASK_JOBS: dict[str, tuple[Any, PeriodicSpec]] = {}


def is_task(value: Any) -> bool:
    """Whether ``value`` is a ``django.tasks`` Task (duck-typed: Django < 6 has none)."""
    return all(hasattr(value, a) for a in ("enqueue", "module_path", "get_backend"))


def periodic(
    *, name: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a plugin method, or a ``django.tasks`` task of a ``mega_cluster.tasks``
    backend (above ``@task``), a periodic job: ``@periodic(every=300)``,
    ``@periodic(cron="0 7 * * mon-fri", timezone="Europe/Paris")``.

    Options: ``every`` (whole seconds) or ``cron`` (5 fields) with ``timezone``;
    ``missed`` (``"skip"`` or ``"latest"``), ``grace`` (seconds, default 60),
    ``overlap`` (False: skip a tick while the previous run still runs),
    ``jitter`` (seconds), ``max_retries``, ``timeout``. The job's name is
    ``<plugin name>.<method name>`` (a task's: its ``module_path``) unless
    ``name`` is given. The method is called with one argument, a ``JobRun``; a
    task is enqueued with no arguments at each tick. Raises ``JobError`` (a
    ``ValueError``) at once for a bad option.
    """
    if name is not None:
        job_name(name)
    job_options(options)  # fail at the decorator, not at start-up

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        spec = PeriodicSpec(name=name, options=dict(options))
        if is_task(func):  # a frozen dataclass: noted here, found by discovery
            TASK_JOBS[name or func.module_path] = (func, spec)  # type: ignore[attr-defined]
            return func
        if not callable(func):
            raise TypeError(f"@periodic decorates a function or a task, got {func!r}")
        setattr(func, SPEC_ATTRIBUTE, spec)
        return func

    return decorate
