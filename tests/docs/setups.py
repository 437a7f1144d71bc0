"""What the docs' samples assume of the reader's project, per page.

A page's samples run as the reader would type them, in one namespace. What they
use without defining is the reader's own code — ``build_daily_report``, an
``Invoice`` model, the ``REDIS_URL`` of their settings — and a ``PageSetup``
provides it:

- ``files``: modules of the reader's project (``label/models.py`` and
  ``label/plugin.py`` make ``label`` an installed, migrated app);
- ``settings``: lines appended to the page's settings module;
- ``prelude``: run in the samples' namespace before the first one. It defines
  only the reader's names, never an import of Django or mega_cluster: a sample
  that forgets one of those must fail;
- ``before``: code run before the one sample containing the key (state a sample
  needs, e.g. dead letters to retry);
- ``after``: run once all samples ran, to check what they did or to exercise
  the classes they defined against the embedded backends;
- ``requires``: a module without which the page's samples are skipped.

``before`` and ``after`` run on a copy of the samples' namespace (``ns`` is the
real one), with ``doc_blocks`` (the page's non-python blocks: ``lang``,
``code``) and ``page_text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PageSetup:
    files: dict[str, str] = field(default_factory=dict)
    settings: str = ""
    prelude: str = ""
    before: dict[str, str] = field(default_factory=dict)
    after: str = ""
    #: A module the page's samples need (skipped without it: django.tasks on 5.2).
    requires: str = ""


FIXTURE_MODELS = """
from django.db import models


class Invoice(models.Model):
    total = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    last_fence = models.BigIntegerField(default=0)


class Report(models.Model):
    rendered = models.BooleanField(default=False)


class Source(models.Model):
    name = models.CharField(max_length=50)
"""
FIXTURES = {"docs_fixtures/models.py": FIXTURE_MODELS}

# docs/tasks.md: the page's TASKS as the project's settings (its task modules are
# imported with it), and mail kept in memory.
TASKS_SETTINGS = """
TASKS = {
    "default": {
        "BACKEND": "mega_cluster.tasks.ClusterTaskBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"MAX_RETRIES": 0, "CONCURRENCY": 4},
    }
}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
"""

# Two nodes of one cluster in this process, running ``plugin_class``.
TWO_NODES = """
from mega_cluster.testing import make_app, wait_until


def start_nodes(plugin_class, name, settings=None):
    plugins = []
    for node_id in ("node-a", "node-b"):
        node = make_app(
            name, {"PUBSUB": {"BACKEND": "memory"}, **(settings or {})},
            node_id=node_id,
        )
        plugin = plugin_class(node)
        node.plugins = {plugin.name: plugin}
        node.start()
        plugins.append(plugin)
    return plugins
"""

# docs/testing.md: its samples are the files of a reader's plugin and its tests;
# they run with pytest as the reader would, the kit found through its entry point.
RUN_KIT_TESTS = """
import ast
import os
import subprocess
import sys
from pathlib import Path

here = Path.cwd()
(here / "kit_settings.py").write_text(
    "from docs_settings import *  # noqa: F403\\n"
    "DATABASES['default']['TEST'] = {'NAME': 'kit-test.sqlite3'}\\n"
)
tests = sorted((here / "flags" / "tests").glob("test_*.py"))
expected = sum(
    1
    for path in tests
    for node in ast.parse(path.read_text()).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
)
result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
     *map(str, tests)],
    cwd=here,
    env={**os.environ, "DJANGO_SETTINGS_MODULE": "kit_settings"},
    capture_output=True,
    text=True,
    timeout=80,
)
assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
assert f"{expected} passed" in result.stdout, result.stdout[-2000:]
consistency = ast.parse((here / "flags/tests/test_consistency.py").read_text())
(first,) = [n for n in consistency.body if isinstance(n, ast.FunctionDef)]
assert first.end_lineno - first.lineno + 1 <= 10, "the two-node test grew"
"""

SETUPS: dict[str, PageSetup] = {
    "docs/testing.md": PageSetup(after=RUN_KIT_TESTS),
    "README.md": PageSetup(
        prelude="""
schema_loads = []


def load_schema_from_db():
    schema_loads.append(1)
    return {"orders": ["total"]}


def create_default_collections():
    schema_loads.append("installed")


def reindex():
    return "reindexed"
""",
        after="""
from mega_cluster.testing import make_app

node = make_app("docs-readme")
plugin = DataSourcePlugin(node)
assert plugin.name == "data-source" and plugin.dependencies == ["auth"]
plugin.load()
plugin.install()
plugin.handle_sync_message({"changed": "orders"})
assert plugin.schema == {"orders": ["total"]}
assert schema_loads == [1, "installed", 1]
assert not app.lock_manager.list_locks()  # run_exclusive released it
node.stop()
""",
    ),
    "docs/locks.md": PageSetup(
        files=FIXTURES,
        prelude="""
from decimal import Decimal

from docs_fixtures.models import Invoice

migrated = []
cleaned = []


def build_daily_report():
    return "report"


def migrate_tenant(tenant, fence):
    migrated.append((tenant, fence))


def cleanup():
    cleaned.append(True)


def compute_total(invoice):
    return Decimal("42.00")


invoice = Invoice.objects.create()
""",
        after="""
assert report == "report"
assert migrated and migrated[0][0] == 42 and migrated[0][1] >= 1
assert cleaned == [True]
invoice.refresh_from_db()
assert invoice.total == 42 and invoice.last_fence == lock.fence
assert not locks.list_locks()
""",
    ),
    "docs/cache.md": PageSetup(
        files=FIXTURES,
        # The page's ``store="redis"`` is an alias of the reader's CACHES; here a
        # process-local one, so the docs need no server.
        settings='CACHES = {**CACHES, "redis": {"BACKEND": '
        '"django.core.cache.backends.locmem.LocMemCache", "LOCATION": "docs"}}\n',
        prelude="""
user_id = 7


def load_profile(user_id):
    return {"id": user_id, "name": "Ada"}
""",
        after="""
from django.apps import apps as django_apps

from mega_cluster.testing import make_app

assert profile == {"id": 7, "name": "Ada"}
assert users.get("count") is None  # reset() forgot it
node = make_app("docs-cache")
plugin = CatalogPlugin(node, django_apps.get_app_config("docs_fixtures"))
plugin.cache.set("sku-1", {"price": 3})
assert plugin.cache.get("sku-1") == {"price": 3}
prices = plugin.create_cache("prices")
prices.set("sku-1", 3)
assert prices.get("sku-1") == 3
node.stop()
""",
    ),
    "docs/pubsub.md": PageSetup(
        prelude="""
schema_cache = {"orders": object()}
reloaded = []


def reload_settings(message):
    reloaded.append(message)


def refresh_row(message):
    reloaded.append(message)


def update_price(message):
    reloaded.append(message)


def reload_all_prices():
    reloaded.append("all")
""",
        after="""
assert seen == [{"id": 1}]
assert "orders" in schema_cache  # published to the other nodes only
""",
    ),
    "docs/events.md": PageSetup(
        files=FIXTURES,
        prelude="""
from docs_fixtures.models import Invoice, Report

report = Report.objects.create()
""",
        before={
            # Two dead letters on the channel: the sample's event fails with a
            # timeout, another one with a bug.
            "q.stats()": """
from mega_cluster import get_app
from mega_cluster.testing import make_app, wait_until


def fail(payload, ctx):
    if payload["id"] == report.pk:
        raise TimeoutError("the renderer timed out")
    raise ValueError("no such report")


worker = make_app(
    get_app().name, {"EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05}}
)
worker.event_queue.subscribe("reports.render", process=fail)
worker.event_queue.publish("reports.render", {"id": -1})
worker.start()
wait_until(
    lambda: worker.event_queue.stats("reports.render")["reports.render"]["dead"] == 2,
    10,
    "two dead letters",
)
worker.stop()
""",
        },
        after="""
from mega_cluster import get_app
from mega_cluster.testing import make_app, wait_until

stats = q.stats("reports.render")["reports.render"]
assert (stats["dead"], stats["pending"]) == (0, 1), stats  # retried one, discarded one
# The retried event runs on a node with the page's plugin: render() succeeds.
node = make_app(
    get_app().name, {"EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05}}
)
plugin = ReportsPlugin(node)
node.plugins = {plugin.name: plugin}
node.start()
wait_until(
    lambda: q.stats("reports.render")["reports.render"]["succeeded"] == 1,
    10,
    "the retried event to run",
)
node.stop()

# The idempotent handler: its effect once per event id, however often it runs.
from decimal import Decimal

from mega_cluster.events import EventContext
from mega_cluster.inbox import get_inbox

invoice = Invoice.objects.create(total=0)
payment = {"invoice": invoice.pk, "amount": "12.50"}
node = make_app(
    get_app().name, {"EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05}}
)
node.event_queue.subscribe("payments", process=add_payment, max_retries=5)
node.start()
event_id = node.event_queue.publish("payments", payment)
wait_until(
    lambda: q.stats("payments")["payments"]["succeeded"] == 1, 10, "the payment"
)
sub = node.event_queue.subscriptions()["payments"]
sub.process(payment, EventContext(id=event_id, channel="payments", attempt=2))
invoice.refresh_from_db()
assert invoice.total == Decimal("12.50"), invoice.total
assert get_inbox(node).stats() == {"event:payments": {"recorded": 1, "skipped": 1}}
node.stop()
""",
    ),
    "docs/schedules.md": PageSetup(
        # The page's "digest" job, declared for the default app, which the
        # operating sample's get_schedules() starts.
        settings="""
MEGA_CLUSTER["SCHEDULES"] = {
    "JOBS": {
        "digest": {
            "FUNCTION": "reports.jobs.send_digest",
            "CRON": "0 7 * * mon-fri",
            "TIMEZONE": "Europe/Paris",
            "MAX_RETRIES": 5,
        },
    },
}
""",
        after="""
paused = {s.job.name: s.paused for s in schedules.status()}
assert paused["digest"] is True, paused
assert len(schedules.runs("digest")) == 1  # the run_now
""",
    ),
    "docs/tasks.md": PageSetup(
        requires="django.tasks",
        settings=TASKS_SETTINGS,
        before={
            # A worker node of the page's cluster app runs the page's tasks.
            'send_welcome.enqueue("ada@example.com")': """
from mega_cluster import get_app
from mega_cluster.testing import make_app

worker = make_app(
    get_app().name, {"EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05}}
)
worker.start()
ns["_tasks_worker"] = worker
""",
        },
        after="""
from django.conf import settings
from django.core import mail
from django.tasks.checks import check_tasks

from mega_cluster.models import TaskRun
from mega_cluster.testing import wait_until

assert TASKS == settings.TASKS, "the page's TASKS is the one the samples ran with"
assert list(check_tasks()) == []
runs = TaskRun.objects.all()
try:
    wait_until(
        lambda: runs.filter(status="SUCCESSFUL").count() == 3,
        30,
        f"tasks: {list(runs.values_list('status', 'args', 'errors'))}",
    )
finally:
    ns["_tasks_worker"].stop()
assert sorted(m.to[0] for m in mail.outbox) == [
    "ada@example.com", "carol@example.com", "dave@example.com"
]
(later,) = runs.filter(status="READY")  # run_after: in ten minutes
assert later.args == ["bob@example.com"] and later.run_after is not None
assert send_welcome.get_result(result.id).return_value == {"sent_to": "ada@example.com"}
""",
    ),
    "docs/sync-messages.md": PageSetup(
        files=FIXTURES,
        # the reader migrated the outbox tables into every database whose
        # transactions carry sync messages (the page says so)
        before={
            'transaction="reporting"': "from django.core.management import "
            "call_command\ncall_command('migrate', database='reporting', verbosity=0)"
        },
        settings='DATABASES["reporting"] = {**DATABASES["default"], "NAME": '
        'DATABASES["default"]["NAME"] + ".reporting"}\n',
        prelude="""
from docs_fixtures.models import Source

catalog = []


def load_sources_from_db():
    return {source.pk: source for source in Source.objects.all()}


def on_catalog(message):
    catalog.append(message)


def reload_catalog():
    catalog.append("reload")
"""
        + TWO_NODES,
        after="""
source = Source.objects.create(name="crm")
a, b = start_nodes(DataSourcePlugin, "docs-sync")
assert b.sources[source.pk].name == "crm"
source.name = "erp"
a.save_source(source)
wait_until(lambda: b.sources[source.pk].name == "erp", 5, "node B to reload")
Source.objects.create(name="billing")
b.handle_sync_gap()
assert sorted(s.name for s in b.sources.values()) == ["billing", "erp"]
stop()
# Idempotent handlers: a message sent twice with one id has its effect once.
from mega_cluster.inbox import get_inbox
from mega_cluster.pubsub import envelope
from mega_cluster.sync_messages.manager import WIRE_PREFIX

audit_a, audit_b = start_nodes(AuditPlugin, "docs-audit")
wire = WIRE_PREFIX + audit_a.sync_channel
data = envelope.build(
    app="docs-audit", node="node-a", channel=wire, seq=1,
    to=envelope.TO_OTHERS, payload_json='{"created":"audited"}',
)
backend = audit_a.app.pubsub_manager.backend
for _ in range(2):
    backend.publish_sync(backend.wire_channel(wire), data)
consumer = "sync:plugin:audit:handle_sync_message"
wait_until(
    lambda: get_inbox(audit_b.app).stats().get(consumer, {}).get("skipped") == 1,
    5,
    "the duplicate to be skipped",
)
assert Source.objects.filter(name="audited").count() == 1
assert stop_recording()
audit_a.app.stop()
audit_b.app.stop()
a.app.stop()
b.app.stop()
""",
    ),
    "docs/plugins.md": PageSetup(
        files={
            # the plugin the page's ``dependencies = ["auth"]`` names
            "docs_auth/plugin.py": (
                "from mega_cluster import Plugin\n\n\n"
                "class AuthPlugin(Plugin):\n"
                '    name = "auth"\n'
            ),
        },
        before={
            'app.disable_plugin("data-source")': (
                "from mega_cluster import get_app\n\nget_app().start()\n"
            )
        },
        after="""
from mega_cluster.registry import registry

app = get_app()
assert app.plugins["data-source"].enabled and app.plugins["data-source"].loaded
assert list(app.plugins).index("auth") < list(app.plugins).index("data-source")
assert DataSourceConfig.plugin == "myapp.cluster.DataSourcePlugin"
when_ready(server=None)
assert not app.started
""",
    ),
    "docs/settings.md": PageSetup(
        prelude='REDIS_URL = "redis://127.0.0.1:6379/0"\n',
        after="""
import re

from django.utils.module_loading import import_string

from mega_cluster import conf

# Every option a backend reads is in the "Backend options" table, and the
# table names no option the backend does not read.
from __main__ import options_read_by

SECTIONS = {"locks": "LOCKS", "pub/sub": "PUBSUB", "event queue": "EVENT_QUEUE"}
NOT_OPTIONS = {"DATABASES", "CHANNEL_LAYERS", "NOTIFY"}
table = page_text.split("### Backend options", 1)[1].split("\\n\\n")[1]
rows = [line for line in table.splitlines()[2:] if line.startswith("| `")]
assert len(rows) >= 7, rows
for row in rows:
    backend, options = row.strip("|").split("|")
    alias, section = re.match(r" `(\\w+)` (.+?) $", backend).groups()
    path = conf.BACKEND_ALIASES[SECTIONS[section]][alias]
    documented = set(re.findall(r"`([A-Z][A-Z_]+)`", options)) - NOT_OPTIONS
    read = options_read_by(import_string(path))
    assert documented == read, (row, sorted(read))
""",
    ),
    "docs/health-metrics.md": PageSetup(
        after="""
import json
import sys
import types

from django.test import Client, override_settings

from mega_cluster import get_app

module = types.ModuleType("docs_urls")
module.urlpatterns = [p for p in urlpatterns if p is not Ellipsis]
sys.modules["docs_urls"] = module
app = get_app()
app.start()
with override_settings(ROOT_URLCONF="docs_urls"):
    response = Client().get("/cluster/health/")
    assert Client().get("/cluster/metrics/").status_code in (200, 404)
assert response.status_code == 200, response.content


def shape(value):
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


documented = json.loads(next(b["code"] for b in doc_blocks if b["lang"] == "json"))
real = response.json()
documented_app = documented["apps"].pop("main")
real_app = real["apps"].pop(app.name)
documented["cluster_apps"] = {app.name: documented["cluster_apps"].pop("main")}
assert shape(real) == shape(documented), (real, documented)
assert shape(real_app) == shape(documented_app), (real_app, documented_app)
app.stop()
""",
    ),
    "docs/operations.md": PageSetup(
        after="""
import io
import re

from django.core.management import call_command

from mega_cluster import get_app
from mega_cluster.testing import wait_until

TITLES = [
    r"Cluster app \\S+",
    r"Nodes \\((\\d+) alive, (\\d+) dead\\)",
    r"Locks \\((\\d+) held\\)",
    r"Queues \\((\\d+) channels\\)",
    r"Backends \\((\\d+) answer, (\\d+) failed(?:; circuits open: .+)?\\)",
]


def sections(text):
    # [(title, header cells, rows of cells)] of a cluster_status table output
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("WARNING: ", "ERROR: ")):
            continue  # the mix-ups under the tables, documented below them
        if not line.startswith("  "):
            assert any(re.fullmatch(t, line) for t in TITLES), repr(line)
            found.append((line, None, []))
        elif found[-1][1] is None and line.split() != ["(none)"]:
            found[-1] = (found[-1][0], line.split(), [])
        else:
            found[-1][2].append(line.split())
    return found


app = get_app()
app.start()
wait_until(app.node_registry.list_nodes, 5, "this node's first heartbeat")
held = app.lock_manager.acquire("invoices:nightly", ttl=30)
app.event_queue.publish("emails", {"to": "ops@example.com"})
out = io.StringIO()
call_command("cluster_status", stdout=out, no_color=True)
held.release()
app.stop()
real = sections(out.getvalue())

console = next(b["code"] for b in doc_blocks if "cluster_status" in b["code"])
documented = sections(console.split("\\n", 1)[1])
assert len(real) == len(documented) == 5, (real, documented)
for (r_title, r_header, r_rows), (d_title, d_header, d_rows) in zip(real, documented):
    pattern = next(t for t in TITLES if re.fullmatch(t, d_title))
    assert re.fullmatch(pattern, r_title), (r_title, d_title)
    assert r_header == d_header, (r_header, d_header)
    if d_header is None:
        continue  # the app's title line
    assert r_rows, r_title
    for cells in d_rows:
        assert len(cells) == len(d_header), (d_header, cells)
    counts = re.fullmatch(pattern, d_title).groups()
    if counts:
        assert sum(map(int, counts)) == len(d_rows), (d_title, d_rows)
""",
    ),
    "docs/guide/troubleshooting.md": PageSetup(
        # the reader's settings.py, as startproject writes it
        prelude="""
from pathlib import Path

BASE_DIR = Path.cwd()
""",
    ),
    "docs/guide/nocobase.md": PageSetup(
        after=TWO_NODES
        + """
import threading

a, b = start_nodes(TaskManager, "docs-nocobase")
running = threading.Event()
b.running["t1"] = running
a.cancel("t1")  # node A's cancel stops the task on node B
wait_until(running.is_set, 5, "node B to stop the task")

removed = []
fields = Fields(a.app)
fields.remove_field("orders", "note", lambda c, f: removed.append((c, f)))
assert removed == [("orders", "note")]
assert not a.app.lock_manager.list_locks()
a.app.stop()
b.app.stop()
""",
    ),
}
