from tests.plugin_apps.recorder import RecordingPlugin


class AlphaPlugin(RecordingPlugin):
    name = "alpha"
    dependencies = ["beta"]
