"""Misuse in a project made by ``startproject`` is a clear error, never a silent
state: mega_cluster missing from INSTALLED_APPS, an app that failed to start, a
SQLite database without IMMEDIATE transactions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings

from mega_cluster.registry import NOT_INSTALLED

from .startproject import free_port, get, make_project, run, servers

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


@pytest.fixture
def not_installed(tmp_path: Path, unique_name: str) -> Path:
    return make_project(
        tmp_path / "site",
        {
            "APP_NAME": unique_name,
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        },
        installed=False,
        migrate=False,  # migrate runs the checks, which load the URLconf: see below
    )


@pytest.mark.parametrize(
    "code",
    [
        "from mega_cluster import get_app; get_app()",
        "import flagsapp.plugin",  # defines a Plugin subclass
    ],
    ids=["get_app", "plugin-import"],
)
def test_mega_cluster_missing_from_installed_apps(not_installed, code):
    """Using the package without the app installed raises ImproperlyConfigured
    naming INSTALLED_APPS (before: 'run manage.py migrate', or nothing at all)."""
    done = run(["manage.py", "shell", "-c", code], cwd=not_installed)
    assert done.returncode != 0
    assert (
        f"django.core.exceptions.ImproperlyConfigured: {NOT_INSTALLED}" in done.stderr
    ), done.stderr


def test_check_fails_when_the_urls_include_mega_cluster_but_the_app_is_missing(
    not_installed,
):
    """manage.py check loads the URLconf, which includes mega_cluster.urls."""
    done = run(["manage.py", "check"], cwd=not_installed)
    assert done.returncode != 0
    assert NOT_INSTALLED in done.stderr, done.stderr


def test_plain_check_shows_w006_for_the_generated_sqlite_database(
    tmp_path, unique_name
):
    """startproject's SQLite database has no transaction_mode: a plain
    ``manage.py check`` (no --database, no --deploy) warns W006."""
    root = make_project(tmp_path / "site", {"APP_NAME": unique_name}, migrate=False)
    done = run(["manage.py", "check"], cwd=root)
    assert done.returncode == 0, done.stderr
    assert (
        "?: (mega_cluster.W006) DATABASES['default'] is SQLite with transaction_mode "
        "DEFERRED" in done.stderr
    ), done.stdout + done.stderr


def test_a_web_process_whose_app_failed_to_start_answers_503_with_the_reason(
    tmp_path, unique_name
):
    """LOCKS on a Redis that does not answer: runserver keeps serving, prints why
    the app did not start, and the health view answers 503 with that reason."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    root = make_project(
        tmp_path / "site",
        {
            "APP_NAME": unique_name,
            "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url}},
        },
    )
    port = free_port()
    with servers(root) as group:
        base = group.start(["manage.py", "runserver", f"127.0.0.1:{port}"], port)
        deadline = time.monotonic() + 30
        while True:
            status, body = get(f"{base}/cluster/health/")
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        output = group.output()
    reason = (
        f"BackendUnavailable: cluster app {unique_name!r} cannot start: its LOCKS "
        "server (redis backend) does not answer (BackendUnavailable). Start that "
        'server, or fix MEGA_CLUSTER["LOCKS"]["OPTIONS"]["URL"].'
    )
    assert status == 503, body
    assert body["status"] == "unavailable"
    assert body["cluster_apps"][unique_name] == {
        "started": False,
        "start_error": reason,
        "database_clash": None,
    }
    assert (
        f"mega_cluster: cluster app {unique_name!r} failed to start on node" in output
    )
    assert reason.partition(": ")[2] in output
