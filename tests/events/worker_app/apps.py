from django.apps import AppConfig


class EventsWorkerConfig(AppConfig):
    name = "tests.events.worker_app"
    label = "events_worker"
    plugin = "tests.events.worker_app.plugin.EventsWorkerPlugin"
