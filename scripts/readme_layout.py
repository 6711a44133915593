"""Builds README.md's "Layout" block from the source tree, so that it lists every module.

Each Python module under the packages below is listed with the summary of its module
docstring (the docstring's first paragraph); the other top-level folders get one fixed line.

    python scripts/readme_layout.py            print the block
    python scripts/readme_layout.py --write    rewrite the block in README.md
    python scripts/readme_layout.py --check    exit 1 if README.md's block is stale
"""
from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- layout:start -->", "<!-- layout:end -->"

PACKAGES = ("api", "worker", "core", "cli", "models")
# Folders that are not listed module by module: one line each, written here.
FOLDERS = (
    ("migrations/", "Alembic migrations (versions/); the API and the worker apply them at start"),
    ("tests/", "unit/ (no services), integration/ (real PostgreSQL and Redis), e2e/ (API and "
               "worker processes; marked slow), test_*.py (checks on repository files)"),
    ("bench/", "benchmarks: `make bench` runs every bench/*_bench.py and rewrites BENCHMARKS.md"),
    ("docs/", "concepts.md (the contract), api.md (HTTP API), cli.md (the trainhub command), "
              "web.md (the web page), operations.md (running it)"),
    ("scripts/", "services.sh (local PostgreSQL and Redis for the tests), readme_layout.py "
                 "(this block)"),
)
WIDTH = 100  # longest line in the block
NAME_COLUMN = 20  # where the descriptions start
SKIPPED = {"__init__.py", "__main__.py"}  # __init__'s docstring describes the package line


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except SyntaxError:
        doc = None
    if not doc:
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def entry(name: str, text: str) -> list[str]:
    """`name` and `text` in two columns, text wrapped under its column."""
    if not text:
        return [name]
    width = WIDTH - NAME_COLUMN
    lines = textwrap.wrap(text, width=width, break_on_hyphens=False)
    if len(name) >= NAME_COLUMN - 1:  # a name too long for its column: text below it
        return [name] + [" " * NAME_COLUMN + line for line in lines]
    return ([name.ljust(NAME_COLUMN) + lines[0]]
            + [" " * NAME_COLUMN + line for line in lines[1:]])


def package_lines(folder: Path, depth: int) -> list[str]:
    indent = "  " * depth
    init = folder / "__init__.py"
    lines = entry(f"{indent}{folder.name}/", summary(init) if init.exists() else "")
    for module in sorted(folder.glob("*.py")):
        if module.name not in SKIPPED:
            lines += entry(f"{indent}  {module.name}", summary(module) or "(no docstring)")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (sub / "__init__.py").exists() or any(sub.glob("*.py")):
            lines += package_lines(sub, depth + 1)
    return lines


def layout(root: Path = ROOT) -> str:
    """The block that goes between the markers, fences included."""
    lines: list[str] = []
    for package in PACKAGES:
        lines += package_lines(root / package, 0) + [""]
    for name, text in FOLDERS:
        lines += entry(name, text)
    return "```text\n" + "\n".join(lines) + "\n```"


def readme_block(text: str) -> str | None:
    """What README.md holds between the markers (stripped), or None without them."""
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def rewrite(text: str, block: str) -> str:
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    return f"{before}{START}\n{block}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the block in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    block = layout()
    if not (args.write or args.check):
        print(block)
        return 0
    text = README.read_text(encoding="utf-8")
    current = readme_block(text)
    if current is None:
        print(f"README.md lacks the {START} and {END} markers", file=sys.stderr)
        return 1
    if args.check:
        if current != block:
            print("README.md's layout block is stale: run python scripts/readme_layout.py "
                  "--write", file=sys.stderr)
            return 1
        return 0
    if current != block:
        README.write_text(rewrite(text, block), encoding="utf-8")
        print("README.md: layout block rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
