"""Pages that drive the example plugins (auth_policy, data_source, async_tasks) and
a lock, on whichever node serves the request.

Each page is HTML for people and JSON for scripts (``?format=json``, or a POST with
``Accept: application/json``): the cluster tests and ``./dev demo`` drive two web
nodes through them. Every response names the node that served it. These pages
change shared state without asking who you are: they are an example, keep them
out of a real project's URLs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from mega_cluster import get_app
from mega_cluster.exceptions import LockTimeout
from plugins.async_tasks.models import Task
from plugins.auth_policy.models import POLICY_FIELDS
from plugins.auth_policy.plugin import PolicyNotFound

MAX_HOLD = 60.0


def _plugin(name: str) -> Any:
    return get_app().plugins[name]


def _wants_json(request: HttpRequest) -> bool:
    return request.GET.get("format") == "json" or "application/json" in (
        request.headers.get("Accept", "")
    )


def _reply(
    request: HttpRequest, template: str, data: dict[str, Any], status: int = 200
) -> HttpResponse:
    data = {"node": get_app().node_id, **data}
    if _wants_json(request):
        return JsonResponse(data, status=status)
    return render(request, template, data, status=status)


def _done(
    request: HttpRequest, data: dict[str, Any], message: str, status: int = 200
) -> HttpResponse:
    """After a POST: JSON for scripts, else a flash message and a redirect."""
    if _wants_json(request):
        return JsonResponse({"node": get_app().node_id, **data}, status=status)
    level = messages.SUCCESS if status < 400 else messages.ERROR
    messages.add_message(request, level, message)
    return redirect(request.path)


def _error(request: HttpRequest, exc: Exception, status: int = 400) -> HttpResponse:
    text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    return _done(request, {"error": text}, text, status=status)


def _number(request: HttpRequest, key: str, kind: type = int) -> Any:
    raw = request.POST.get(key, "")
    try:
        return kind(raw)
    except ValueError:
        raise ValidationError(f"{key} must be a number, got {raw!r}.") from None


# auth_policy -----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def auth_policy(request: HttpRequest) -> HttpResponse:
    plugin = _plugin("auth_policy")
    if request.method == "POST":
        try:
            values = {
                f: _number(request, f)
                for f in ("token_expires_in", "session_expires_in", "renew_window")
                if request.POST.get(f, "") != ""
            }
            policy = plugin.update_policy(**values)
        except (ValidationError, TypeError) as exc:
            return _error(request, exc)
        return _done(request, {"policy": policy}, "Policy saved on every node.")
    started = time.perf_counter()
    try:
        policy = plugin.policy()
    except PolicyNotFound:  # install() has not run on this database yet
        policy = {"name": "default", **POLICY_FIELDS, "updated_at": None}
    elapsed = time.perf_counter() - started
    return _reply(
        request,
        "plugins/auth_policy.html",
        {"policy": policy, "read_ms": round(elapsed * 1000, 2)},
    )


# data_source -----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def data_source(request: HttpRequest) -> HttpResponse:
    plugin = _plugin("data_source")
    if request.method == "POST":
        action = request.POST.get("action", "")
        collection = request.POST.get("collection", "").strip()
        field = request.POST.get("field", "").strip()
        try:
            if action == "create_collection":
                data = plugin.create_collection(
                    collection, request.POST.get("title", "")
                )
                return _done(request, {"collection": data}, f"Created {collection}.")
            if action == "update_collection":
                data = plugin.update_collection(
                    collection, title=request.POST.get("title", "")
                )
                return _done(request, {"collection": data}, f"Renamed {collection}.")
            if action == "delete_collection":
                deleted = plugin.delete_collection(collection)
                return _done(
                    request,
                    {"deleted": deleted},
                    f"Deleted {collection}."
                    if deleted
                    else f"{collection} was already gone.",
                )
            if action == "add_field":
                data = plugin.add_field(
                    collection, field, request.POST.get("type", "string")
                )
                return _done(request, {"field": data}, f"Added {collection}.{field}.")
            if action == "remove_field":
                removed = plugin.remove_field(collection, field)
                return _done(
                    request,
                    {"removed": removed},
                    f"Removed {collection}.{field}."
                    if removed
                    else f"{collection}.{field} was already removed by another node.",
                )
        except (ValidationError, LookupError, ValueError, LockTimeout) as exc:
            return _error(request, exc, 409 if isinstance(exc, LockTimeout) else 400)
        return _error(request, ValueError(f"Unknown action {action!r}."))
    return _reply(
        request,
        "plugins/data_source.html",
        {"schema": plugin.schema, "reloads": plugin.reloads},
    )


# async_tasks -----------------------------------------------------------------------


def _task(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.pk),
        "kind": task.kind,
        "params": task.params,
        "status": task.status,
        "progress": [task.progress_done, task.progress_total],
        "percent": task.percent,
        "message": task.message,
        "attempts": task.attempts,
        "node_id": task.node_id,
        "error": task.error,
        "result": task.result,
    }


@require_http_methods(["GET", "POST"])
def tasks(request: HttpRequest) -> HttpResponse:
    plugin = _plugin("async_tasks")
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "start":
                params = {}
                for key, kind in (("steps", int), ("delay", float)):
                    if request.POST.get(key, "") != "":
                        params[key] = _number(request, key, kind)
                task = plugin.start_task(
                    request.POST.get("kind", "count"),
                    params,
                    max_retries=_number(request, "max_retries")
                    if request.POST.get("max_retries")
                    else 0,
                )
                return _done(request, {"task": _task(task)}, f"Started task {task.pk}.")
            if action == "cancel":
                status = plugin.cancel(request.POST.get("task", ""))
                return _done(request, {"status": status}, f"Task is now {status}.")
            if action in ("pause", "resume"):
                plugin.set_paused(action == "pause")
                return _done(
                    request, {"paused": action == "pause"}, f"Queue {action}d."
                )
        except (ValidationError, LookupError, ValueError) as exc:
            return _error(request, exc)
        return _error(request, ValueError(f"Unknown action {action!r}."))
    if request.GET.get("task"):
        task = Task.objects.filter(pk=request.GET["task"]).first()
        if task is None:
            return _reply(request, "plugins/tasks.html", {"error": "no such task"}, 404)
        return _reply(request, "plugins/tasks.html", {"task": _task(task)})
    return _reply(
        request,
        "plugins/tasks.html",
        {
            "tasks": [_task(t) for t in Task.objects.all()[:50]],
            "paused": plugin.paused,
            "stats": plugin.event_queue.stats("async_tasks.run"),
        },
    )


# locks -----------------------------------------------------------------------------


def _lock_info(key: str) -> dict[str, Any] | None:
    for info in get_app().lock_manager.list_locks():
        if info.key == key:
            return {"key": info.key, "holder": info.holder, "fence": info.fence}
    return None


@require_http_methods(["GET", "POST"])
def locks(request: HttpRequest) -> HttpResponse:
    """Hold a lock on this node for a while, or try to take one held elsewhere."""
    manager = get_app().lock_manager
    if request.method == "POST":
        key = request.POST.get("key", "demo")
        try:
            if request.POST.get("action") == "hold":
                seconds = _number(request, "seconds", float)
                if not 0 < seconds <= MAX_HOLD:
                    raise ValidationError(f"seconds must be in (0, {MAX_HOLD:g}].")
                lock = manager.try_acquire(key, ttl=seconds + 5)
                if lock is None:
                    return _done(
                        request,
                        {"held": False, "lock": _lock_info(key)},
                        f"{key} is held by another node.",
                        status=409,
                    )
                timer = threading.Timer(seconds, lock.release)
                timer.daemon = True
                timer.start()
                return _done(
                    request,
                    {"held": True, "fence": lock.fence, "seconds": seconds},
                    f"Holding {key} for {seconds:g}s on this node.",
                )
            wait = _number(request, "wait", float) if request.POST.get("wait") else 0.0
            started = time.perf_counter()
            try:
                with manager.lock(key, wait=wait) as lock:
                    fence = lock.fence
            except LockTimeout:
                return _done(
                    request,
                    {
                        "acquired": False,
                        "waited": round(time.perf_counter() - started, 3),
                        "lock": _lock_info(key),
                    },
                    f"{key} is held by another node: blocked.",
                    status=409,
                )
            return _done(
                request,
                {
                    "acquired": True,
                    "fence": fence,
                    "waited": round(time.perf_counter() - started, 3),
                },
                f"Took and released {key}.",
            )
        except (ValidationError, ValueError) as exc:
            return _error(request, exc)
    return _reply(
        request,
        "plugins/locks.html",
        {
            "locks": [
                {"key": i.key, "holder": i.holder, "fence": i.fence}
                for i in manager.list_locks()
            ]
        },
    )
