from tests.plugin_apps.recorder import RecordingPlugin


class GammaPlugin(RecordingPlugin):
    """No ``name``: the app label is used."""
