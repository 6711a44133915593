"""`trainhub`: one command for the server verbs (up, api, worker, migrate).

Each verb lives in its own module and adds its own sub-parser; client verbs that talk HTTP
join them the same way."""
from __future__ import annotations

import argparse
import logging
import sys

from cli import server

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainhub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    server.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
