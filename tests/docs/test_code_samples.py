"""Every code sample of the docs (``docs/**/*.md`` and ``README.md``) is checked.

Python: each page runs in a child process with a fresh SQLite database: its
samples are executed in order in one namespace, as a reader would type them,
against the embedded backends. A fenced block ``python file=myapp/models.py`` is
a file of the reader's project: it is written to a temporary folder on the import
path (its top-level package becomes an installed app, migrated, when the folder
has ``models.py`` or ``plugin.py``) instead of being executed. What a page's
samples take from the reader's project (their models, their functions) and the
checks of what the samples did are in ``setups.py``. A sample that assigns
``MEGA_CLUSTER``, ``DATABASES``, ``CACHES`` or ``INSTALLED_APPS`` is validated
(``run_samples.py``). ``python signature=dotted.path`` shows the signature of a
callable and must match it. ``python norun <why>`` marks the rare fragment that
cannot run (it is still compiled) and says why.

Shell (``bash``, ``console``): every ``manage.py`` command line parses with the
command's own parser, ``./dev`` sub-commands and pip extras exist. The
``cluster_status`` output of the operations guide is compared with a real run.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django.core.management.base import CommandError
from django.utils.module_loading import import_string

from .setups import SETUPS, PageSetup

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = ROOT / "docs" / "guide"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
GUIDE_PAGES = sorted(GUIDE.glob("*.md"))
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    options: tuple[str, ...]
    code: str

    def option(self, name: str) -> str | None:
        for option in self.options:
            if option.startswith(f"{name}="):
                return option.removeprefix(f"{name}=")
        return None

    @property
    def file(self) -> str | None:
        return self.option("file")

    @property
    def signature(self) -> str | None:
        return self.option("signature")

    @property
    def norun(self) -> bool:
        return bool(self.options) and self.options[0] == "norun"


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        found.append(
            Block(
                page=str(path.relative_to(ROOT)),
                line=text.count("\n", 0, match.start()) + 2,
                lang=match.group(1),
                options=tuple(match.group(2).split()),
                code=match.group(3),
            )
        )
    return found


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang == "python"]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_docs_have_pages_with_samples():
    """The fence parser finds the samples (a broken pattern would find none).
    The one quickstart (docs/quickstart.md, run as processes by
    test_quickstart.py) replaced the guide's second one and its seven samples."""
    assert len(GUIDE_PAGES) >= 7, GUIDE_PAGES
    assert len(SAMPLE_PAGES) >= 15, SAMPLE_PAGES
    assert sum(len(python_blocks(p)) for p in PAGES) >= 50


def test_norun_is_rare_and_explained():
    """At most one sample in fifty is exempt from running, and it says why."""
    samples = [b for p in PAGES for b in python_blocks(p)]
    norun = [b for b in samples if b.norun]
    assert len(norun) * 50 <= len(samples), [(b.page, b.line) for b in norun]
    for block in norun:
        assert len(block.options) > 1, f"{block.page} line {block.line}: norun why?"


def test_setups_name_pages_with_samples():
    """A set-up belongs to a page with samples, each ``before`` to one sample."""
    for page, setup in SETUPS.items():
        samples = python_blocks(ROOT / page)
        assert samples, page
        for key in setup.before:
            found = [b.line for b in samples if key in b.code]
            assert len(found) == 1, (page, key, found)


SAMPLE_PAGES = [p for p in PAGES if python_blocks(p)]


@pytest.mark.parametrize("page", SAMPLE_PAGES, ids=[page_id(p) for p in SAMPLE_PAGES])
def test_page_samples_run(page: Path, tmp_path: Path, unique_name: str):
    setup = SETUPS.get(page_id(page), PageSetup())
    if setup.requires and importlib.util.find_spec(setup.requires) is None:
        pytest.skip(f"{page_id(page)} needs {setup.requires}")
    samples = python_blocks(page)
    for block in samples:
        if not block.signature:
            compile(block.code, f"{block.page} line {block.line}", "exec")
    runnable = [b for b in samples if not b.file and not b.norun and not b.signature]
    page_json = {
        "page": page_id(page),
        "page_text": page.read_text(),
        "prelude": setup.prelude,
        "after": setup.after,
        "blocks": [
            {
                "page": b.page,
                "line": b.line,
                "code": b.code,
                "before": next((v for k, v in setup.before.items() if k in b.code), ""),
            }
            for b in runnable
        ],
        "others": [
            {"lang": b.lang, "code": b.code} for b in blocks(page) if b.lang != "python"
        ],
    }
    files = {b.file: b.code for b in samples if b.file}
    files.update(setup.files)
    labels = []
    for name, code in files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
        parts = Path(name).parts
        if len(parts) == 2 and parts[1] in ("models.py", "plugin.py"):
            if parts[0] not in labels:
                labels.append(parts[0])
    for label in labels:
        for folder in [tmp_path / label, *(tmp_path / label).rglob("*")]:
            if folder.is_dir() and not (folder / "__init__.py").exists():
                (folder / "__init__.py").write_text("")
    databases = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(tmp_path / "docs.sqlite3"),
            # as the quickstart advises for SQLite
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
    (tmp_path / "docs_settings.py").write_text(
        "from tests.settings import *  # noqa\n"
        "from tests.settings import INSTALLED_APPS\n"
        f"INSTALLED_APPS = [*INSTALLED_APPS, *{labels!r}]\n"
        f"DATABASES = {databases!r}\n"
        f"MEGA_CLUSTER = {{'APP_NAME': {unique_name!r}}}\n" + setup.settings
    )
    (tmp_path / "page.json").write_text(json.dumps(page_json))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "docs_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("run_samples.py")),
            str(tmp_path / "page.json"),
            json.dumps(labels),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert result.stdout.count("ran ") == len(runnable)
    assert result.stdout.count("checked ") == bool(setup.after)


SIGNATURES = [b for p in PAGES for b in python_blocks(p) if b.signature]


@pytest.mark.parametrize(
    "block", SIGNATURES, ids=[f"{b.page}:{b.line}" for b in SIGNATURES]
)
def test_documented_signatures_match(block: Block):
    """A ``python signature=...`` block is the callable's real signature."""
    namespace: dict = {}
    exec(f"def {block.code.strip()}:\n    pass\n", namespace)
    name = block.code.split("(", 1)[0].strip()
    documented = inspect.signature(namespace[name])
    owner, attr = block.signature.rsplit(".", 1)
    real = inspect.signature(getattr(import_string(owner), attr))
    real = real.replace(
        parameters=[p.replace(annotation=p.empty) for p in real.parameters.values()][
            1:
        ],
        return_annotation=real.empty,
    )
    assert str(documented) == str(real)


SHELL = [b for p in PAGES for b in blocks(p) if b.lang in ("bash", "console")]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
DEV_COMMANDS = set(re.findall(r"^  (\w+)\)$", (ROOT / "dev").read_text(), re.M))


def shell_commands(block: Block) -> list[list[str]]:
    commands = []
    for line in block.code.splitlines():
        if block.lang == "console":
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        words = shlex.split(line, comments=True)
        while words and "=" in words[0]:
            words.pop(0)  # VAR=value prefix
        if words and words[-1] == "&":
            words.pop()
        if words:
            commands.append(words)
    return commands


@pytest.mark.parametrize("block", SHELL, ids=[f"{b.page}:{b.line}" for b in SHELL])
def test_shell_samples(block: Block):
    """``manage.py`` lines parse with the command's parser; ``./dev`` sub-commands,
    pip extras and the paths given to pytest exist."""
    commands = shell_commands(block)
    assert commands, block
    for words in commands:
        where = f"{block.page} line {block.line}: {shlex.join(words)}"
        if "manage.py" in words:
            name, *args = words[words.index("manage.py") + 1 :]
            command = load_command_class(get_commands()[name], name)
            try:
                command.create_parser("manage.py", name).parse_args(args)
            except CommandError as exc:
                raise AssertionError(f"{where}: {exc}") from None
        elif words[0] == "./dev":
            assert words[1] in DEV_COMMANDS, where
        elif words[:2] == ["pip", "install"]:
            for spec in words[2:]:
                extras = re.search(r"\[(.*)\]", spec)
                assert extras is None or set(extras[1].split(",")) <= EXTRAS, where
        elif "pytest" in words:
            paths = [w for w in words[words.index("pytest") + 1 :] if "/" in w]
            assert all((ROOT / p).exists() for p in paths), where


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=[page_id(p) for p in PAGES])
def test_links_resolve(page: Path):
    """Every relative link of the docs points at a file of the repository."""
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).resolve().exists(), f"{page.name}: {target}"


def test_cluster_status_sample_is_what_the_command_prints():
    """The documented tables are the command's own rendering of their rows
    (columns, order and alignment; the real run is in ``setups.py``)."""
    from mega_cluster.management.commands.cluster_status import table

    console = next(
        b.code
        for b in blocks(ROOT / "docs" / "operations.md")
        if "cluster_status" in b.code
    )
    lines = console.splitlines()[1:]
    rendered, header, rows = [], None, []
    for line in [*lines, "end"]:
        if line.startswith("  ") and header is None:
            header = tuple(cell.lower() for cell in line.split())
        elif line.startswith("  "):
            rows.append(dict(zip(header, line.split())))
        else:
            if header is not None:
                rendered.append(table(header, rows))
            header, rows = None, []
            rendered.append(line)
    assert "\n".join(rendered[:-1]) == "\n".join(lines)
