"""The import direction between trainhub's packages, checked on the source (no services).

api/ and worker/ import only the shared code (core/, models/) and never each other; core/
imports neither api, worker nor cli; models/ imports none of api/worker/core/cli; cli/ may
import anything. No product package imports the tests. Every import counts: module level,
inside functions and classes, under `if TYPE_CHECKING:`, relative ones resolved, and
importlib.import_module("...") / __import__("...") with a literal name.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "core", "models", "cli")
# First-party top-level names an import can reach; anything else is a third-party library.
FIRST_PARTY = frozenset(PACKAGES) | {"tests"}
MAY_IMPORT: dict[str, frozenset[str]] = {
    "api": frozenset({"api", "core", "models"}),
    "worker": frozenset({"worker", "core", "models"}),
    "core": frozenset({"core", "models"}),
    "models": frozenset({"models"}),
    "cli": frozenset(PACKAGES),
}
DYNAMIC_IMPORTERS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the root that was walked, e.g. api/routes/jobs.py
    line: int
    module: str  # the importing module, e.g. api.routes.jobs
    imported: str  # what it imports, resolved, e.g. worker.data

    def __str__(self) -> str:
        package = self.module.split(".")[0]
        if self.imported.startswith("."):
            return (f"{self.path}:{self.line}: {self.module} imports {self.imported} "
                    "(a relative import beyond the top-level package)")
        allowed = ", ".join(sorted(MAY_IMPORT[package]))
        return (f"{self.path}:{self.line}: {self.module} imports {self.imported} "
                f"(forbidden package {self.imported.split('.')[0]!r}; {package} may import "
                f"only {allowed})")


def module_name(relpath: str) -> str:
    """api/routes/jobs.py -> api.routes.jobs; core/uploads/__init__.py -> core.uploads."""
    parts = relpath[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve_relative(module: str, is_package: bool, level: int,
                     target: str | None) -> str | None:
    """The absolute name `from <level dots><target> import ...` refers to inside module;
    None when the dots climb past the top-level package."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > len(base):
        return None
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import anywhere in the tree."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = resolve_relative(module, is_package, node.level, node.module)
                if base is None:  # never valid: reported as written
                    written = node.module or ",".join(a.name for a in node.names)
                    found.append((node.lineno, "." * node.level + written))
                    continue
                # `from . import x` may name a submodule: count each name under the base.
                names = [f"{base}.{a.name}" if not node.module else base for a in node.names]
                found.extend((node.lineno, name) for name in dict.fromkeys(names))
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (name in DYNAMIC_IMPORTERS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)):
                found.append((node.lineno, first.value))
    return found


def check_source(source: str, relpath: str) -> list[Violation]:
    """Violations of the import direction in one file's source, attributed to relpath."""
    module = module_name(relpath)
    package = module.split(".")[0]
    tree = ast.parse(source, filename=relpath)
    violations = []
    for line, imported in imported_names(tree, module, relpath.endswith("/__init__.py")):
        top = imported.split(".")[0]
        if imported.startswith(".") or (top in FIRST_PARTY and top not in MAY_IMPORT[package]):
            violations.append(Violation(relpath, line, module, imported))
    return violations


def python_files(root: Path) -> list[Path]:
    return sorted(p for package in PACKAGES if (root / package).is_dir()
                  for p in (root / package).rglob("*.py"))


def check_tree(root: Path) -> list[Violation]:
    violations = []
    for path in python_files(root):
        relpath = path.relative_to(root).as_posix()
        violations.extend(check_source(path.read_text(encoding="utf-8"), relpath))
    return violations


# ---- the product ------------------------------------------------------------------------

def test_every_package_has_modules_to_check():
    files = python_files(REPO)
    for package in PACKAGES:
        assert any(p.relative_to(REPO).parts[0] == package for p in files), package
    assert len(files) > 40


def test_imports_follow_the_one_way_direction():
    violations = check_tree(REPO)
    assert not violations, "imports against the direction:\n" + "\n".join(map(str, violations))


def test_importing_the_api_builds_no_worker_and_no_worker_celery_app():
    script = textwrap.dedent("""
        import sys
        import api.main
        from celery import _state

        leaked = sorted(m for m in sys.modules if m == "worker" or m.startswith("worker."))
        assert not leaked, f"importing api.main imported {leaked}"
        worker_apps = [a for a in _state._get_active_apps()
                       if "worker.tasks" in (a.conf.include or ())]
        assert not worker_apps, f"importing api.main built the worker's Celery app {worker_apps}"
        print("ok", len(sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok")


# The training loop and what it calls know no I/O of the service: no database, no broker,
# no Celery, no worker process lifecycle. DDP (worker.ddp) sits on top of the loop.
TRAINING_CORE = ("worker.loop", "worker.control", "worker.recipe", "worker.reporting",
                 "worker.state", "worker.accel", "worker.feed", "worker.data",
                 "worker.tuning")
# The worker process around a job (Celery, the runner and its threads): DDP's ranks run
# the loop under the runner, never the other way round.
WORKER_PROCESS = ("worker.runner", "worker.sink", "worker.celery_app", "worker.tasks",
                  "worker.heartbeat", "worker.presence", "worker.reaper", "worker.joblog",
                  "worker.job_inputs", "worker.handback", "worker.outages",
                  "worker.live_events", "worker.checkpoint_rows", "worker.tensorboard_tee",
                  "worker.sweep_steps")
SERVICE_SIDE = WORKER_PROCESS + ("worker.checkpointing", "worker.tensorboard", "core.db",
                                 "core.tables", "core.jobs", "core.queue", "core.events",
                                 "core.metrics.store", "core.metrics.pages",
                                 "core.job_submission", "core.job_deletion",
                                 "core.dataset_uploads", "core.datasets", "core.uploads",
                                 "core.sweeps", "core.programs", "sqlalchemy", "celery",
                                 "redis")


def test_the_training_loop_imports_nothing_of_the_service_and_ddp_sits_on_top():
    violations = []
    for path in python_files(REPO):
        relpath = path.relative_to(REPO).as_posix()
        module = module_name(relpath)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relpath)
        imported = [(line, name) for line, name in
                    imported_names(tree, module, relpath.endswith("/__init__.py"))]
        if module in TRAINING_CORE:
            violations += [f"{relpath}:{line}: {name}" for line, name in imported
                           if name.startswith(SERVICE_SIDE)
                           or (name.startswith("worker.ddp") and not _type_only(tree, line))]
        if module.startswith("worker.ddp"):
            violations += [f"{relpath}:{line}: {name}" for line, name in imported
                           if name.startswith(WORKER_PROCESS)]
    assert not violations, "\n".join(violations)


def _type_only(tree: ast.AST, line: int) -> bool:
    """Whether the import at `line` sits under `if TYPE_CHECKING:` (annotations only)."""
    return any(isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
               and node.lineno <= line <= node.end_lineno for node in ast.walk(tree))


def test_importing_the_training_loop_imports_no_sqlalchemy():
    script = ("import sys, worker.loop\n"
              "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
              "('sqlalchemy', 'celery', 'redis', 'psycopg'))\n"
              "assert not leaked, leaked[:5]\nprint('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stdout + result.stderr


def test_the_loop_s_functions_take_at_most_six_parameters():
    import inspect

    from worker import loop

    for function in (loop.train_one_epoch, loop.fit):
        assert len(inspect.signature(function).parameters) <= 6, function.__name__


# ---- size and cycles ----------------------------------------------------------------------

MAX_LINES_OF_CODE = 300


def lines_of_code(source: str) -> int:
    """Lines that are neither blank nor only a comment (docstrings count: they are read)."""
    return sum(1 for line in source.splitlines()
               if line.strip() and not line.strip().startswith("#"))


def test_no_product_module_is_over_300_lines_of_code():
    over = {path.relative_to(REPO).as_posix(): n for path in python_files(REPO)
            if (n := lines_of_code(path.read_text(encoding="utf-8"))) > MAX_LINES_OF_CODE}
    assert not over, f"over {MAX_LINES_OF_CODE} lines of code: {over}"


def module_graph(root: Path) -> dict[str, set[str]]:
    """Each product module -> the product modules it imports (anywhere in it); `from core
    import jobs` counts as core.jobs, a package's own __init__ as the package."""
    paths = {module_name(p.relative_to(root).as_posix()): p for p in python_files(root)}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in paths else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t in paths and t != module
                         and not module.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_two_product_modules_import_each_other_even_through_others():
    cycle = find_cycle(module_graph(REPO))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_lazy_import_that_closes_a_circle(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "a.py").write_text("from core.b import x\n")
    (tmp_path / "core" / "b.py").write_text("def f():\n    from core import a\n")
    (tmp_path / "core" / "c.py").write_text("import core.a\n")
    graph = module_graph(tmp_path)
    assert graph["core.c"] == {"core.a"}
    assert find_cycle(graph) == ["core.a", "core.b", "core.a"]
    (tmp_path / "core" / "b.py").write_text("x = 1\n")
    assert find_cycle(module_graph(tmp_path)) is None


# ---- the checker itself -----------------------------------------------------------------

def test_checker_catches_a_function_level_worker_import_in_an_api_module():
    source = textwrap.dedent("""
        from core.db import session_scope

        def handler():
            from worker.data import x
            return x
    """)
    violations = check_source(source, "api/routes/evil.py")
    assert [(v.line, v.module, v.imported) for v in violations] == [
        (5, "api.routes.evil", "worker.data")]
    assert str(violations[0]).startswith(
        "api/routes/evil.py:5: api.routes.evil imports worker.data (forbidden package 'worker'")


def test_checker_walks_files_and_reports_each_forbidden_import(tmp_path):
    files = {
        "api/__init__.py": "",
        "api/evil.py": "import json\nfrom worker.data import x\n",
        "worker/__init__.py": "",
        "worker/evil.py": "import api.main\nfrom core import jobs\n",
        "core/__init__.py": "",
        "core/evil.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from cli.main import main\n"),
        "models/__init__.py": "",
        "models/evil.py": "class M:\n    def f(self):\n        import core.jobs\n",
        "cli/__init__.py": "",
        "cli/fine.py": "import api.main, worker.tasks, core.db, models\n",
    }
    for relpath, source in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_text(source)
    found = [(v.path, v.line, v.imported) for v in check_tree(tmp_path)]
    assert found == [
        ("api/evil.py", 2, "worker.data"),
        ("core/evil.py", 3, "cli.main"),
        ("models/evil.py", 3, "core.jobs"),
        ("worker/evil.py", 1, "api.main"),
    ]


def test_checker_resolves_relative_and_dynamic_imports():
    # Relative imports stay inside their package: fine.
    assert check_source("from . import jobs\nfrom ..schemas import X\n",
                        "api/routes/new.py") == []
    # Dots past the top-level package are reported, not silently dropped.
    assert [v.imported for v in check_source("from ... import worker\n", "api/routes/x.py")] \
        == ["...worker"]
    assert resolve_relative("api.routes.jobs", False, 2, "schemas") == "api.schemas"
    assert resolve_relative("core.uploads", True, 1, "ingest") == "core.uploads.ingest"
    assert resolve_relative("core.uploads", True, 2, None) == "core"
    source = ("import importlib\nimportlib.import_module('worker.runner')\n"
              "__import__('api.main')\nimportlib.import_module('torch')\n")
    assert [(v.line, v.imported) for v in check_source(source, "core/x.py")] == [
        (2, "worker.runner"), (3, "api.main")]


def test_checker_ignores_third_party_and_allows_the_shared_code():
    source = ("import torch\nfrom sqlalchemy import select\nimport core.db\n"
              "from models import build\n")
    for package in ("api", "worker"):
        assert check_source(source, f"{package}/x.py") == []
    assert [v.imported for v in check_source(source, "models/x.py")] == ["core.db"]
    assert [v.imported for v in check_source("import tests.procs\n", "cli/x.py")] == [
        "tests.procs"]
