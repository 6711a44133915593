"""`trainhub admin ...`: users and API keys, straight in the database (run where the
server's TRAINHUB_DATABASE_URL points; no API key needed: database access is the admin's
credential)."""
from typing import Annotated

import typer

from cli.client import CliError
from cli import output

admin = typer.Typer(name="admin", no_args_is_help=True,
                    help="users and API keys (run on the server: talks to its database)")


def register(app: typer.Typer) -> None:
    app.add_typer(admin, rich_help_panel="Server")


def _run(action):
    """Run action(session) in one transaction; a refusal is one `error:` line."""
    from core.db import session_scope, upgrade_schema
    from core.errors import Conflict, NotFound

    upgrade_schema()
    try:
        with session_scope() as session:
            return action(session)
    except (Conflict, NotFound, ValueError) as exc:
        raise CliError(str(exc)) from None


@admin.command("create-user", help="create a user (a tenant); --admin: sees and manages all")
def create_user(name: Annotated[str, typer.Argument(help="unique user name")],
                is_admin: Annotated[bool, typer.Option("--admin",
                                                       help="an admin user")] = False) -> None:
    from core import auth

    user_id = _run(lambda s: auth.create_user(s, name, is_admin).id)
    typer.echo(f"created {'admin ' if is_admin else ''}user {name} ({user_id}); make it a "
               f"key with: trainhub admin create-key {name}")


@admin.command("create-key", help="make an API key for a user; the key alone is the last "
                                  "line (shown once: it is stored only hashed)")
def create_key(user: Annotated[str, typer.Argument(help="user name")]) -> None:
    from core import auth

    def make(session):
        row, key = auth.create_key(session, auth.user_by_name(session, user))
        return row.id, key

    key_id, key = _run(make)
    typer.echo(f"created key {key_id} for {user}; it is shown only now. Use it as "
               "`Authorization: Bearer <key>` or TRAINHUB_API_KEY:", err=True)
    typer.echo(key)


@admin.command("revoke-key", help="revoke a key by its id (or the key itself); its web "
                                  "sessions end too")
def revoke_key(key_id: Annotated[str, typer.Argument(help="the key's id (list-keys)")]) -> None:
    from core import auth

    revoked = _run(lambda s: auth.revoke_key(s, key_id).id)
    typer.echo(f"revoked key {revoked}")


@admin.command("list-keys", help="every key (id, user, created, revoked); never the keys")
def list_keys(user: Annotated[str | None, typer.Option(help="only this user's")] = None) -> None:
    from core import auth

    keys = _run(lambda s: auth.list_keys(s, user))
    if not keys:
        output.line("no keys" + (f" for {user}" if user else ""))
        return
    t = output.table("key id", "user", "admin", "created", "revoked")
    for k in keys:
        t.add_row(k.id, k.user, "yes" if k.is_admin else "", f"{k.created_at:%Y-%m-%d %H:%M}",
                  f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    output.show(t)
