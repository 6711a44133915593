"""Which requests uvicorn's access log shows (TRAINHUB_ACCESS_LOG)."""
from __future__ import annotations

import logging

# Methods that only read: answered below 400, they leave no access log line unless asked.
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AccessLogPolicy(logging.Filter):
    """uvicorn's access log as TRAINHUB_ACCESS_LOG says: "changes" (the default) keeps the
    requests that change something and every answer of 400 or more, so an open web page,
    which reads its jobs every 2 s, no longer buries the training lines in the terminal;
    "all" keeps every request, "off" none."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def filter(self, record: logging.LogRecord) -> bool:
        if self.mode != "changes":
            return self.mode == "all"
        # uvicorn's arguments: client, method, path, HTTP version, status.
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 5 and isinstance(args[4], int)):
            return True  # a shape this does not know: keep the line
        return args[1] not in READS or args[4] >= 400


def apply_access_log_policy(mode: str) -> None:
    """On the logger itself, in every API process (uvicorn's --workers start each afresh)."""
    logger = logging.getLogger("uvicorn.access")
    for old in [f for f in logger.filters if isinstance(f, AccessLogPolicy)]:
        logger.removeFilter(old)
    logger.addFilter(AccessLogPolicy(mode))
