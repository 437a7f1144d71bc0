"""Kinds of task: what a task of a given ``kind`` runs. Register your own with
:func:`register`; the three built-in kinds drive the example project and demo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugin import TaskRun

TaskFunction = Callable[["TaskRun"], Any]
KINDS: dict[str, TaskFunction] = {}
VALIDATORS: dict[str, Callable[[dict[str, Any]], None]] = {}


def register(
    name: str, *, validate: Callable[[dict[str, Any]], None] | None = None
) -> Callable[[TaskFunction], TaskFunction]:
    """Decorator: tasks of kind ``name`` run the decorated ``fn(run)``.

    ``validate(params)`` raises ``ValueError`` for bad parameters when the task
    is started (nothing queued). ``fn`` returns a JSON result.
    """

    def decorator(fn: TaskFunction) -> TaskFunction:
        KINDS[name] = fn
        if validate is not None:
            VALIDATORS[name] = validate
        return fn

    return decorator


def _number(params: dict[str, Any], key: str, default: float, low: float, high: float):
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low:g} and {high:g}, got {value!r}.")
    return value


def _check_count(params: dict[str, Any]) -> None:
    if isinstance(params.get("steps", 1), float):
        raise ValueError("steps must be an integer.")
    _number(params, "steps", 10, 1, 10_000)
    _number(params, "delay", 0.5, 0, 10)


@register("count", validate=_check_count)
def count(run: TaskRun) -> dict[str, int]:
    """Count to ``steps``, waiting ``delay`` seconds per step (cancellable)."""
    steps = int(run.params.get("steps", 10))
    delay = float(run.params.get("delay", 0.5))
    for step in range(1, steps + 1):
        run.sleep(delay)
        run.progress(step, steps, f"step {step} of {steps}")
    return {"counted": steps}


@register("flaky")
def flaky(run: TaskRun) -> dict[str, int]:
    """Fail the first ``fail_times`` attempts (default 1), then succeed."""
    fail_times = int(run.params.get("fail_times", 1))
    if run.attempt <= fail_times:
        raise RuntimeError(f"flaky task failed on attempt {run.attempt}")
    return {"succeeded_on_attempt": run.attempt}


@register("fail")
def fail(run: TaskRun) -> None:
    """Always fail (ends as a dead letter once the retries are spent)."""
    raise RuntimeError(str(run.params.get("error", "this task always fails")))
