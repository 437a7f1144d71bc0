from tests.plugin_apps.recorder import AsyncRecordingPlugin


class BetaPlugin(AsyncRecordingPlugin):
    """Discovered from the app's plugin module; hooks are async."""

    name = "beta"
    version = "2.1.0"
