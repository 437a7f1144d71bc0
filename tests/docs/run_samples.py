"""Child process of ``test_code_samples``: run one page's python samples in order.

argv: the JSON file of the page (its runnable blocks, the other blocks of the
page, and the test's set-up from ``setups.py``) and the JSON list of app labels
the page's file blocks define (migrated first). The settings module is written
by the test.

A sample that assigns ``MEGA_CLUSTER`` is validated as Django would at start-up
(the parser of ``mega_cluster.conf`` and the system checks, errors only), and
every backend ``OPTIONS`` key must be one the backend reads: a typo in the docs
fails. ``DATABASES``, ``CACHES`` and ``INSTALLED_APPS`` samples are checked too.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import django

django.setup()

from django.apps import apps  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.utils import load_backend  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from mega_cluster import checks, conf  # noqa: E402
from mega_cluster.registry import registry  # noqa: E402

#: Modules that read a backend's OPTIONS for it (Redis: where it is; the
#: database event queue and the celery store: PREPARE).
SHARED_READERS = {"mega_cluster.redis_client", "mega_cluster.events.backends.prepared"}
OPTION_READ = re.compile(r"options(?:\.get\(|\[)\s*[\"']([A-Z_]+)[\"']")


def options_read_by(backend_class: type) -> set[str]:
    """The ``OPTIONS`` keys a backend class (or one of its bases, or of the parts
    it is composed of: ``parts``) reads."""
    names: set[str] = set()
    classes = [backend_class, *getattr(backend_class, "parts", ())]
    for cls in {c for part in classes for c in part.__mro__}:
        module = sys.modules.get(cls.__module__)
        if module is not None and module.__name__.startswith("mega_cluster."):
            names |= set(OPTION_READ.findall(inspect.getsource(module)))
            # and the shared readers it imports (redis_client: where Redis is)
            for value in vars(module).values():
                if inspect.ismodule(value) and value.__name__ in SHARED_READERS:
                    names |= set(OPTION_READ.findall(inspect.getsource(value)))
    return names


def check_cluster_setting(value: object, namespace: dict, where: str) -> None:
    """A ``MEGA_CLUSTER`` a sample assigns must pass the settings checks."""
    overrides: dict = {conf.SETTING_NAME: value}
    if isinstance(namespace.get("CACHES"), dict):
        overrides["CACHES"] = namespace["CACHES"]
    if isinstance(namespace.get("DATABASES"), dict):  # aliases the options name
        overrides["DATABASES"] = namespace["DATABASES"]
    with override_settings(**overrides):
        messages = checks.check_settings()
    errors = [f"{m.id}: {m.msg}" for m in messages if m.is_serious()]
    parsed = conf.parse(value)
    for app in parsed.apps.values():
        for section in app.sections.values():
            backend = section.backend
            if backend is None:
                continue
            known = options_read_by(backend.load_class())
            errors += [
                f"{app.name} {section.name} OPTIONS[{key!r}] is not an option of "
                f"{backend.path} (it reads {sorted(known)})"
                for key in backend.options
                if key not in known
            ]
        errors += [
            f"{app.name} PLUGINS: {label!r} is not an installed app"
            for label in app.plugins or ()
            if label not in {c.label for c in apps.get_app_configs()}
        ]
    if errors:
        raise AssertionError(f"{where}: MEGA_CLUSTER: " + "; ".join(errors))


def check_databases(value: object, where: str) -> None:
    """A ``DATABASES`` sample names real engines, passes mega_cluster's W006 and
    gives SQLite an absolute path (a relative one is a different file for each
    process started in another folder)."""
    assert isinstance(value, dict), f"{where}: DATABASES is not a dict"
    for db in value.values():
        load_backend(db["ENGINE"])
        if "sqlite3" in db["ENGINE"]:
            name = str(db.get("NAME", ""))
            assert name == ":memory:" or Path(name).is_absolute(), (
                f"{where}: SQLite NAME {name!r} is relative"
            )
    with override_settings(DATABASES=value):
        warnings = checks.check_sqlite_transaction_mode()
    assert not warnings, f"{where}: {[w.msg for w in warnings]}"


def check_caches(value: object, where: str) -> None:
    assert isinstance(value, dict), f"{where}: CACHES is not a dict"
    for entry in value.values():
        import_string(entry["BACKEND"])


def check_installed_apps(value: object, where: str) -> None:
    for name in value:  # type: ignore[attr-defined]
        module = name.split(".apps.")[0]
        assert importlib.util.find_spec(module), f"{where}: no module {name!r}"


SETTING_CHECKS = {
    "DATABASES": lambda value, ns, where: check_databases(value, where),
    "CACHES": lambda value, ns, where: check_caches(value, where),
    "INSTALLED_APPS": lambda value, ns, where: check_installed_apps(value, where),
    "MEGA_CLUSTER": check_cluster_setting,
}


def main() -> None:
    page = json.load(open(sys.argv[1]))
    labels = json.loads(sys.argv[2])
    if labels:
        call_command("makemigrations", *labels, verbosity=0)
    call_command("migrate", verbosity=0)
    namespace: dict = {"__name__": "__docs__"}

    def run_setup(code: str, where: str) -> None:
        # On a copy of the samples' namespace: the set-up reads what they defined
        # but cannot define a name they forgot (``ns`` is the real one). It gets
        # the page's other blocks (console output, JSON) as ``doc_blocks``.
        scope = {
            **namespace,
            "ns": namespace,
            "doc_blocks": page["others"],
            "page_text": page["page_text"],
        }
        exec(compile(code, where, "exec"), scope)

    try:
        if page["prelude"]:
            exec(compile(page["prelude"], "prelude", "exec"), namespace)
        for block in page["blocks"]:
            where = f"{block['page']} line {block['line']}"
            if block["before"]:
                run_setup(block["before"], f"set-up before {where}")
            before = {name: namespace.get(name) for name in SETTING_CHECKS}
            exec(compile(block["code"], where, "exec"), namespace)
            for name, check in SETTING_CHECKS.items():
                if namespace.get(name) is not before[name]:
                    check(namespace[name], namespace, where)
            print(f"ran {where}", flush=True)
        if page["after"]:
            run_setup(page["after"], f"check after {page['page']}")
            print(f"checked {page['page']}", flush=True)
    finally:
        registry.stop_all()


if __name__ == "__main__":
    main()
