"""With the ``wsgi.py``/``asgi.py`` that ``startproject`` writes, every serving
process starts its cluster app by itself: its own node id, its plugins loaded, sync
messages between nodes (runserver x2, gunicorn --preload -w 2, uvicorn x2,
daphne x2)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from .startproject import free_port, get, make_project, post, servers

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


@pytest.fixture
def project(tmp_path: Path, unique_name: str) -> Path:
    return make_project(
        tmp_path / "site",
        {
            "APP_NAME": unique_name,
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        },
    )


def _serves_a_started_app(body: dict[str, Any]) -> None:
    assert body["started"] is True, body
    assert body["loaded"] is True, body
    assert isinstance(body["flags"], dict), body


def _announced(output: str, name: str, node: str) -> bool:
    return f"mega_cluster: cluster app {name!r} started on node {node} (web" in output


def _follows(base: str, key: str, value: str, *, not_node: str | None = None) -> dict:
    """Poll ``base`` until a node (other than ``not_node``) shows the flag (10 s)."""
    deadline = time.monotonic() + 10
    while True:
        _, body = get(f"{base}/flags/")
        if body["flags"].get(key) == value and body["node"] != not_node:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{base} never showed {key}={value}: {body}")
        time.sleep(0.1)


def _two_nodes(servers_: Any, a: str, b: str, name: str) -> None:
    _, body_a = get(f"{a}/flags/")
    _, body_b = get(f"{b}/flags/")
    for body in (body_a, body_b):
        _serves_a_started_app(body)
    assert body_a["node"] != body_b["node"]
    assert body_a["pid"] != body_b["pid"]
    assert (
        post(f"{a}/flags/", {"key": "color", "value": "red"})["node"] == body_a["node"]
    )
    _follows(b, "color", "red")
    assert post(f"{b}/flags/", {"key": "size", "value": "xl"})["node"] == body_b["node"]
    _follows(a, "size", "xl")
    output = servers_.output()
    for body in (body_a, body_b):
        assert _announced(output, name, body["node"]), output


def test_runserver_twice(project: Path, unique_name: str) -> None:
    """Two ``manage.py runserver`` (with the autoreloader): each serves a started app
    with its own node id and follows the other's sync messages."""
    with servers(project) as group:
        ports = free_port(), free_port()
        a, b = (
            group.start(["manage.py", "runserver", f"127.0.0.1:{port}"], port)
            for port in ports
        )
        _two_nodes(group, a, b, unique_name)


def test_uvicorn_twice(project: Path, unique_name: str) -> None:
    """Two uvicorn processes on the generated ``proj.asgi:application``."""
    with servers(project) as group:
        bases = []
        for port in (free_port(), free_port()):
            args = ["-m", "uvicorn", "proj.asgi:application", "--port", str(port)]
            bases.append(group.start(args, port))
        _two_nodes(group, *bases, unique_name)


def test_daphne_twice(project: Path, unique_name: str) -> None:
    """Two daphne processes on the generated ``proj.asgi:application``."""
    with servers(project) as group:
        bases = []
        for port in (free_port(), free_port()):
            args = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            bases.append(group.start([*args, "proj.asgi:application"], port))
        _two_nodes(group, *bases, unique_name)


def _concurrently(base: str) -> list[dict[str, Any]]:
    """Two requests at once: gunicorn's sync workers take one each."""
    results: list[dict[str, Any]] = []
    slow = threading.Thread(
        target=lambda: results.append(get(f"{base}/flags/?sleep=1.5")[1])
    )
    slow.start()
    time.sleep(0.4)
    results.append(get(f"{base}/flags/")[1])
    slow.join(timeout=15)
    return results


def test_gunicorn_preload_two_workers(project: Path, unique_name: str) -> None:
    """``gunicorn --preload -w 2 proj.wsgi``: the master imports the app and forks;
    each worker starts its own app (own node id, plugins loaded) and a change made
    on one worker reaches the other."""
    port = free_port()
    with servers(project) as group:
        base = group.start(
            [
                "-m",
                "gunicorn",
                "--preload",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "proj.wsgi",
            ],
            port,
        )
        seen: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while len(seen) < 2:
            for body in _concurrently(base):
                seen[body["pid"]] = body
            assert time.monotonic() < deadline, f"one worker only: {seen}"
        bodies = list(seen.values())
        for body in bodies:
            _serves_a_started_app(body)
        assert bodies[0]["node"] != bodies[1]["node"]
        setter = post(f"{base}/flags/", {"key": "color", "value": "blue"})["node"]
        deadline = time.monotonic() + 15
        while True:
            other = [b for b in _concurrently(base) if b["node"] != setter]
            if other and other[0]["flags"].get("color") == "blue":
                break
            assert time.monotonic() < deadline, (
                f"the other worker never followed: {other}"
            )
        output = group.output()
        for body in bodies:
            assert _announced(output, unique_name, body["node"]), output
        # The master forked before any request: it never started an app.
        assert output.count(f"cluster app {unique_name!r} started") == 2, output
