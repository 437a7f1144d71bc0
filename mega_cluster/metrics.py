"""Prometheus metrics: counters the primitives increment, gauges read at scrape time.

With ``prometheus-client`` installed (``pip install "mega-cluster[prometheus]"``)
:func:`inc` and :func:`observe` update the metrics below and :func:`render` is what
the ``mega_cluster:metrics`` view serves; without it both are no-ops and the view
answers 404. Metrics live in their own :data:`REGISTRY`, not in prometheus-client's
global one, so importing this module twice never raises "Duplicated timeseries".

Counters and histograms (process-local, labelled ``app`` and, where it applies,
``channel``):

=====================================  ============================================
``mega_cluster_messages_published``    pub/sub and sync messages sent
``mega_cluster_messages_delivered``    messages handed to local handlers
``mega_cluster_messages_dropped``      messages lost (buffer overflow, no connection)
``mega_cluster_messages_rejected``     malformed messages received and skipped
``mega_cluster_events_rejected``       malformed incoming events and queue messages
``mega_cluster_records_rejected``      corrupt stored records skipped (node list)
``mega_cluster_lock_wait_seconds``     time spent waiting to acquire a lock
``mega_cluster_lock_hold_seconds``     time a lock was held until release
``mega_cluster_event_attempts``        event handler attempts started
``mega_cluster_event_failures``        attempts that raised or timed out
``mega_cluster_event_dead_letters``    events dead-lettered on this node
``mega_cluster_inbox_skipped``         redeliveries an idempotent handler skipped
``mega_cluster_schedule_ticks``        periodic job ticks this node queued (``job``)
``mega_cluster_schedule_ticks_missed`` times missed ticks were skipped (``job``)
``mega_cluster_schedule_runs``         job runs ended here (``job``, ``outcome``)
``mega_cluster_outbox_relayed``         outbox rows the relay sent for a sender
``mega_cluster_outbox_replays``         sync messages replayed from the outbox
``mega_cluster_outbox_duplicates``      redelivered messages skipped
=====================================  ============================================

Gauges computed at each scrape from the managers' operations API (cluster-wide):
``mega_cluster_queue_events{app,channel,state}`` (``stats()``),
``mega_cluster_locks_held{app}`` (``list_locks()``),
``mega_cluster_nodes{app,status}`` (``node_registry.list_nodes()``),
``mega_cluster_outbox_unsent{app}`` and ``mega_cluster_outbox_lag_seconds{app}``
(the age of the oldest unsent outbox row, 0 when none; ``app.outbox``) and
``mega_cluster_scrape_errors{app,source}`` when one of them failed; and, for this
process, ``mega_cluster_circuit_open{app,circuit}`` (1 while the backend's circuit
is open, see :mod:`mega_cluster.circuit`) and ``mega_cluster_circuit_opened``
(times it opened).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger("mega_cluster.metrics")

ENABLED = importlib.util.find_spec("prometheus_client") is not None

#: name -> (kind, help, label names)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "messages_published": (
        "counter",
        "Pub/sub and sync messages published.",
        ("app", "channel"),
    ),
    "messages_delivered": (
        "counter",
        "Messages handed to local handlers.",
        ("app", "channel"),
    ),
    "messages_dropped": (
        "counter",
        "Messages lost (buffer overflow or no connection).",
        ("app", "channel"),
    ),
    "messages_rejected": (
        "counter",
        "Malformed messages received and skipped.",
        ("app",),
    ),
    "events_rejected": (
        "counter",
        "Malformed incoming events (dead-lettered) and event-queue messages (dropped).",
        ("app", "source"),
    ),
    "records_rejected": (
        "counter",
        "Stored records that could not be read and were skipped.",
        ("app", "source"),
    ),
    "lock_wait_seconds": ("histogram", "Seconds spent acquiring a lock.", ("app",)),
    "lock_hold_seconds": ("histogram", "Seconds a lock was held.", ("app",)),
    "event_attempts": ("counter", "Event handler attempts.", ("app", "channel")),
    "event_failures": ("counter", "Failed event attempts.", ("app", "channel")),
    "event_dead_letters": ("counter", "Events dead-lettered.", ("app", "channel")),
    "inbox_skipped": (
        "counter",
        "Skipped duplicates: redeliveries whose effect had already committed.",
        ("app", "consumer"),
    ),
    "schedule_ticks": ("counter", "Periodic job ticks queued.", ("app", "job")),
    "schedule_ticks_missed": (
        "counter",
        "Times a periodic job's missed ticks were skipped.",
        ("app", "job"),
    ),
    "schedule_runs": (
        "counter",
        "Periodic job runs ended, by outcome.",
        ("app", "job", "outcome"),
    ),
    "outbox_relayed": ("counter", "Outbox rows sent by the relay.", ("app",)),
    "outbox_replays": (
        "counter",
        "Sync messages replayed from the outbox.",
        ("app", "channel"),
    ),
    "outbox_duplicates": ("counter", "Redelivered messages skipped.", ("app",)),
}

REGISTRY: Any = None
_metrics: dict[str, Any] = {}

if ENABLED:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    REGISTRY = CollectorRegistry(auto_describe=True)
    for _name, (_kind, _help, _labels) in METRICS.items():
        _cls = Counter if _kind == "counter" else Histogram
        _metrics[_name] = _cls(
            f"mega_cluster_{_name}", _help, _labels, registry=REGISTRY
        )


def _metric(name: str, kind: str, labels: dict[str, Any]) -> Any:
    try:
        actual, _help, names = METRICS[name]
    except KeyError:
        raise ValueError(
            f"Unknown metric {name!r}; known: {', '.join(METRICS)}."
        ) from None
    if actual != kind:
        verb = "inc()" if actual == "counter" else "observe()"
        raise ValueError(f"Metric {name!r} is a {actual}: use {verb}.")
    if set(labels) != set(names):
        raise ValueError(
            f"Metric {name!r} takes labels {', '.join(names)}, got "
            f"{', '.join(sorted(labels)) or 'none'}."
        )
    if not ENABLED:
        return None
    return _metrics[name].labels(**{k: str(v) for k, v in labels.items()})


def inc(name: str, amount: float = 1, **labels: Any) -> None:
    """Add ``amount`` to counter ``name`` (a key of :data:`METRICS`); no-op without
    prometheus-client. Raises ``ValueError`` for an unknown name or wrong labels."""
    metric = _metric(name, "counter", labels)
    if metric is not None:
        metric.inc(amount)


def counter(name: str, **labels: Any) -> Callable[[float], None]:
    """A ready-labelled ``inc(amount)`` of counter ``name`` for hot paths that keep
    it (looking the labels up costs as much as decoding a small message); a no-op
    without prometheus-client. Raises like :func:`inc`."""
    metric = _metric(name, "counter", labels)
    return _noop if metric is None else metric.inc


def _noop(amount: float = 1) -> None:
    return None


def histogram(name: str, **labels: Any) -> Callable[[float], None]:
    """A ready-labelled ``observe(value)`` of histogram ``name``, for hot paths that
    keep it (like :func:`counter`); a no-op without prometheus-client. Raises like
    :func:`observe`."""
    metric = _metric(name, "histogram", labels)
    return _noop if metric is None else metric.observe


def observe(name: str, value: float, **labels: Any) -> None:
    """Record ``value`` (seconds) in histogram ``name``; no-op without
    prometheus-client. Raises ``ValueError`` for an unknown name or wrong labels."""
    metric = _metric(name, "histogram", labels)
    if metric is not None:
        metric.observe(value)


class ClusterCollector:
    """Gauges read from the operations API of every cluster app at scrape time."""

    def describe(self) -> list[Any]:
        return []  # computed per scrape: nothing to describe up front

    def collect(self) -> Iterator[Any]:
        from .circuit import circuits
        from .registry import registry

        queue = GaugeMetricFamily(
            "mega_cluster_queue_events",
            "Events per channel and state (failed counts failed attempts).",
            labels=["app", "channel", "state"],
        )
        locks = GaugeMetricFamily(
            "mega_cluster_locks_held", "Locks held right now.", labels=["app"]
        )
        nodes = GaugeMetricFamily(
            "mega_cluster_nodes", "Nodes by status.", labels=["app", "status"]
        )
        circuit_open = GaugeMetricFamily(
            "mega_cluster_circuit_open",
            "1 while the circuit of a backend is open in this process (calls fail "
            "fast).",
            labels=["app", "circuit"],
        )
        circuit_opened = CounterMetricFamily(
            "mega_cluster_circuit_opened",
            "Times the circuit of a backend opened in this process.",
            labels=["app", "circuit"],
        )
        for circuit in circuits():
            info = circuit.as_dict()
            labels = [circuit.app, circuit.name]
            circuit_open.add_metric(labels, 1 if info["state"] == "open" else 0)
            circuit_opened.add_metric(labels, info["opened_count"])
        unsent = GaugeMetricFamily(
            "mega_cluster_outbox_unsent", "Outbox rows not sent yet.", labels=["app"]
        )
        lag = GaugeMetricFamily(
            "mega_cluster_outbox_lag_seconds",
            "Age of the oldest unsent outbox row (0: none).",
            labels=["app"],
        )
        errors = GaugeMetricFamily(
            "mega_cluster_scrape_errors",
            "1 when a source could not be read at this scrape.",
            labels=["app", "source"],
        )
        for name, app in registry.apps().items():
            try:
                for channel, counts in app.event_queue.stats().items():
                    for state, value in counts.items():
                        queue.add_metric([name, channel, state], value)
            except Exception as exc:
                logger.warning("metrics: queue stats of app %s failed: %s", name, exc)
                errors.add_metric([name, "event_queue"], 1)
            try:
                locks.add_metric([name], len(app.lock_manager.list_locks()))
            except Exception as exc:
                logger.warning("metrics: lock list of app %s failed: %s", name, exc)
                errors.add_metric([name, "locks"], 1)
            try:
                listed = app.node_registry.list_nodes()
                alive = sum(1 for n in listed if n.alive)
                nodes.add_metric([name, "alive"], alive)
                nodes.add_metric([name, "dead"], len(listed) - alive)
            except Exception as exc:
                logger.warning("metrics: node list of app %s failed: %s", name, exc)
                errors.add_metric([name, "nodes"], 1)
            try:
                info = app.outbox.as_dict()
                unsent.add_metric([name], info["unsent"])
                lag.add_metric([name], info["oldest_unsent_age"] or 0.0)
            except Exception as exc:
                logger.warning("metrics: outbox of app %s failed: %s", name, exc)
                errors.add_metric([name, "outbox"], 1)
        yield from (queue, locks, nodes, unsent, lag, circuit_open, circuit_opened)
        yield errors


if ENABLED:
    REGISTRY.register(ClusterCollector())


def render() -> tuple[bytes, str]:
    """The exposition text and its content type (requires prometheus-client)."""
    if not ENABLED:
        raise RuntimeError(
            'prometheus-client is not installed: pip install "mega-cluster[prometheus]"'
        )
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
