"""``manage.py cluster_status``: nodes, locks, queues and periodic jobs of the
cluster apps."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import health
from ...exceptions import AppNotFound
from ...nodes.status import snapshot
from ...registry import registry

NODE_COLUMNS = ("node_id", "role", "status", "heartbeat_age", "host", "pid", "uptime")
LOCK_COLUMNS = ("key", "holder", "fence", "age", "ttl_left", "waiters")
SCHEDULE_COLUMNS = ("job", "schedule", "next_run", "last_run", "outcome", "error")
BACKEND_COLUMNS = ("check", "backend", "ok", "latency_ms", "error", "circuit")
QUEUE_COLUMNS = (
    "channel",
    "pending",
    "running",
    "succeeded",
    "failed",
    "dead",
    "oldest_pending_age",
    "consumers",
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """A plain-text table with a header line; ``(none)`` when there are no rows."""
    if not rows:
        return "  (none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    ]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells
    ]
    return "\n".join("  " + line.rstrip() for line in lines)


class Command(BaseCommand):
    help = "Print the nodes, held locks and event queues of the cluster apps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--app", help="Only this cluster app (default: every configured app)."
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON document instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            apps = (
                [registry.get(options["app"])]
                if options["app"]
                else list(registry.apps().values())
            )
        except AppNotFound as exc:
            raise CommandError(str(exc)) from exc
        now = time.time()
        snapshots = [snapshot(app) for app in apps]
        for app, snap in zip(apps, snapshots, strict=True):
            snap["schedules"] = self._schedules(app, snap)
        # Every backend pinged at once, as the health view does, with the state of
        # this process's circuits (an open one: calls to it fail fast).
        _ok, databases, checks = health.report(apps)
        for snap in snapshots:
            snap["backends"] = [
                {"check": key, **result} for key, result in checks[snap["app"]].items()
            ]
            snap["databases"] = databases
        for snap in snapshots:
            for node in snap["nodes"]:
                node["uptime"] = round(max(0.0, now - node["started_at"]), 3)
        if options["json"]:
            self.stdout.write(json.dumps({"apps": snapshots}, indent=2))
        else:
            for snap in snapshots:
                self._print(snap)
        clashes = [snap["clash"] for snap in snapshots if snap["clash"]]
        if clashes:
            raise CommandError(" ".join(clashes))
        if any(snap["errors"] for snap in snapshots):
            raise CommandError(
                "Some sources could not be read: "
                + "; ".join(
                    f"{snap['app']} {source}: {error}"
                    for snap in snapshots
                    for source, error in snap["errors"].items()
                )
            )

    def _schedules(self, app: Any, snap: dict[str, Any]) -> list[dict[str, Any]]:
        from ...schedules import get_schedules

        try:
            return get_schedules(app).rows()
        except Exception as exc:
            snap["errors"]["schedules"] = f"{type(exc).__name__}: {exc}"
            return []

    def _print(self, snap: dict[str, Any]) -> None:
        out = self.stdout
        out.write(self.style.MIGRATE_HEADING(f"Cluster app {snap['app']}"))
        alive = sum(1 for n in snap["nodes"] if n["alive"])
        out.write(f"Nodes ({alive} alive, {len(snap['nodes']) - alive} dead)")
        out.write(table(NODE_COLUMNS, snap["nodes"]))
        out.write(f"Locks ({len(snap['locks'])} held)")
        out.write(table(LOCK_COLUMNS, snap["locks"]))
        out.write(f"Queues ({len(snap['queues'])} channels)")
        out.write(table(QUEUE_COLUMNS, snap["queues"]))
        if snap["schedules"]:  # only projects that declare periodic jobs
            rows = [
                {**row, "next_run": "paused" if row["paused"] else row["next_run"]}
                for row in snap["schedules"]
            ]
            out.write(f"Schedules ({len(rows)} periodic jobs)")
            out.write(table(SCHEDULE_COLUMNS, rows))
        backends = snap["backends"]
        down = [row["check"] for row in backends if not row["ok"]]
        opened = [row["check"] for row in backends if row.get("circuit") == "open"]
        out.write(
            f"Backends ({len(backends) - len(down)} answer, {len(down)} failed"
            + (f"; circuits open: {', '.join(opened)}" if opened else "")
            + ")"
        )
        out.write(table(BACKEND_COLUMNS, backends))
        for warning in snap["warnings"]:
            out.write(self.style.WARNING(f"WARNING: {warning}"))
        if snap["clash"]:
            out.write(self.style.ERROR(f"ERROR: {snap['clash']}"))
        out.write("")
