"""constraints.txt pins what `make install` installs, and `make audit` audits those pins.

Fast, no network: the file is read against pyproject.toml, against the packages installed in
the running interpreter (importlib.metadata) and against the Makefile's rules. The update
procedure is in docs/operations.md ("Dependencies: pins, updates and the audit").
"""
from __future__ import annotations

import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
# Installed into every venv by `python -m venv`, not by trainhub's dependencies.
INSTALLER = {"pip"}


def constraint_lines() -> list[str]:
    return CONSTRAINTS.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in constraint_lines():
        match = PIN.match(line)
        if match:
            out[canonicalize_name(match["name"])] = match["version"]
    return out


@pytest.fixture(scope="module")
def declared() -> list[Requirement]:
    """[project].dependencies and the `test` extra, as pyproject.toml names them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in
            [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the requirements resolve to in this interpreter: the declared ones
    and, through their installed metadata, their dependencies (extras and markers honoured)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots
            if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # reported by the installed-version test
        for text in requires:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": extra})
                                         for extra in ("", *extras)):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return names


# --- the file itself -----------------------------------------------------------------------

def test_every_line_is_a_pin_or_a_comment():
    bad = [f"{n}: {line!r}" for n, line in enumerate(constraint_lines(), 1)
           if not (line.startswith("#") or PIN.match(line))]
    assert not bad, f"constraints.txt lines that are neither `name==version` nor a comment: {bad}"


def test_pins_are_unique_and_sorted_by_name():
    names = [canonicalize_name(PIN.match(line)["name"]) for line in constraint_lines()
             if PIN.match(line)]
    assert len(names) == len(set(names)), "a package is pinned twice"
    assert names == sorted(names), "constraints.txt is not sorted by package name"


def test_the_header_points_to_the_update_procedure():
    header = "\n".join(line for line in constraint_lines() if line.startswith("#"))
    assert "docs/operations.md" in header


def test_torch_and_torchvision_keep_the_local_builds(pins, declared):
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    exact = {canonicalize_name(r.name): str(r.specifier) for r in declared}
    assert exact["torch"] == "==2.14.1" and exact["torchvision"] == "==0.29.1"


# --- against pyproject.toml and the installed packages -------------------------------------

def test_every_declared_dependency_is_pinned_within_its_range(pins, declared):
    missing = [r.name for r in declared if canonicalize_name(r.name) not in pins]
    assert not missing, f"pyproject.toml dependencies without a pin in constraints.txt: {missing}"
    outside = [f"{r} (pinned {pins[canonicalize_name(r.name)]})" for r in declared
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert not outside, f"pins outside the range pyproject.toml asks for: {outside}"


def test_declared_dependencies_are_installed_at_their_pins(pins, declared):
    wrong = {}
    for req in declared:
        name = canonicalize_name(req.name)
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pins[name]:
            wrong[name] = (pins[name], installed)
    assert not wrong, f"pinned vs installed (run `make install`): {wrong}"


def test_pins_are_exactly_what_the_dependencies_resolve_to(pins, declared):
    resolved = closure(declared)
    unpinned = sorted(resolved - set(pins) - INSTALLER)
    assert not unpinned, f"installed dependencies without a pin: {unpinned}"
    stale = sorted(set(pins) - resolved)
    assert not stale, f"pins that no declared dependency needs any more: {stale}"
    wrong = {}
    for name in sorted(resolved - INSTALLER):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pins[name]:
            wrong[name] = (pins[name], installed)
    assert not wrong, f"pinned vs installed (run `make install`): {wrong}"


# --- the Makefile uses it --------------------------------------------------------------------

def makefile() -> str:
    return (ROOT / "Makefile").read_text(encoding="utf-8")


def recipe(target_pattern: str) -> tuple[str, list[str]]:
    """The prerequisites line and the recipe lines of the first rule whose target matches."""
    lines = makefile().splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{target_pattern}\s*:(?!=)", line):
            body = []
            for next_line in lines[i + 1:]:
                if not next_line.startswith("\t"):
                    break
                body.append(next_line.strip())
            return line, body
    pytest.fail(f"the Makefile has no rule for {target_pattern}")


def test_install_passes_the_constraints_to_pip():
    head, body = recipe(re.escape("$(VENV)/.installed"))
    assert "constraints.txt" in head.split(":", 1)[1].split(), (
        "the install stamp must depend on constraints.txt, or an updated pin is not installed")
    installs = [shlex.split(line) for line in body if "pip install" in line]
    assert len(installs) == 1, body
    argv = installs[0]
    assert "-c" in argv and argv[argv.index("-c") + 1] == "constraints.txt", argv
    assert "-e" in argv and argv[argv.index("-e") + 1] == ".[test]", argv


def test_audit_runs_pip_audit_strictly_on_the_pins_from_its_own_venv():
    phony = re.search(r"^\.PHONY:(.*)$", makefile(), re.M)
    assert phony and "audit" in phony[1].split()
    _, body = recipe("audit")
    runs = [shlex.split(line) for line in body if "pip-audit" in line]
    assert len(runs) == 1, body
    argv = runs[0]
    assert "$(PY)" not in argv[0] and "$(VENV)" not in argv[0], (
        "pip-audit must run from its own venv, not the product's")
    assert "--strict" in argv
    assert "-r" in argv and argv[argv.index("-r") + 1] == "constraints.txt", argv
    # Audit the pinned set as written: no pip resolve that could audit other versions.
    assert "--disable-pip" in argv and "--no-deps" in argv, argv


def test_operations_doc_describes_the_update_and_the_audit():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    heading = "## Dependencies: pins, updates and the audit"
    assert heading in text
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    for needle in ("constraints.txt", "make install", "make audit", "make test",
                   "### Known findings"):
        assert needle in section, needle
