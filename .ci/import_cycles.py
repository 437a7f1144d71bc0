"""Fail when modules of a package import each other in a cycle.

Usage: python .ci/import_cycles.py [PACKAGE_DIR]   (default: mega_cluster)

Every ``import`` / ``from ... import`` of a module of the package counts, at module
level and inside functions alike, except those under ``if TYPE_CHECKING:`` (they
never run). ``from pkg import name`` points at the submodule ``pkg.name`` when
there is one, else at ``pkg`` itself. Prints each cycle as a path of imports with
their line numbers and exits 1; prints nothing and exits 0 when there is none.
Reads files only: nothing is imported or run.
"""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

Edge = tuple[str, str, int]  # importer, imported, line


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that can run: all but those under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the else branch does run
                    walk_stmt(stmt)
                continue
            walk_stmt(child)

    def walk_stmt(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        walk(node)

    walk(tree)
    return found


def edges(root: Path) -> list[Edge]:
    """Every import of one module of the package by another."""
    modules = module_names(root)
    result: list[Edge] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    drop = node.level - 1 if is_package else node.level
                    base = base[: len(base) - drop] if drop else base
                    prefix = ".".join(base)
                    source = f"{prefix}.{node.module}" if node.module else prefix
                else:
                    source = node.module or ""
                targets = []
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            for target in targets:
                # "import a.b.c" binds a package; the module it runs is a.b.c
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    result.append((name, target, node.lineno))
    return result


def cycles(graph_edges: list[Edge]) -> list[list[Edge]]:
    """One shortest cycle per strongly connected group of modules."""
    graph: dict[str, dict[str, int]] = {}
    for src, dst, line in graph_edges:
        graph.setdefault(src, {}).setdefault(dst, line)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, iterative enough for a package
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    found = []
    for group in groups:
        start = min(group)
        # breadth-first back to start, inside the group: the shortest cycle
        paths = {start: [start]}
        queue = [start]
        cycle: list[str] | None = None
        while queue and cycle is None:
            v = queue.pop(0)
            for w in sorted(graph.get(v, {})):
                if w not in group:
                    continue
                if w == start:
                    cycle = [*paths[v], start]
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
        assert cycle is not None
        found.append([(a, b, graph[a][b]) for a, b in itertools.pairwise(cycle)])
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "mega_cluster").resolve()
    found = cycles(edges(root))
    for cycle in found:
        print(f"import cycle ({len(cycle)} modules):")
        for src, dst, line in cycle:
            print(f"  {src} (line {line}) imports {dst}")
    if found:
        print(
            f"{len(found)} import cycle(s) in {root.name}/: move the shared piece into "
            "a module both can import, or import for annotations only under "
            "`if TYPE_CHECKING:`."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
