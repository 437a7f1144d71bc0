from django.apps import AppConfig


class TwoConfig(AppConfig):
    name = "tests.plugin_apps.twoplugins"
    label = "mc_two"
