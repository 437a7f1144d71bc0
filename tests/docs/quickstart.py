"""Follow docs/quickstart.md as a reader would, from its own code blocks.

``steps(new_run(bin_dir, workdir, ...), page_text)`` runs the page top to bottom
with the ``python`` and ``django-admin`` of ``bin_dir`` (a virtualenv holding
mega_cluster):

- ``bash`` blocks: each line is run in order. ``python -m venv``, ``source`` and
  ``pip install`` are the reader's set-up of ``bin_dir`` and are skipped (the
  caller built it: the suite's ``.venv``, or a fresh one holding only the wheel);
  ``django-admin``, ``cd`` and ``python ...`` run for real and must exit 0.
- ``bash serve`` blocks: each line is a long-running process (the three nodes).
- ``python file=PATH`` blocks are files of the project: written whole, ``append``-ed,
  or ``replace=NAME`` replacing the generated assignment of ``NAME`` (the values
  ``startproject`` generated must all be kept).
- ``console`` blocks: each ``$`` command runs and its output must be the lines
  shown under it. Node ids differ per run: each id shown on the page stands for one
  real node id, the same one everywhere on the page, and different ids on the page
  are different nodes. An output that depends on another process (node B following
  node A, the worker running the event) is retried for a bounded time.

Three substitutions keep the run apart from other runs on this machine and are
the only changes to the page's text: the ports 8001/8002 become free ports, the
``APP_NAME`` becomes the test's unique name and the Redis URL the suite's.
"""

from __future__ import annotations

import ast
import http.cookiejar
import os
import re
import shlex
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from demo.cluster import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = ROOT / "docs" / "quickstart.md"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NODE_ID = re.compile(r"\b[A-Za-z0-9][\w.-]*-\d+-[0-9a-f]{8}\b")
PAGE_REDIS = "redis://127.0.0.1:6379/0"
PAGE_APP_NAME = '"APP_NAME": "mysite"'
WAIT = 20.0  # seconds an output that follows another process may take


@dataclass
class Block:
    lang: str
    options: list[str]
    code: str
    line: int

    def option(self, name: str) -> str | None:
        for option in self.options:
            if option == name or option.startswith(f"{name}="):
                return option.partition("=")[2] or option
        return None


def page_blocks(text: str) -> list[Block]:
    return [
        Block(
            m.group(1), m.group(2).split(), m.group(3), text.count("\n", 0, m.start())
        )
        for m in FENCE.finditer(text)
    ]


@dataclass
class Run:
    """What following the page did: the processes, the node ids, the outputs."""

    bin_dir: Path
    cwd: Path
    env: dict[str, str]
    ports: dict[str, int]
    app_name: str
    redis_url: str
    log_dir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # page id -> real id
    outputs: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    # text of the page -> text of this run --------------------------------------------

    def localize(self, text: str) -> str:
        for page_port, port in self.ports.items():
            text = re.sub(rf"\b{page_port}\b", str(port), text)
        text = text.replace(PAGE_APP_NAME, f'"APP_NAME": "{self.app_name}"')
        return text.replace(PAGE_REDIS, self.redis_url)

    def argv(self, words: list[str]) -> list[str]:
        if words[0] == "python":
            return [str(self.bin_dir / "python"), *words[1:]]
        if words[0] == "django-admin":
            return [str(self.bin_dir / "django-admin"), *words[1:]]
        if words[0] == "curl":
            return words
        raise AssertionError(f"the quickstart test cannot run {shlex.join(words)!r}")

    # running ---------------------------------------------------------------------------

    def command(self, line: str) -> tuple[list[str], dict[str, str]] | None:
        words = shlex.split(self.localize(line), comments=True)
        env = dict(self.env)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if not words:
            return None
        if words[0] == "cd":
            self.cwd = self.cwd / words[1]
            assert self.cwd.is_dir(), line
            return None
        if words[0] in ("source", ".") or words[:3] == ["python", "-m", "venv"]:
            self.skipped.append(line)
            return None
        if words[:2] == ["pip", "install"]:
            assert re.search(r"\[redis\]", line), line
            self.skipped.append(line)
            return None
        return self.argv(words), env

    def run(self, line: str) -> str:
        found = self.command(line)
        if found is None:
            return ""
        argv, env = found
        result = subprocess.run(
            argv, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (
            f"{line!r} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        self.outputs.append((line, result.stdout))
        return result.stdout

    def spawn(self, line: str) -> None:
        found = self.command(line)
        assert found is not None, line
        argv, env = found
        name = f"p{len(self.procs)}"
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((line, proc))

    def log(self, index: int) -> str:
        return (self.log_dir / f"p{index}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for index, (line, proc) in enumerate(self.procs):
            if proc.poll() is not None:
                raise AssertionError(
                    f"{line!r} exited with {proc.returncode}:\n{self.log(index)[-4000:]}"
                )

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while not port_open("127.0.0.1", port):
                self.check_alive()
                assert time.monotonic() < deadline, f"nothing listens on {port}"
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after 15 s."""
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    # comparing -------------------------------------------------------------------------

    def matches(self, expected: str, actual: str) -> bool:
        """``actual`` is ``expected`` with each page node id read as a real one
        (learning the pairs the first time a page id is seen)."""
        pattern = ""
        pos = 0
        order: list[str] = []
        for m in NODE_ID.finditer(expected):
            pattern += re.escape(expected[pos : m.start()]) + r"(\S+?)"
            order.append(m.group())
            pos = m.end()
        pattern += re.escape(expected[pos:])
        found = re.fullmatch(pattern, actual)
        if found is None:
            return False
        pairs = dict(self.ids)
        for page_id, real in zip(order, found.groups()):
            if not NODE_ID.fullmatch(real):
                return False
            if pairs.setdefault(page_id, real) != real:
                return False
        if len(set(pairs.values())) != len(pairs):  # two page ids, one real node
            return False
        self.ids = pairs
        return True

    def expect(self, line: str, expected: str) -> float:
        """Run ``line`` until its output matches; the seconds that took."""
        start = time.monotonic()
        while True:
            actual = self.run(line).strip()
            if self.matches(expected, actual):
                return time.monotonic() - start
            self.check_alive()
            if time.monotonic() - start > WAIT:
                raise AssertionError(
                    f"{line!r} printed\n{actual}\ninstead of\n{expected}\n"
                    f"(node ids so far: {self.ids})"
                )
            time.sleep(0.2)


def write_file(path: Path, block: Block) -> None:
    """A ``python file=`` block into the project: whole, appended or replacing one
    generated assignment, whose generated values must all still be there."""
    code = block.code
    if block.option("append"):
        with path.open("a") as fh:
            fh.write("\n" + code)
        return
    name = block.option("replace")
    if name is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        return
    source = path.read_text()
    node = next(
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
    )
    old = ast.literal_eval(node.value)
    new = ast.literal_eval(ast.parse(code).body[0].value)  # type: ignore[attr-defined]
    missing = [item for item in old if item not in new]
    assert not missing, f"{path.name} {name}: the page drops {missing}"
    lines = source.splitlines(keepends=True)
    start, end = node.lineno - 1, node.end_lineno or node.lineno
    path.write_text("".join([*lines[:start], code, *lines[end:]]))


def new_run(bin_dir: Path, workdir: Path, *, app_name: str, redis_url: str) -> Run:
    """A run in an empty ``workdir``; the caller ``stop()``s it when done."""
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True)
    (workdir / "project").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "MC_TEST_CHILD")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env["PYTHONUNBUFFERED"] = "1"
    return Run(
        bin_dir=bin_dir,
        cwd=workdir / "project",
        env=env,
        ports={"8001": free_port(), "8002": free_port()},
        app_name=app_name,
        redis_url=redis_url,
        log_dir=log_dir,
    )


def steps(run: Run, text: str) -> list[tuple[str, float]]:
    """Every block of the page, in order; the seconds each shown output took."""
    waited: list[tuple[str, float]] = []
    for block in page_blocks(text):
        if block.lang == "bash" and block.option("serve"):
            for line in block.code.splitlines():
                if line.strip():
                    run.spawn(line)
            run.wait_listening()
        elif block.lang == "bash":
            for line in block.code.splitlines():
                run.run(line)
        elif block.lang == "python" and block.option("file"):
            write_file(run.cwd / str(block.option("file")), run_block(run, block))
        elif block.lang == "console":
            command, expected = None, []
            for line in [*block.code.splitlines(), "$ "]:
                if line.startswith("$ "):
                    if command is not None:
                        waited.append(
                            (command, run.expect(command, "\n".join(expected)))
                        )
                    command, expected = line[2:], []
                else:
                    expected.append(line)
    return waited


def run_block(run: Run, block: Block) -> Block:
    return Block(block.lang, block.options, run.localize(block.code), block.line)


# the admin pages -----------------------------------------------------------------------


class Admin:
    """A logged-in admin session on one web node."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar)
        )
        page = self.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:2000]
        data = urllib.parse.urlencode(
            {
                "csrfmiddlewaretoken": token.group(1),
                "username": username,
                "password": password,
                "next": "/admin/",
            }
        ).encode()
        request = urllib.request.Request(f"{self.base}/admin/login/", data=data)
        request.add_header("Referer", f"{self.base}/admin/login/")
        with self.opener.open(request, timeout=30) as response:
            body = response.read().decode()
            assert response.url.endswith("/admin/"), body[:2000]

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            assert response.status == 200, path
            return response.read().decode()
