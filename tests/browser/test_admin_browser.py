"""The operations console in a real browser against the example project.

A ``runserver`` web node and a ``runworker`` node run the example project on
Redis backends; a third process holds a lock. The test logs in, opens every page,
force-releases the lock from the Locks page and retries a dead-lettered event from
the Queues page. Screenshots go to ``$MC_SCREENSHOT_DIR`` (the docs' images are
made with ``MC_SCREENSHOT_DIR=docs/img``, under the app name ``main``), else to the
test's temporary folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from mega_cluster.registry import get_app
from mega_cluster.testing import cluster_settings

from ..procs import ROOT
from ..servers import free_port
from ..services import wait_port
from .settings import cluster_value

pytestmark = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    # Covers installing chromium with apt-get on a fresh machine (session fixture).
    pytest.mark.timeout(900),
]

LOCK_KEY = "invoices:nightly"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Pages:
    """The browser plus where to save screenshots."""

    def __init__(self, driver, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    def open(self, path: str) -> str:
        self.driver.get(self.base + path)
        return self.driver.page_source

    def shot(self, name: str) -> None:
        """The whole page (up to 1400 px high): the admin's body is as high as the
        viewport, so measure the document and add the window's own frame."""
        height = self.driver.execute_script(
            "return document.documentElement.scrollHeight"
            " + window.outerHeight - window.innerHeight"
        )
        self.driver.set_window_size(1280, max(600, min(height, 1400)))
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.driver.set_window_size(1280, 900)

    def click(self, css: str) -> None:
        """Click ``css`` once it is on the page: the previous click may still be
        loading the next page on a busy machine (waits up to 20 s)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, 20).until(
            expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, css))
        ).click()


def test_operations_console_in_a_browser(browser, procs, unique_name, tmp_path):
    """Log in, open each page, force-release a lock held by another process and
    retry a dead event; the worker then runs it."""
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("MC_SCREENSHOT_DIR") or tmp_path)
    if not shots.is_absolute():
        shots = ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    # The docs' images show the example project's app name, not the run's: its
    # Redis keys still carry the run's KEY_PREFIX, so they are cleaned up.
    name = "main" if os.environ.get("MC_SCREENSHOT_DIR") else unique_name
    flag = tmp_path / "smtp-down"
    flag.touch()
    env = {
        "MC_CHILD_SETTINGS": "tests.browser.settings",
        "MC_APP_NAME": name,
        "MC_BROWSER_FLAG": str(flag),
    }
    User.objects.create_superuser("admin", "admin@example.com", "s3cret-pass")
    port = free_port()
    web = procs.spawn(
        ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env
    )
    worker = procs.spawn(["manage.py", "runworker"], env)
    holder = procs.spawn(["tests/browser/hold_lock.py", LOCK_KEY], env)
    assert wait_port("127.0.0.1", port, 60), "runserver did not listen"
    held = holder.stdout.readline().split()
    assert held[:1] == ["held"], held
    holder_node = held[1]

    with cluster_settings(cluster_value(name)):
        app = get_app()
        wait_for(
            lambda: {n.role for n in app.node_registry.list_nodes()} >= {"worker"},
            60,
            "the worker node",
        )
        event_id = app.event_queue.publish("emails", {"to": "ops@example.com"})
        wait_for(
            lambda: any(d.id == event_id for d in app.event_queue.dead_letters()),
            60,
            "the event to be dead-lettered",
        )

        pages = Pages(browser, f"http://127.0.0.1:{port}", shots)
        pages.open("/admin/login/?next=/admin/")
        browser.find_element(By.NAME, "username").send_keys("admin")
        browser.find_element(By.NAME, "password").send_keys("s3cret-pass")
        pages.click("input[type=submit]")
        wait_for(lambda: "Mega cluster" in browser.page_source, 20, "the index")
        pages.shot("admin-index")

        # Nodes: the web node (runserver) and the worker.
        wait_for(
            lambda: (
                'data-status="alive"' in pages.open("/admin/mega_cluster/node/")
                and "worker" in browser.page_source
                and "web" in browser.page_source
            ),
            30,
            "web and worker nodes on the Nodes page",
        )
        pages.shot("admin-nodes")

        # Locks: held by the holder process; force release with confirmation.
        html = pages.open("/admin/mega_cluster/clusterlock/")
        assert LOCK_KEY in html and holder_node in html
        pages.shot("admin-locks")
        pages.click(f'tr[data-key="{LOCK_KEY}"] a.mc-force-release')
        wait_for(lambda: "Are you sure?" in browser.page_source, 20, "the confirmation")
        pages.shot("admin-lock-confirm")
        pages.click("#mc-confirm")
        # The confirmation page itself says "released": wait for the message that
        # only the changelist shows after the POST.
        wait_for(
            lambda: "loses it at its next renewal" in browser.page_source,
            20,
            "the success message",
        )
        assert f'data-key="{LOCK_KEY}"' not in browser.page_source
        assert LOCK_KEY not in {i.key for i in app.lock_manager.list_locks()}
        assert holder.stdout.readline().strip() == "lost"

        # Queues: the dead letter, its detail, retry once the mail server is back.
        html = pages.open("/admin/mega_cluster/clusterqueue/")
        assert event_id in html
        pages.shot("admin-queues")
        pages.click(f'tr[data-event="{event_id}"] a')
        wait_for(
            lambda: "SMTP server refused the connection" in browser.page_source,
            20,
            "the event's detail",
        )
        pages.shot("admin-event")
        flag.unlink()
        pages.click("#mc-retry")
        pages.click("#mc-confirm")
        # The confirmation page says "queued again" too: wait for the message.
        wait_for(
            lambda: f"Event {event_id} queued again" in browser.page_source,
            20,
            "the message",
        )
        wait_for(
            lambda: app.event_queue.stats("emails")["emails"]["succeeded"] == 1,
            30,
            "the worker to run the retried event",
        )
        assert app.event_queue.dead_letters() == []

        html = pages.open("/admin/mega_cluster/pluginstate/")
        assert "ops_demo" in html and "site_notice" in html
        pages.shot("admin-plugins")

    assert web.poll() is None and worker.poll() is None
