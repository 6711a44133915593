"""The README's shell examples as commands a test can run: its ```sh blocks, split into
commands (continuation lines and multi-line quotes joined), each with the HTTP status its
`# -> NNN` comment promises."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import REPO

EXPECTED = re.compile(r"^#\s*->\s*(\d{3})\b")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(\S.*)$")
HTTP = re.compile(r"^::http (\d{3})$", re.M)
# Every curl reports its status on stderr (the body may go to a file or a pipe).
PRELUDE = "set -o pipefail\ncurl() { command curl -w '%{stderr}::http %{http_code}\\n' \"$@\"; }\n"


@dataclass
class Command:
    text: str
    section: str
    expected: list[int] = field(default_factory=list)  # from `# -> NNN`; empty: any < 400

    @property
    def assigns(self) -> str | None:
        match = ASSIGNMENT.match(self.text)
        return match.group(1) if match else None


def sections(readme: Path = REPO / "README.md") -> dict[str, list[list[str]]]:
    """{"## heading": [the lines of each ```sh block under it]}."""
    found: dict[str, list[list[str]]] = {}
    heading, block = "", None
    for line in readme.read_text().splitlines():
        if block is not None:
            if line.startswith("```"):
                found.setdefault(heading, []).append(block)
                block = None
            else:
                block.append(line)
        elif line.startswith("## "):
            heading = line.strip()
        elif line.strip() == "```sh":
            block = []
    return found


def _open_quotes(text: str) -> bool:
    """Whether a quote is left open at the end (a JSON body spanning lines); a comment (`#`
    after a space, outside quotes) runs to the end of its line and opens none."""
    quote, comment, previous = None, False, " "
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and previous.isspace():
            comment = True
        previous = char
    return quote is not None


def commands(lines: list[str], section: str) -> list[Command]:
    """The block's commands: comment lines are not commands, but `# -> NNN` after one sets
    the status it must answer."""
    found: list[Command] = []
    pending: list[str] = []
    for line in lines:
        if not pending:
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                match = EXPECTED.match(stripped)
                if match and found:
                    found[-1].expected.append(int(match.group(1)))
                continue
        pending.append(line)
        text = "\n".join(pending)
        if line.endswith("\\") or _open_quotes(text):
            continue
        found.append(Command(text, section))
        pending = []
    assert not pending, f"unterminated command in {section}: {pending}"
    return found


@dataclass
class Ran:
    command: Command
    returncode: int
    stdout: str
    stderr: str
    statuses: list[int]
    value: str | None = None  # what an assignment set

    def problem(self) -> str | None:
        """Why this run does not do what the README says, or None."""
        if self.returncode != 0:
            return f"exit code {self.returncode}"
        expected = self.command.expected
        if expected and self.statuses != expected:
            return f"HTTP {self.statuses}, the README says {expected}"
        if not expected and any(code >= 400 for code in self.statuses):
            return f"HTTP {self.statuses}"
        if self.command.assigns and not self.value:
            return f"{self.command.assigns} came out empty"
        return None


def run(command: Command, cwd: Path, env: dict[str, str], variables: dict[str, str],
        port: int, timeout: float = 300) -> Ran:
    """One command in a new bash, with the variables earlier commands set, against the
    server on `port` (the README's examples name localhost:8000)."""
    text = command.text.replace("localhost:8000", f"localhost:{port}")
    script = PRELUDE + "".join(f"{name}={quote(value)}\n" for name, value in variables.items())
    script += text + "\n"
    if command.assigns:
        script += f'rc=$?; printf "\\n::value %s" "${command.assigns}"; exit $rc\n'
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    stdout, value = done.stdout, None
    if command.assigns:
        stdout, _, value = stdout.rpartition("\n::value ")
    return Ran(command, done.returncode, stdout, done.stderr,
               [int(code) for code in HTTP.findall(done.stderr)], value)


def quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
