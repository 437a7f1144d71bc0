"""A project made by ``django-admin startproject`` plus mega_cluster, served for real.

Used by the autostart tests: :func:`make_project` writes the project as a new user
would (only ``INSTALLED_APPS`` entries, ``MEGA_CLUSTER``, a plugin app and two URL
lines; ``wsgi.py`` and ``asgi.py`` stay as generated); :class:`Servers` starts
servers in it with bounded waits and kills every process at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PLUGIN = """
from mega_cluster import Plugin


class FlagsPlugin(Plugin):
    name = "flags"

    def load(self):
        self.flags = {}

    def set_flag(self, key, value):
        self.flags[key] = value
        self.send_sync_message({"key": key, "value": value})

    def handle_sync_message(self, message):
        self.flags[message["key"]] = message["value"]
"""

VIEWS = """
import os
import time

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from mega_cluster.registry import registry  # not get_app(): it would start the app


@csrf_exempt
def flags(request):
    time.sleep(float(request.GET.get("sleep", 0)))
    app = registry.get()
    plugin = app.plugins["flags"]
    if request.method == "POST":
        plugin.set_flag(request.POST["key"], request.POST["value"])
    return JsonResponse(
        {
            "node": app.node_id,
            "pid": os.getpid(),
            "started": app.started,
            "loaded": plugin.loaded,
            "flags": getattr(plugin, "flags", None),
        }
    )
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def user_env() -> dict[str, str]:
    """The environment of a user's shell: none of the suite's child settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "MC_TEST_CHILD", "PYTHONPATH")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_project(
    root: Path,
    mega_cluster: Mapping[str, Any],
    *,
    installed: bool = True,
    migrate: bool = True,
) -> Path:
    """``startproject proj`` in ``root`` plus the ``flagsapp`` plugin; the project dir.

    ``installed=False`` leaves ``mega_cluster`` out of ``INSTALLED_APPS``.
    """
    root.mkdir(parents=True, exist_ok=True)
    done = run(["-m", "django", "startproject", "proj", str(root)], cwd=root)
    assert done.returncode == 0, done.stderr
    app = root / "flagsapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "plugin.py").write_text(PLUGIN.lstrip())
    (app / "views.py").write_text(VIEWS.lstrip())
    entries = '"mega_cluster", ' if installed else ""
    with (root / "proj" / "settings.py").open("a") as fh:
        fh.write(
            textwrap.dedent(
                f"""

                INSTALLED_APPS = [{entries}*INSTALLED_APPS, "flagsapp"]
                MEGA_CLUSTER = {dict(mega_cluster)!r}
                """
            )
        )
    with (root / "proj" / "urls.py").open("a") as fh:
        fh.write(
            "\nfrom django.urls import include\nimport flagsapp.views\n\n"
            'urlpatterns += [path("flags/", flagsapp.views.flags), '
            'path("cluster/", include("mega_cluster.urls"))]\n'
        )
    if migrate:
        done = run(["manage.py", "migrate", "--noinput"], cwd=root, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    return root


def get(url: str, timeout: float = 10) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def post(url: str, data: Mapping[str, str], timeout: float = 10) -> Any:
    body = urllib.parse.urlencode(data).encode()
    with urllib.request.urlopen(url, data=body, timeout=timeout) as response:
        return json.loads(response.read())


class Servers:
    """Servers started in a project; output goes to files, every process group is
    killed by :meth:`close`."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, args: list[str], port: int) -> str:
        """Start ``python args...``; the base URL once ``/flags/`` answers (60 s)."""
        log = self.project / f"server-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.project,
                env=user_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{args} exited:\n{self.output()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return base
            if time.monotonic() > deadline:
                raise AssertionError(f"{args} did not listen in 60 s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return "\n".join(
            f"--- {' '.join(map(str, p.args))}\n{log.read_text(errors='replace')}"
            for p, log in self.procs
            if log.exists()
        )

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def servers(project: Path) -> Iterator[Servers]:
    group = Servers(project)
    try:
        yield group
    finally:
        group.close()
