"""Start-up misuse is a clear error naming the setting to change, the same for
every primitive; server URLs without a valid scheme are check errors."""

from __future__ import annotations

import socket

import pytest
from django.core import checks
from django.test import override_settings

from mega_cluster import BackendUnavailable
from mega_cluster.registry import registry
from mega_cluster.testing import cluster_settings, make_app

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CASES = {
    "locks-redis": ("LOCKS", "redis", "URL", "redis://127.0.0.1:{port}/0"),
    "pubsub-redis": ("PUBSUB", "redis", "URL", "redis://127.0.0.1:{port}/0"),
    "pubsub-nats": ("PUBSUB", "nats", "URL", "nats://127.0.0.1:{port}"),
    "events-celery": (
        "EVENT_QUEUE",
        "celery",
        "BROKER_URL",
        "redis://127.0.0.1:{port}/0",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_unreachable_server_stops_the_start_naming_the_setting(case, unique_name):
    """Every primitive: start() raises BackendUnavailable naming the setting path
    (and not the URL); the app is not started and start_error keeps the reason."""
    section, alias, option, url = CASES[case]
    url = url.format(port=closed_port())
    app = make_app(unique_name, {section: {"BACKEND": alias, "OPTIONS": {option: url}}})
    try:
        with pytest.raises(BackendUnavailable) as info:
            app.start()
    finally:
        app.stop()
    message = str(info.value)
    assert message == (
        f"cluster app {unique_name!r} cannot start: its {section} server ({alias} "
        f"backend) does not answer ({type(info.value.__cause__).__name__}). Start "
        f'that server, or fix MEGA_CLUSTER["{section}"]["OPTIONS"]["{option}"].'
    )
    assert url not in message
    assert not app.started
    assert app.start_error == f"BackendUnavailable: {message}"


def test_the_setting_path_names_the_app_when_the_setting_has_apps(unique_name):
    """With APPS the message points into the app's own entry."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    value = {
        "APPS": {unique_name: {"LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url}}}}
    }
    with cluster_settings(value):
        app = registry.get(unique_name)
        with pytest.raises(BackendUnavailable) as info:
            app.start()
    assert str(info.value).endswith(
        f'fix MEGA_CLUSTER["APPS"]["{unique_name}"]["LOCKS"]["OPTIONS"]["URL"].'
    )


@pytest.mark.parametrize(
    ("section", "alias", "option", "value", "shown"),
    [
        ("PUBSUB", "nats", "URL", "127.0.0.1:4222", "no scheme"),
        ("PUBSUB", "nats", "URL", "http://127.0.0.1:4222", "http://"),
        ("EVENT_QUEUE", "celery", "BROKER_URL", "127.0.0.1:6379", "no scheme"),
        ("EVENT_QUEUE", "celery", "BROKER_URL", "redis//127.0.0.1", "no scheme"),
    ],
)
def test_a_server_url_without_a_valid_scheme_is_a_check_error(
    section, alias, option, value, shown
):
    """manage.py check reports it (E012) with the setting path in the hint."""
    setting = {"APP_NAME": "x", section: {"BACKEND": alias, "OPTIONS": {option: value}}}
    with override_settings(MEGA_CLUSTER=setting):
        errors = [m for m in checks.run_checks() if m.id == "mega_cluster.E012"]
    assert len(errors) == 1, errors
    assert errors[0].msg.startswith(
        f"MEGA_CLUSTER app 'x' {section}: OPTIONS[{option!r}] has {shown}; the "
        f"{alias} backend needs a URL starting with "
    )
    assert errors[0].hint.startswith(
        f'Write MEGA_CLUSTER["{section}"]["OPTIONS"]["{option}"] as e.g. '
    )


@pytest.mark.parametrize(
    ("alias", "option", "value"),
    [
        ("nats", "URL", "nats://a:4222,tls://b:4222"),
        ("celery", "BROKER_URL", "amqp://guest@h//;redis://h:6379/0"),
    ],
)
def test_valid_server_urls_pass_the_check(alias, option, value):
    section = "PUBSUB" if alias == "nats" else "EVENT_QUEUE"
    setting = {"APP_NAME": "x", section: {"BACKEND": alias, "OPTIONS": {option: value}}}
    with override_settings(MEGA_CLUSTER=setting):
        assert not [m for m in checks.run_checks() if m.id == "mega_cluster.E012"]
