"""Every system check id fires for the misconfiguration it names."""

from __future__ import annotations

import pytest
from django.test import override_settings

from mega_cluster import checks, conf
from mega_cluster.exceptions import ConfigurationError

HERE = "tests.foundation.fake_backends"


def ids(value, **extra):
    with override_settings(MEGA_CLUSTER=value, **extra):
        return [m.id for m in checks.check_settings()]


def messages(value, section=None, **extra):
    """Check messages, only those about ``section`` when it is given."""
    with override_settings(MEGA_CLUSTER=value, **extra):
        found = checks.check_settings()
    return [m for m in found if section is None or f" {section}" in m.msg]


def test_setting_not_a_dict_is_e001():
    """A MEGA_CLUSTER that is not a dict is E001."""
    assert ids(["redis"]) == ["mega_cluster.E001"]


def test_empty_apps_is_e001():
    """APPS must name at least one app."""
    assert "mega_cluster.E001" in ids({"APPS": {}})


def test_unknown_alias_is_e002_with_hint():
    """An unknown BACKEND alias is E002 and the hint lists the aliases."""
    (msg,) = [
        m
        for m in messages({"LOCKS": {"BACKEND": "zookeeper"}})
        if m.id.endswith("E002")
    ]
    assert "zookeeper" in msg.msg
    assert "local, redis, database" in msg.hint


def test_bad_app_name_is_e003():
    assert "mega_cluster.E003" in ids({"APP_NAME": "has space"})


def test_apps_entry_with_other_app_name_is_e003():
    assert "mega_cluster.E003" in ids({"APPS": {"a": {"APP_NAME": "b"}}})


def test_section_not_a_dict_is_e004():
    assert "mega_cluster.E004" in ids({"PUBSUB": "redis"})


def test_options_not_a_dict_is_e004():
    assert "mega_cluster.E004" in ids({"PUBSUB": {"BACKEND": "memory", "OPTIONS": 3}})


@pytest.mark.parametrize(
    "value",
    [
        {"LOCKS": {"TTL": "30"}},
        {"LOCKS": {"WAIT": -1}},
        {"MESSAGE_MAX_BYTES": True},
        {"CACHE": {"DEFAULT_STORE": ""}},
        {"PLUGINS": "site_notice"},
        # NaN passed "value < minimum" and became the default lock TTL (no
        # exclusion on local locks); inf/1e300 overflowed the backends
        {"LOCKS": {"TTL": float("nan")}},
        {"LOCKS": {"WAIT": float("inf")}},
        {"EVENT_QUEUE": {"POLL_INTERVAL": float("nan")}},
        {"NODE_TIMEOUT": 1e300},
        {"MESSAGE_MAX_BYTES": 1.5},
    ],
)
def test_bad_typed_value_is_e005(value):
    """Typed options reject wrong types and out-of-range numbers."""
    assert "mega_cluster.E005" in ids(value)


def test_unknown_keys_are_e006():
    assert (
        ids({"PUBSUB": {"BACKEND": "memory", "URL": "x"}}).count("mega_cluster.E006")
        == 1
    )
    assert "mega_cluster.E006" in ids({"LOCK": {}})


def test_unimportable_dotted_path_is_e010():
    assert "mega_cluster.E010" in ids({"LOCKS": {"BACKEND": "nowhere.Backend"}})


def test_missing_optional_dependency_is_e011_naming_the_extra():
    """A backend whose package is missing names the pip extra to install."""
    (msg,) = messages({"LOCKS": {"BACKEND": f"{HERE}.NeedsMissingModule"}}, "LOCKS")
    assert msg.id == "mega_cluster.E011"
    assert msg.hint == 'pip install "mega-cluster[redis]"'


def test_missing_required_option_is_e012():
    (msg,) = messages({"PUBSUB": {"BACKEND": f"{HERE}.NeedsUrl"}}, "PUBSUB")
    assert msg.id == "mega_cluster.E012"
    assert "URL" in msg.msg
    assert not messages(
        {"PUBSUB": {"BACKEND": f"{HERE}.NeedsUrl", "OPTIONS": {"URL": "x"}}}, "PUBSUB"
    )


def test_unknown_cache_store_is_e013():
    assert "mega_cluster.E013" in ids({"CACHE": {"DEFAULT_STORE": "nope"}})


def test_process_local_backend_warns_only_without_debug():
    """W001 fires under DEBUG=False and not under DEBUG=True."""
    value = {
        "LOCKS": {"BACKEND": f"{HERE}.ProcessLocal"},
        "CACHE": {"DEFAULT_STORE": "redis"},
    }
    assert [m.id for m in messages(value, "LOCKS", DEBUG=False)] == [
        "mega_cluster.W001"
    ]
    assert messages(value, "LOCKS", DEBUG=True) == []


def test_embedded_defaults_warn_for_each_unsafe_default():
    """With no MEGA_CLUSTER, DEBUG=False warns for memory pub/sub, local locks and locmem."""
    found = ids(None, DEBUG=False)
    assert found.count("mega_cluster.W001") >= 2
    assert "mega_cluster.W003" in found
    assert not [i for i in found if ".E" in i]


def test_locmem_default_store_is_w003_without_debug():
    assert "mega_cluster.W003" in ids(
        {"CACHE": {"DEFAULT_STORE": "default"}}, DEBUG=False
    )
    assert "mega_cluster.W003" not in ids(
        {"CACHE": {"DEFAULT_STORE": "default"}}, DEBUG=True
    )


def test_channels_before_mega_cluster_is_w002():
    with override_settings(
        INSTALLED_APPS=[
            "channels",
            "mega_cluster",
            "django.contrib.contenttypes",
            "django.contrib.auth",
        ]
    ):
        assert [m.id for m in checks.check_installed_apps()] == ["mega_cluster.W002"]
    with override_settings(
        INSTALLED_APPS=[
            "mega_cluster",
            "channels",
            "django.contrib.contenttypes",
            "django.contrib.auth",
        ]
    ):
        assert checks.check_installed_apps() == []


def test_parse_types_and_defaults():
    """Values are typed; unset keys get the documented defaults."""
    parsed = conf.parse(
        {"LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": "redis://x"}, "TTL": 5}}
    )
    app = parsed.apps["main"]
    assert app.locks["TTL"] == 5.0 and isinstance(app.locks["TTL"], float)
    assert app.locks["WAIT"] == 10.0
    assert app.locks.backend.alias == "redis"
    assert app.locks.backend.path.endswith("RedisLockBackend")
    assert app.pubsub.backend.alias == "memory" and not app.pubsub.backend.explicit
    assert app.event_queue.backend.alias == "database"
    assert app["MESSAGE_MAX_BYTES"] == 1024 * 1024
    assert app.cache["DEFAULT_STORE"] == "default"


def test_shared_sections_are_defaults_for_every_app():
    parsed = conf.parse(
        {
            "LOCKS": {"BACKEND": "database"},
            "APPS": {"a": {}, "b": {"LOCKS": {"BACKEND": "local"}}},
        }
    )
    assert parsed.apps["a"].locks.backend.alias == "database"
    assert parsed.apps["b"].locks.backend.alias == "local"


def test_registry_refuses_a_broken_setting():
    """get_app() with a broken setting raises ImproperlyConfigured saying what to change."""
    from mega_cluster import get_app
    from mega_cluster.testing import cluster_settings

    with cluster_settings({"LOCKS": {"BACKEND": "zookeeper"}}):
        with pytest.raises(ConfigurationError, match="zookeeper"):
            get_app()


def test_sqlite_without_immediate_transactions_is_w006():
    """A deferred SQLite database is W006; IMMEDIATE or PostgreSQL is fine."""
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}
    immediate = {**sqlite, "OPTIONS": {"transaction_mode": "IMMEDIATE"}}
    pg = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    with override_settings(DATABASES={"default": sqlite, "pg": pg}):
        found = checks.check_sqlite_transaction_mode()
    assert [m.id for m in found] == ["mega_cluster.W006"]
    assert "'default'" in found[0].msg and "IMMEDIATE" in found[0].hint
    with override_settings(DATABASES={"default": immediate, "pg": pg}):
        assert checks.check_sqlite_transaction_mode() == []
