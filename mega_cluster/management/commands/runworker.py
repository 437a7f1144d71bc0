"""``manage.py runworker``: a worker node (SPEC section 7, docs/runworker.md).

Without positional arguments it starts the cluster apps (plugins, pub/sub and sync
message listeners) and consumes their subscribed event-queue channels until
SIGTERM, then drains. With positional channel-layer names it is Channels'
``runworker``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.core.management import BaseCommand, CommandError

from ...events.worker import Worker
from ...exceptions import MegaClusterError


class ReportingWorker(Worker):
    """The Worker, saying on stdout what it runs once its apps have started."""

    out: Any = None

    def start(self) -> None:
        super().start()
        if self.out is None:
            return
        for app in self.apps:
            consumers = app.node_registry.describe()["consumers"]
            consumed = ", ".join(
                f"{channel} (concurrency {slots or 'unlimited'})"
                for channel, slots in sorted(consumers.items())
            )
            self.out.write(
                f"runworker: cluster app {app.name!r} started on node {app.node_id} "
                f"(worker, pid {os.getpid()}), plugins: "
                f"{', '.join(app.plugins) or 'none'}"
            )
            self.out.write(
                f"runworker: cluster app {app.name!r} consumes "
                + (consumed or "no channel (no plugin subscribes one on this node)")
            )
        self.out.flush()


class Command(BaseCommand):
    help = (
        "Run a worker node: start the cluster apps and consume their event-queue "
        "channels; drains on SIGTERM. Given channel-layer names, run Channels' "
        "worker instead."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "layer_channels",
            nargs="*",
            metavar="channel",
            help="Channels channel-layer names: run Channels' runworker on them.",
        )
        parser.add_argument(
            "--layer", default=None, help="Channel layer alias (Channels' workers)."
        )
        parser.add_argument(
            "--channels",
            default=None,
            help="Comma-separated event channels to consume, as published "
            "(default: every subscribed channel).",
        )
        parser.add_argument(
            "--queues",
            default=None,
            help="Comma-separated django.tasks queue names to consume (the channels "
            "of the mega_cluster.tasks backends' queues; with --channels, both).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Events run at once per channel in this process (0: unlimited; "
            "default: each subscription's own).",
        )
        parser.add_argument(
            "--app", default=None, help="Cluster app to run (default: every app)."
        )
        parser.add_argument(
            "--drain-timeout",
            type=float,
            default=None,
            help="Seconds to wait for running events on SIGTERM "
            "(default: EVENT_QUEUE DRAIN_TIMEOUT).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["layer_channels"]:
            return self._channels_worker(options)
        from ...registry import registry

        concurrency = options["concurrency"]
        if concurrency is not None and concurrency < 0:
            raise CommandError("--concurrency must be 0 (unlimited) or more.")
        drain = options["drain_timeout"]
        if drain is not None and drain < 0:
            raise CommandError("--drain-timeout must be 0 or more seconds.")
        channels = None
        if options["channels"] is not None:
            channels = [c.strip() for c in options["channels"].split(",") if c.strip()]
            if not channels:
                raise CommandError("--channels needs at least one channel name.")
        if options["queues"] is not None:
            channels = [*(channels or []), *self._queue_channels(options["queues"])]
        if options["verbosity"] >= 2:
            self._print_events()
        try:
            apps = (
                [registry.get(options["app"])]
                if options["app"]
                else list(registry.apps().values())
            )
            worker = ReportingWorker(
                apps, channels=channels, concurrency=concurrency, drain_timeout=drain
            )
            worker.out = self.stdout
            worker.install_signal_handlers()
            status = worker.run()
        except (MegaClusterError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if status:
            raise CommandError("the event consumer failed; see the log above.")
        self.stdout.write("runworker: stopped")

    def _queue_channels(self, value: str) -> list[str]:
        from ...tasks.consume import cluster_backends, queue_channels

        names = [q.strip() for q in value.split(",") if q.strip()]
        if not names:
            raise CommandError("--queues needs at least one task queue name.")
        known = {q for backend in cluster_backends() for q in backend.queues}
        unknown = sorted(set(names) - known)
        if unknown:
            raise CommandError(
                f"--queues: no mega_cluster.tasks backend in TASKS has the queue(s) "
                f"{', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})."
            )
        return queue_channels(names)

    def _print_events(self) -> None:
        """-v 2: each event's start and outcome on stdout, without LOGGING set up."""
        handler = logging.StreamHandler(self.stdout)
        handler.setFormatter(logging.Formatter("runworker: %(message)s"))
        handler.addFilter(lambda record: hasattr(record, "event_id"))
        events = logging.getLogger("mega_cluster.events")
        events.addHandler(handler)
        events.setLevel(logging.DEBUG)

    def _channels_worker(self, options: dict[str, Any]) -> None:
        try:
            from channels.management.commands.runworker import (
                Command as ChannelsCommand,
            )
        except ImportError as exc:
            raise CommandError(
                "Positional channel names run Channels' worker, but Channels is not "
                'installed: pip install "mega-cluster[channels]".'
            ) from exc
        from channels import DEFAULT_CHANNEL_LAYER

        command = ChannelsCommand(stdout=self.stdout, stderr=self.stderr)
        command.handle(
            channels=options["layer_channels"],
            layer=options["layer"] or DEFAULT_CHANNEL_LAYER,
            verbosity=options["verbosity"],
        )
