from django.apps import AppConfig


class GammaConfig(AppConfig):
    name = "tests.plugin_apps.gamma"
    label = "mc_gamma"
