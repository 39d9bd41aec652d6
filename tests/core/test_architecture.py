"""The layering is enforced, not only described (README, Architecture).

- only `registry.catalog` (and the schema in `registry.db`) talks to the database;
- `registry.ops` are pure: no Registry, no catalog, no database;
- the TUI reaches the library through the facade, never through `registry.cli`;
- no import cycles between modules at import time;
- benchmarks stand alone (they do not import `tests`);
- read commands on an existing SQLite registry never import SQLAlchemy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_PACKAGES = ("sqlalchemy", "sqlmodel", "registry.db", "psycopg", "sqlite3")


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Modules a file imports (absolute names); module-level only skips functions and
    TYPE_CHECKING blocks (imports that do not run when the module is imported)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                if not module_level_only:
                    visit(child, False)
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                if not module_level_only:
                    visit(child, top)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child, top)

    visit(tree, True)
    return found


def _touches(imports: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes))


def test_only_the_catalog_talks_to_the_database() -> None:
    offenders = {}
    for name, path in _modules("registry").items():
        if name.startswith(("registry.catalog", "registry.db")):
            continue
        bad = _touches(_imports(path), DB_PACKAGES)
        if "session()" in path.read_text():
            bad.append("calls .session()")
        if bad:
            offenders[name] = bad
    for name, path in _modules("tui").items():
        bad = _touches(_imports(path), DB_PACKAGES)
        if bad:
            offenders[name] = bad
    assert not offenders, f"database access outside registry.catalog: {offenders}"


def test_ops_are_pure() -> None:
    offenders = {
        name: bad
        for name, path in _modules("registry/ops").items()
        if (bad := _touches(_imports(path), ("registry.registry", "registry.catalog",
                                             "registry.flows", "registry.cli", "registry.hub",
                                             *DB_PACKAGES)))
    }
    assert not offenders, f"registry.ops must not reach the registry or database: {offenders}"


def test_library_and_tui_do_not_import_the_cli() -> None:
    offenders = {}
    for package in ("registry", "tui"):
        for name, path in _modules(package).items():
            if name.startswith("registry.cli"):
                continue
            bad = _touches(_imports(path), ("registry.cli", "typer"))
            if bad:
                offenders[name] = bad
    assert not offenders, f"only registry.cli may import the CLI layer: {offenders}"


def test_no_import_cycles() -> None:
    modules = {**_modules("registry"), **_modules("tui")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path, module_level_only=True):
            # `from registry import x` names a module when registry/x.py exists
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]
            if imp and imp != name and not name.startswith(imp + "."):
                deps.add(imp)
        graph[name] = deps
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                # a package importing its own submodule from __init__ is not a cycle
                cycle = stack[stack.index(dep):] + [dep]
                if not all(c.startswith(dep) for c in cycle):
                    cycles.append(cycle)
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert not cycles, f"import cycles: {cycles}"


def test_benchmarks_do_not_import_tests() -> None:
    offenders = {
        name: bad
        for name, path in _modules("benchmarks").items()
        if (bad := _touches(_imports(path), ("tests",)))
    }
    assert not offenders, f"benchmarks must stand alone: {offenders}"


def test_read_path_on_sqlite_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = (
        "import sys; from registry import Registry; r = Registry(sys.argv[1]); r.close()\n"
        "for m in [m for m in list(sys.modules) if m.startswith(('sqlalchemy', 'sqlmodel'))]:\n"
        "    del sys.modules[m]\n"
        "r = Registry(sys.argv[1]); r.list_versions(); r.count_versions(); r.list_bases()\n"
        "r.base_choices(); r.find_base('x')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'sqlmodel'}))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True,
                          text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
