from django.apps import AppConfig


class OpsDemoConfig(AppConfig):
    name = "tests.browser.demo"
    label = "mc_ops_demo"
