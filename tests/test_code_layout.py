"""README's "Code layout" promises that each module imports only modules listed above it
(one stated exception): the order is what a reader follows, so a new module placed below
one it imports, or a module left out of the table, fails here rather than in review."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "natlangchain_migrate"
# README: "discovery.py imports layout_migrations.py inside a function, only for a folder in
# another tool's layout".
EXCEPTIONS = {("discovery.py", "layout_migrations.py")}


def _table() -> list[list[str]]:
    """The table's rows, each the modules its first cell names, top to bottom."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Code layout") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            rows.append(re.findall(r"`([\w/]+\.py)`", line.split("|")[1]))
    return rows


def _imported(module: Path) -> set[str]:
    """Package modules ``module`` imports anywhere (lazy imports in functions too), as
    paths relative to the package."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            relative = name.removeprefix(f"{PACKAGE.name}").lstrip(".").replace(".", "/")
            for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
                if relative and (PACKAGE / candidate).is_file():
                    found.add(candidate)
    return found


def test_every_package_module_has_its_row() -> None:
    listed = {name for row in _table() for name in row}
    modules = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.glob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - listed) == []


def test_each_module_imports_only_modules_above_it() -> None:
    position = {
        name: index
        for index, row in enumerate(_table())
        for name in row
        if (PACKAGE / name).is_file()  # the table's rows for harness/ and tests/ too
    }
    below = [
        f"{module} imports {imported}"
        for module, index in position.items()
        for imported in _imported(PACKAGE / module)
        if position.get(imported, -1) > index and (module, imported) not in EXCEPTIONS
    ]
    assert below == []
