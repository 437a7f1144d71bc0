"""Install once per cluster: ``Plugin.install()`` runs on exactly one node."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from ..exceptions import BackendUnavailable
from .hooks import call_hook
from .states import state_rows

if TYPE_CHECKING:
    from .base import Plugin

logger = logging.getLogger("mega_cluster.plugins")

#: A claim older than this is taken over (its node died while installing).
INSTALL_CLAIM_TIMEOUT = 300.0
INSTALL_POLL = 0.05


def install_once(
    plugin: Plugin, *, claim_timeout: float = INSTALL_CLAIM_TIMEOUT
) -> bool:
    """Run ``plugin.install()`` unless another node did or does; True if this node did.

    The cluster lock ``mega_cluster.install.<plugin>`` serialises the installers
    (waiting up to ``claim_timeout``); inside it the guard is a conditional UPDATE
    on the plugin's row: exactly one node sees one row updated and installs; the
    others wait until the row says installed. The row claim keeps it safe with the
    process-local ``local`` lock backend. A claim left by a node that died is taken
    over after ``claim_timeout`` seconds; an ``install()`` that raises releases the
    claim and the error propagates.
    """
    manager = plugin.app.lock_manager
    lock = manager.acquire(
        f"mega_cluster.install.{plugin.name}", wait=claim_timeout, auto_extend=True
    )
    try:
        return _install_once(plugin, claim_timeout=claim_timeout)
    finally:
        with contextlib.suppress(BackendUnavailable):  # the row claim still guards
            lock.release()


def _install_once(plugin: Plugin, *, claim_timeout: float) -> bool:
    app = plugin.app
    rows = state_rows().filter(app_name=app.name, name=plugin.name)
    while True:
        now = timezone.now()
        stale = now - timedelta(seconds=claim_timeout)
        claimed = (
            rows.filter(installed=False)
            .filter(install_claimed_at__isnull=True)
            .update(install_claimed_by=app.node_id, install_claimed_at=now)
        ) or (
            rows.filter(installed=False, install_claimed_at__lt=stale).update(
                install_claimed_by=app.node_id, install_claimed_at=now
            )
        )
        if claimed:
            break
        state = rows.get()
        if state.installed:
            return False
        time.sleep(INSTALL_POLL)
    try:
        logger.info("installing plugin %s on node %s", plugin.name, app.node_id)
        call_hook(plugin, "install")
    except BaseException:
        rows.filter(install_claimed_by=app.node_id).update(
            install_claimed_by="", install_claimed_at=None
        )
        raise
    rows.filter(install_claimed_by=app.node_id).update(
        installed=True, installed_at=timezone.now(), version=plugin.version
    )
    return True
