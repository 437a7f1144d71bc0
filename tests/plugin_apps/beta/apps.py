from django.apps import AppConfig


class BetaConfig(AppConfig):
    name = "tests.plugin_apps.beta"
    label = "mc_beta"
