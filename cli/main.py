"""`trainhub`: the typer command that gathers every verb, server and client.

The server verbs (up, api, worker, migrate, admin ...) and the HTTP client verbs (submit, list,
show, follow, logs, cancel, metrics, checkpoints, download, predict, datasets, models, sweep) each
live in a module of their own and register themselves here. A client verb's failure (an API error,
an unreachable server) is one `error: ...` line on stderr and exit code 1."""
import sys
from types import SimpleNamespace

import typer
from typer.core import TyperGroup

from cli import (
    admin,
    checkpoints,
    datasets,
    export,
    follow,
    jobs,
    logs,
    metrics,
    models,
    predict,
    server,
    submit,
    sweeps,
)
from cli.client import CliError
from cli.output import error_line


def untyped_flags(command, ctx: typer.Context, help_option=None) -> None:
    """typer shows every option's type in help, a flag's too (`--help -h <bool>`, `--json
    <bool>`), as if it took a value: a flag takes none, so it shows none (its metavar, which
    help prints instead of the type, set empty). For the command and all under it."""
    help_option = help_option or command.get_help_option(ctx)
    for param in [*command.params, help_option]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        untyped_flags(sub, ctx)


class Group(TyperGroup):
    """The top-level group: turns a CliError from any verb into one line and an exit code,
    and Ctrl-C into exit 130, never a traceback; help shows no type for a flag."""

    def get_help_option(self, ctx: typer.Context):
        help_option = super().get_help_option(ctx)
        if not getattr(self, "flags_untyped", False):
            self.flags_untyped = True
            untyped_flags(self, ctx, help_option)
        return help_option

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except CliError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(1) from None


app = typer.Typer(cls=Group, name="trainhub", add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Training as a service for PyTorch: run the server, or talk to it.",
                  context_settings={"help_option_names": ["-h", "--help"]})

server.register(app)
submit.register(app)
jobs.register(app)
follow.register(app)
logs.register(app)
metrics.register(app)
checkpoints.register(app)
export.register(app)
predict.register(app)
datasets.register(app)
models.register(app)
sweeps.register(app)
admin.register(app)


def command() -> TyperGroup:
    """The command the typer app builds (what --help, tests and main() run)."""
    return typer.main.get_command(app)


class ArgvError(ValueError):
    """argv is not a `trainhub` command line."""


def parse_args(argv: list[str]) -> SimpleNamespace:
    """Parse argv (without the program name) as `trainhub` would, running nothing: the
    verb as `command` (`datasets upload` for a nested one) and its parameters by name.
    ArgvError for an unknown verb, flag or value (or --help)."""
    group = command()
    ctx = typer.Context(group, info_name="trainhub")
    names, rest, cmd = [], list(argv), group
    try:
        while isinstance(getattr(cmd, "commands", None), dict):  # a group: a verb follows
            if not rest or rest[0].startswith("-"):
                raise ArgvError(f"a verb must follow `{' '.join(['trainhub', *names])}`")
            name, rest = rest[0], rest[1:]
            sub = cmd.get_command(ctx, name)
            if sub is None:
                raise ArgvError(f"no such verb: {' '.join(['trainhub', *names, name])}")
            names.append(name)
            cmd = sub
        if {"-h", "--help"} & set(rest):
            raise ArgvError("--help is not a command to run")
        with cmd.make_context(names[-1], rest, parent=ctx) as sub_ctx:
            return SimpleNamespace(command=" ".join(names), **sub_ctx.params)
    except typer.TyperException as exc:  # click's usage and parameter errors
        raise ArgvError(exc.format_message()) from None


def main(argv: list[str] | None = None) -> int:
    """Run `trainhub` with argv (default sys.argv[1:]); returns the exit code."""
    try:
        command().main(args=argv, prog_name="trainhub", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
