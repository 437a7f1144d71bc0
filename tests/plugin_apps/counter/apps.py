from django.apps import AppConfig


class CounterConfig(AppConfig):
    name = "tests.plugin_apps.counter"
    label = "mc_counter"
