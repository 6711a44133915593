"""`trainhub -h` and every verb's `-h`: a flag shows no type (typer would print `--help -h
<bool>` and `--json <bool>`, as if they took a value); options that take one keep theirs."""
from __future__ import annotations

from cli.main import command
from tests.integration.cli.conftest import invoke


def verbs(group, path=()):
    """Every command line that shows help: the top, each group, each verb."""
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from verbs(sub, (*path, name))


def test_no_flag_shows_a_type_in_any_help():
    shown = 0
    for path in verbs(command()):
        run = invoke(*path, "-h", env={"COLUMNS": "120"})
        assert run.exit_code == 0, (path, run.stderr)
        assert "<bool>" not in run.stdout, (path, run.stdout)
        [help_line] = [line for line in run.stdout.splitlines() if "--help" in line]
        assert help_line.split() == ["│", "--help", "-h", "Show", "this", "message", "and",
                                     "exit.", "│"], (path, help_line)
        shown += 1
    assert shown > 20
    show = invoke("show", "-h", env={"COLUMNS": "120"}).stdout
    assert [line.split()[:3] for line in show.splitlines() if "--json" in line] == [
        ["│", "--json", "the"]]
    assert "--url           URL" in show  # a value's metavar stays
    assert "--status          <str>" in invoke("list", "-h", env={"COLUMNS": "120"}).stdout
