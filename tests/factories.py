"""factory-boy factories for the suite's models."""

from __future__ import annotations

import factory
from django.conf import settings

from mega_cluster.models import PluginState


class PluginStateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PluginState

    app_name = factory.LazyFunction(lambda: settings.MEGA_CLUSTER["APP_NAME"])
    name = factory.Sequence(lambda n: f"plugin-{n}")
    enabled = True
    installed = False
    version = "1.0.0"
