"""factory-boy factories for mega_cluster's models, for your tests.

``pip install factory-boy`` to use them. Rows belong to your project's cluster
app (the only one in ``MEGA_CLUSTER``) unless ``app_name`` says otherwise: pass
the name of the app under test (``app.name``; a testing-kit node's is the
cluster's). Every factory takes ``create(using=alias)`` to write to another
database. ``ClusterLock`` and ``ClusterQueue`` have no table (admin permissions
only), so no factory.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from .. import conf
from ..models import LockLease, LockWaiter, Node, PluginState, QueuedEvent

__all__ = [
    "LockLeaseFactory",
    "LockWaiterFactory",
    "ModelFactory",
    "NodeFactory",
    "PluginStateFactory",
    "QueuedEventFactory",
]


def _project_app_name() -> str:
    apps = conf.get_settings().apps
    if len(apps) != 1:
        raise ValueError(
            f"MEGA_CLUSTER configures several cluster apps ({', '.join(apps)}): "
            "pass app_name= to the factory."
        )
    return next(iter(apps))


class ModelFactory(factory.django.DjangoModelFactory):
    """``create(using=alias)`` saves to that database instead of ``default``."""

    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> Any:
        using = kwargs.pop("using", None)
        if using is None:
            return super()._create(model_class, *args, **kwargs)
        # Model._default_manager is documented Django API (Managers: default managers)
        manager = model_class._default_manager  # noqa: SLF001
        return manager.using(using).create(*args, **kwargs)


class PluginStateFactory(ModelFactory):
    class Meta:
        model = PluginState

    app_name = factory.LazyFunction(_project_app_name)
    name = factory.Sequence(lambda n: f"plugin-{n}")
    enabled = True
    installed = False
    version = "1.0.0"


class LockRowFactory(ModelFactory):
    """A row of one lock key of the project's app."""

    class Meta:
        abstract = True

    app_name = factory.LazyFunction(_project_app_name)
    key = factory.Sequence(lambda n: f"key-{n}")


class LockLeaseFactory(LockRowFactory):
    """A lock key's row, held for 30 s by a node; ``token=""`` makes it free."""

    class Meta:
        model = LockLease

    token = factory.LazyFunction(lambda: uuid.uuid4().hex)
    holder = factory.Sequence(lambda n: f"node-{n}")
    fence = 1
    acquired_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(
        lambda o: (o.acquired_at or timezone.now()) + timedelta(seconds=30)
    )


class LockWaiterFactory(LockRowFactory):
    """A place in a key's FIFO queue, live for 3 s (``WAITER_LEASE``)."""

    class Meta:
        model = LockWaiter

    waiter = factory.LazyFunction(lambda: uuid.uuid4().hex)
    deadline = factory.LazyFunction(lambda: timezone.now() + timedelta(seconds=3))


class QueuedEventFactory(ModelFactory):
    """A pending event of the database event queue, due now; ``data`` is the payload."""

    class Meta:
        model = QueuedEvent

    class Params:
        data = factory.Sequence(lambda n: {"n": n})

    id = factory.LazyFunction(lambda: uuid.uuid4().hex)
    app_name = factory.LazyFunction(_project_app_name)
    channel = "jobs"
    payload = factory.LazyAttribute(lambda o: json.dumps(o.data))
    status = QueuedEvent.PENDING
    available_at = factory.LazyFunction(time.time)


class NodeFactory(ModelFactory):
    """A node's heartbeat row (database node registry), beating now."""

    class Meta:
        model = Node

    app_name = factory.LazyFunction(_project_app_name)
    node_id = factory.Sequence(lambda n: f"node-{n}")
    host = "localhost"
    pid = factory.Sequence(lambda n: 10_000 + n)
    role = "web"
    version = "0.1.0"
    started_at = factory.LazyFunction(time.time)
    heartbeat_at = factory.LazyAttribute(lambda o: o.started_at)
    details = factory.LazyFunction(lambda: {"channels": [], "consumers": {}})
