"""The repository's own docs stay true to the tree: README's layout lists every module, no
file points readers at design notes they do not have, and every relative link resolves."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def load_layout_script():
    spec = importlib.util.spec_from_file_location("readme_layout",
                                                  ROOT / "scripts" / "readme_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- (a) README's layout block is the generated one ----------------------------------------

def test_readme_layout_block_is_generated_from_the_tree():
    layout = load_layout_script()
    current = layout.readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert current is not None, "README.md lacks the layout markers"
    assert current == layout.layout(), (
        "README.md's layout block is stale: run python scripts/readme_layout.py --write")


def test_layout_lists_every_module_in_lines_of_at_most_100_characters():
    block = load_layout_script().layout()
    for package in ("api", "worker", "core", "cli", "models"):
        for module in (ROOT / package).rglob("*.py"):
            if module.name not in ("__init__.py", "__main__.py"):
                assert re.search(rf"^\s+{re.escape(module.name)}\s", block, re.M), module
    assert max(len(line) for line in block.splitlines()) <= 100


def test_check_mode_reports_a_stale_readme(tmp_path, monkeypatch, capsys):
    layout = load_layout_script()
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{layout.START}\n```text\nold\n```\n{layout.END}\n")
    monkeypatch.setattr(layout, "README", stale)
    assert layout.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert layout.main(["--write"]) == 0
    assert layout.main(["--check"]) == 0
    assert stale.read_text().startswith("# x\n\n")


# ---- (b) nothing outside tests/ names the team's private design notes ----------------------

def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.fail("not a git checkout: the check reads the tracked files with git ls-files")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_outside_tests_names_the_design_notes():
    # A clone does not have those notes: what users need is in docs/. tests/ is left out
    # here because its own references are being fixed separately.
    needle = b"DESIGN" + b".md"
    offenders = []
    for path in tracked_files():
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "tests" or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        offenders += [f"{relative}:{n}" for n, line in enumerate(data.splitlines(), 1)
                      if needle in line]
    assert not offenders, f"these lines name the design notes: {offenders}"


# ---- (c) every relative link in README.md and docs/*.md resolves ---------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The markdown without code blocks and code spans (their brackets are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", path.read_text()), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(doc):
    broken = []
    for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


# ---- the settings table covers every setting -----------------------------------------------

def test_operations_lists_every_setting():
    from core.config import Settings

    table = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = [f"TRAINHUB_{name.upper()}" for name in Settings.model_fields
               if f"`TRAINHUB_{name.upper()}`" not in table]
    assert not missing, f"docs/operations.md does not describe {missing}"
