"""The runtime dependencies alone suffice: the tracked files, installed with a plain
`pip install <copy>` (no extras, not editable) into a fresh venv, import every module of
api, worker, core, models and cli, run the CLI, and migrate a database; pytest is absent."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import REPO

# The install alone takes one to two minutes; a slow disk may need many more.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PACKAGES = ("api", "worker", "core", "models", "cli")
# The builds this project pins (pyproject.toml); pip must never resolve another torch.
PINNED = "torch==2.14.1\ntorchvision==0.29.1\n"
INSTALL_TIMEOUT_S = 900

IMPORT_ALL = textwrap.dedent("""
    import importlib
    import sys
    import sysconfig
    import traceback
    from pathlib import Path

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    failures, imported = [], []
    for package in sys.argv[1].split(","):
        root = site / package
        assert (root / "__init__.py").is_file(), f"{package} is not installed in {site}"
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(site).with_suffix("")
            if rel.name == "__main__":  # a script, run by `python -m` below
                continue
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            try:
                module = importlib.import_module(name)
            except BaseException:
                failures.append(f"{name}:\\n{traceback.format_exc()}")
                continue
            where = Path(module.__file__).resolve()
            if site not in where.parents:
                failures.append(f"{name} was imported from {where}, not from {site}")
            imported.append(name)
    try:
        import pytest  # noqa: F401
        failures.append(f"pytest is importable ({pytest.__file__}): test extras leaked in")
    except ImportError:
        pass
    import torch
    if torch.__version__.split("+")[0] != "2.14.1":
        failures.append(f"torch {torch.__version__} was installed, not 2.14.1")
    print(f"imported {len(imported)} modules")
    if failures:
        print("\\n".join(failures))
        sys.exit(1)
""")

MIGRATE = textwrap.dedent("""
    from core.db import MIGRATIONS_DIR, upgrade_schema, get_engine
    from sqlalchemy import inspect

    upgrade_schema()
    tables = set(inspect(get_engine()).get_table_names())
    missing = {"jobs", "metric_points", "checkpoints", "datasets"} - tables
    assert not missing, f"tables missing after migrating from {MIGRATIONS_DIR}: {missing}"
    print("migrated", sorted(tables))
""")


def base_python() -> str:
    """The interpreter the project's venv was made from (not the venv's own python)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def copy_tracked_files(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():  # a tracked file being deleted in the working tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def run(args: list, cwd: Path, env: dict, timeout: float, what: str) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{output[-20000:]}"
    return output


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("runtime")
    source, venv, outside = tmp / "source", tmp / "venv", tmp / "elsewhere"
    copy_tracked_files(source)
    outside.mkdir()
    constraints = tmp / "constraints.txt"
    constraints.write_text(PINNED)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_CONSTRAINT=str(constraints), PIP_NO_INPUT="1",
               TRAINHUB_DATA_DIR=str(tmp / "data"))
    # No Postgres or Redis for the migrate check: the embedded SQLite database.
    for name in ("TRAINHUB_DATABASE_URL", "TRAINHUB_BROKER_URL", "TRAINHUB_REDIS_URL"):
        env.pop(name, None)
    run([base_python(), "-m", "venv", venv], outside, env, 300, "python -m venv")
    python = venv / "bin" / "python"
    try:
        run([python, "-m", "pip", "install", "--no-input", "--progress-bar", "off", source],
            outside, env, INSTALL_TIMEOUT_S, "pip install <copy of the tracked files>")
        yield {"python": python, "venv": venv, "cwd": outside, "env": env}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the venv holds torch and CUDA: ~6 GB


def test_every_module_imports_from_the_installed_package_without_test_extras(installed):
    output = run([installed["python"], "-c", IMPORT_ALL, ",".join(PACKAGES)], installed["cwd"],
                 installed["env"], 600, "importing every module in the fresh venv")
    count = int(output.split("imported ", 1)[1].split()[0])
    assert count > 40, output


def test_the_cli_runs_from_the_installed_package(installed):
    for args in ([installed["python"], "-m", "cli", "--help"],
                 [installed["venv"] / "bin" / "trainhub", "--help"]):
        output = run(args, installed["cwd"], installed["env"], 300, " ".join(map(str, args)))
        for verb in ("up", "api", "worker", "migrate"):
            assert verb in output


def test_the_installed_package_carries_its_migrations(installed):
    output = run([installed["python"], "-c", MIGRATE], installed["cwd"], installed["env"], 300,
                 "migrating an empty SQLite database with the installed package")
    assert "migrated" in output
