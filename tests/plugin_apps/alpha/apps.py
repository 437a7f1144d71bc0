from django.apps import AppConfig


class AlphaConfig(AppConfig):
    name = "tests.plugin_apps.alpha"
    label = "mc_alpha"
    plugin = "tests.plugin_apps.alpha.plugins.AlphaPlugin"
