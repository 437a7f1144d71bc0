"""The WSGI/ASGI entry points start the apps, and start them again in a forked worker."""

from __future__ import annotations

import faulthandler
import json
import os
import select
import signal
import traceback

import pytest
from django.db import connections

from mega_cluster import get_app
from mega_cluster.asgi import ClusterASGIHandler, get_asgi_application
from mega_cluster.registry import registry
from mega_cluster.wsgi import ClusterWSGIHandler, get_wsgi_application


@pytest.fixture
def stopped():
    registry.stop_all()
    yield
    registry.stop_all()
    registry.start_in_children = False


@pytest.mark.django_db(transaction=True)
def test_wsgi_entry_point_starts_the_apps(stopped):
    assert not get_app().started
    application = get_wsgi_application()
    assert isinstance(application, ClusterWSGIHandler)
    assert get_app().started
    assert get_app().plugins["site_notice"].loaded


@pytest.mark.django_db(transaction=True)
def test_asgi_entry_point_starts_the_apps(stopped):
    application = get_asgi_application()
    assert isinstance(application, ClusterASGIHandler)
    assert get_app().started


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "master_stops", [False, True], ids=["master-runs", "when-ready"]
)
def test_preloaded_worker_starts_its_own_apps_before_its_first_request(
    stopped, master_stops
):
    """gunicorn --preload: the master started the apps; a forked worker restarts them.

    Also when the master stopped its apps before forking (the documented
    ``when_ready`` hook).
    """
    application = get_wsgi_application()
    parent_node = get_app().node_id
    if master_stops:
        registry.stop_all()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read)
            # A hang (a lock some other thread held at fork) shows its stacks.
            faulthandler.dump_traceback_later(30, exit=True)
            for conn in connections.all(initialized_only=True):
                conn.connection = None  # the parent's connection is not ours
            before = registry.get().started  # get_app() would start it
            status: list[str] = []
            body = b"".join(
                application(
                    {
                        "REQUEST_METHOD": "GET",
                        "PATH_INFO": "/",
                        "SERVER_NAME": "testserver",
                        "SERVER_PORT": "80",
                        "wsgi.input": __import__("io").BytesIO(),
                        "wsgi.url_scheme": "http",
                    },
                    lambda s, h, *a: status.append(s),
                )
            )
            report = {
                "before": before,
                "after": get_app().started,
                "node": get_app().node_id,
                "status": status[0],
                "shows_node": get_app().node_id.encode() in body,
                "pending": registry.fork_pending,
            }
        except BaseException:
            report = {"error": traceback.format_exc()}
        finally:
            try:
                os.write(write, json.dumps(report).encode())
            finally:
                os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        ready, _, _ = select.select([fh], [], [], 60)
        data = fh.read() if ready else ""
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert data, "the forked worker hung or died without a report (stacks above)"
    report = json.loads(data)
    assert "error" not in report, f"the forked worker failed:\n{report['error']}"
    assert report["before"] is False
    assert report["after"] is True
    assert report["node"] != parent_node
    assert report["status"].startswith("200")
    assert report["shows_node"] is True
    assert report["pending"] is False
