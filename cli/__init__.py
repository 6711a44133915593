"""The `trainhub` command: the server verbs and the HTTP client verbs (typer + rich)."""
