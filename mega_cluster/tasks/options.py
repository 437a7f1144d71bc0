"""The ``OPTIONS`` of a ``mega_cluster.tasks`` backend, parsed once.

Problems are collected, not raised: the backend's ``check()`` reports them (with
the framework's other checks) and ``enqueue()`` refuses to run with any.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import InvalidName
from .channels import DEFAULT_CHANNEL_PREFIX, queue_channel

KNOWN = ("APP", "CHANNEL_PREFIX", "MAX_RETRIES", "CONCURRENCY", "PRIORITY_STEP")

#: Seconds of head start per priority point (docs/tasks.md, "Priority").
DEFAULT_PRIORITY_STEP = 0.01


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    #: The cluster app (``None``: the only one).
    app: str | None = None
    channel_prefix: str = DEFAULT_CHANNEL_PREFIX
    #: Retries of a task that sets none (``@task(max_retries=...)``).
    max_retries: int = 0
    #: Tasks of one queue run at once per worker process (0: unlimited).
    concurrency: int = 4
    priority_step: float = DEFAULT_PRIORITY_STEP
    problems: list[str] = field(default_factory=list)


def _whole(value: Any, low: int) -> bool:
    return type(value) is int and low <= value <= 2**31 - 1


def parse_options(options: Mapping[str, Any]) -> TaskOptions:
    problems: list[str] = []
    if not isinstance(options, Mapping):
        return TaskOptions(problems=[f"OPTIONS must be a dict, got {options!r}."])
    unknown = sorted(set(options) - set(KNOWN))
    if unknown:
        problems.append(
            f"unknown OPTIONS {', '.join(map(repr, unknown))} (known: "
            f"{', '.join(KNOWN)})."
        )
    values: dict[str, Any] = {}
    app = options.get("APP")
    if app is not None and not isinstance(app, str):
        problems.append(f"OPTIONS['APP'] must be a cluster app name, got {app!r}.")
    else:
        values["app"] = app
    prefix = options.get("CHANNEL_PREFIX", DEFAULT_CHANNEL_PREFIX)
    try:
        queue_channel("default", prefix if isinstance(prefix, str) else "")
        if not isinstance(prefix, str):
            raise InvalidName("not a string")
        values["channel_prefix"] = prefix
    except InvalidName:
        problems.append(
            f"OPTIONS['CHANNEL_PREFIX'] must be a string of letters, digits and "
            f"_ . : - (a channel name's start), got {prefix!r}."
        )
    for key, low in (("MAX_RETRIES", 0), ("CONCURRENCY", 0)):
        if key in options:
            if _whole(options[key], low):
                values[key.lower()] = options[key]
            else:
                problems.append(
                    f"OPTIONS[{key!r}] must be a whole number from {low} to "
                    f"{2**31 - 1}, got {options[key]!r}."
                )
    if "PRIORITY_STEP" in options:
        step = options["PRIORITY_STEP"]
        if (
            isinstance(step, int | float)
            and not isinstance(step, bool)
            and math.isfinite(step)
            and 0 <= step <= 3600
        ):
            values["priority_step"] = float(step)
        else:
            problems.append(
                "OPTIONS['PRIORITY_STEP'] must be a number of seconds from 0 to "
                f"3600, got {step!r}."
            )
    return TaskOptions(**values, problems=problems)
