"""The package as a user gets it: built from a clean clone, installed alone.

From a ``git clone`` of the committed tree, ``python -m build`` makes the sdist and
the wheel; both carry LICENSE, the metadata names the MIT license and carries the
README (markdown, with no link that only works inside the repository). A fresh
virtualenv with only that wheel and its ``redis`` extra then follows
docs/quickstart.md to the end (``test_quickstart.follow_the_page``). Marked
``packaging``: it builds and installs (about a minute).
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from ..dist import fresh_venv, run
from .test_quickstart import follow_the_page

pytestmark = [pytest.mark.packaging]

ROOT = Path(__file__).resolve().parent.parent.parent

# A markdown link or image whose target is not an absolute URL.
RELATIVE_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*://|#)([^)\s]+)\)")


def test_the_readme_works_outside_the_repository():
    """PyPI shows the README alone: every link and image must be absolute."""
    readme = (ROOT / "README.md").read_text()
    assert RELATIVE_LINK.findall(readme) == []
    assert readme.index("pip install") < readme.index("./dev run")


def test_license_and_readme_are_in_both_archives(dist: Path):
    (sdist,) = dist.glob("mega_cluster-*.tar.gz")
    (wheel,) = dist.glob("mega_cluster-*.whl")
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")

    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = set(tar.getnames())
        assert f"{top}/LICENSE" in names
        assert f"{top}/docs/quickstart.md" in names
        sdist_license = tar.extractfile(f"{top}/LICENSE").read().decode()
        assert sdist_license == license_text

    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert f"{info}/licenses/LICENSE" in names, sorted(names)
        assert whl.read(f"{info}/licenses/LICENSE").decode() == license_text
        assert "mega_cluster/templates/admin/mega_cluster/nodes.html" in names
        assert not any(
            n.startswith(("tests/", "docs/", "example_project/")) for n in names
        )
        metadata = Parser().parsestr(whl.read(f"{info}/METADATA").decode())

    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (ROOT / "README.md").read_text().strip()


@pytest.mark.cluster
@pytest.mark.redis
def test_a_fresh_virtualenv_with_only_the_wheel_follows_the_quickstart(
    dist: Path, tmp_path: Path, unique_name: str
):
    (wheel,) = dist.glob("mega_cluster-*.whl")
    bin_dir = fresh_venv(tmp_path / "venv", f"{wheel}[redis]")
    installed = run(bin_dir / "python", "-m", "pip", "list", "--format=freeze")
    names = {line.split("==")[0].lower() for line in installed.split()}
    # the wheel, Django and the redis extra: nothing of the repository
    assert {"mega-cluster", "django", "redis", "django-redis"} <= names, names
    assert not names & {"pytest", "pytest-django", "ruff"}, names
    where = run(
        bin_dir / "python",
        "-c",
        "import mega_cluster; print(mega_cluster.__file__)",
        cwd=tmp_path,
    )
    assert where.startswith(str(tmp_path / "venv")), where
    follow_the_page(bin_dir, tmp_path / "page", unique_name)
