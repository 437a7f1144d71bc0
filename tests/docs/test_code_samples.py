"""Every python code sample of the user guide (``docs/guide/*.md``) runs.

Each page runs in a child process with a fresh SQLite database: its samples are
executed in order in one namespace, as a reader would type them. A fenced block
``python file=myapp/models.py`` is a file of the reader's project: it is written
to a temporary folder on the import path (its top-level package becomes an
installed app, migrated, when the folder has ``models.py`` or ``plugin.py``)
instead of being executed. ``python norun`` marks the
rare fragment that cannot run (it is still compiled). A ``MEGA_CLUSTER`` a sample
assigns must parse without errors. The other ``docs/*.md`` pages' python samples
are compiled (but for ``norun`` ones).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = ROOT / "docs" / "guide"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
PAGES = sorted(GUIDE.glob("*.md"))


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    options: tuple[str, ...]
    code: str

    @property
    def file(self) -> str | None:
        for option in self.options:
            if option.startswith("file="):
                return option.removeprefix("file=")
        return None


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


def test_the_guide_has_pages_with_samples():
    assert len(PAGES) >= 7, PAGES
    assert len(SAMPLE_PAGES) >= 6, SAMPLE_PAGES
    assert sum(len(python_blocks(p)) for p in PAGES) >= 20


def test_norun_is_rare():
    """At most one sample in ten is exempt from running."""
    samples = [b for p in PAGES for b in python_blocks(p)]
    norun = [b for b in samples if "norun" in b.options]
    assert len(norun) * 10 <= len(samples), [(b.page, b.line) for b in norun]


SAMPLE_PAGES = [p for p in PAGES if python_blocks(p)]


@pytest.mark.parametrize("page", SAMPLE_PAGES, ids=[p.stem for p in SAMPLE_PAGES])
def test_page_samples_run(page: Path, tmp_path: Path, unique_name: str):
    samples = python_blocks(page)
    for block in samples:
        compile(block.code, f"{block.page} line {block.line}", "exec")
    files = [b for b in samples if b.file]
    runnable = [
        {"page": b.page, "line": b.line, "code": b.code}
        for b in samples
        if not b.file and "norun" not in b.options
    ]
    labels = []
    for block in files:
        target = tmp_path / block.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code)
        parts = Path(block.file).parts
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
        f"MEGA_CLUSTER = {{'APP_NAME': {unique_name!r}}}\n"
    )
    (tmp_path / "blocks.json").write_text(json.dumps(runnable))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "docs_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("run_samples.py")),
            str(tmp_path / "blocks.json"),
            json.dumps(labels),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert result.stdout.count("ran ") == len(runnable)


OTHER_PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", OTHER_PAGES, ids=[p.stem for p in OTHER_PAGES])
def test_reference_page_samples_compile(page: Path):
    """The reference pages' samples use names the reader defines, so they are
    compiled rather than run."""
    for block in python_blocks(page):
        if "norun" not in block.options:
            compile(block.code, f"{block.page} line {block.line}", "exec")


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_guide_links_resolve(page: Path):
    """Every relative link of the guide points at a file of the repository."""
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).resolve().exists(), f"{page.name}: {target}"
