"""System checks of the node registry's timing (ids in docs/checks.md)."""

from __future__ import annotations

from django.core.checks import CheckMessage, Error, Warning

from .. import conf


def check_node_timing(app: conf.AppSettings) -> list[CheckMessage]:
    """E014: nodes would be dead between two beats; W005: one late beat kills one."""
    heartbeat, timeout = app["NODE_HEARTBEAT"], app["NODE_TIMEOUT"]
    where = f"MEGA_CLUSTER app {app.name!r}: "
    hint = (
        "Keep NODE_TIMEOUT several heartbeats long (defaults: NODE_HEARTBEAT 5, "
        "NODE_TIMEOUT 30)."
    )
    if timeout <= heartbeat:
        return [
            Error(
                f"{where}NODE_TIMEOUT ({timeout:g}s) is not longer than "
                f"NODE_HEARTBEAT ({heartbeat:g}s), so every node is shown dead "
                "between two heartbeats.",
                hint=hint,
                id="mega_cluster.E014",
            )
        ]
    if timeout < 2 * heartbeat:
        return [
            Warning(
                f"{where}NODE_TIMEOUT ({timeout:g}s) is less than two heartbeats "
                f"({heartbeat:g}s each): one late beat shows a live node as dead.",
                hint=hint,
                id="mega_cluster.W005",
            )
        ]
    return []
