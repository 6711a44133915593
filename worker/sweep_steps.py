"""A sweep's next step, taken by the worker: after a trial's attempt ends or pauses (its
freed slot is used at once) and in every reaper pass (what recovers a crash in between)."""
from __future__ import annotations

import logging

from core.config import Settings, get_settings
from core.db import session_scope
from core.states import JobStatus
from core.sweeps.trials import advance_after, advance_running

log = logging.getLogger(__name__)

# A trial that ended, or paused at an asha rung, frees its slot.
ENDED = {s.value for s in JobStatus if s.is_terminal} | {JobStatus.paused.value}


def after_attempt(job_id: str, status: str) -> None:
    """A trial that ended makes room: start the sweep's next trials now. A failure here is
    logged: the next reaper pass takes the same step."""
    if status not in ENDED:
        return
    try:
        with session_scope() as session:
            advance_after(session, job_id, get_settings())
    except Exception as exc:
        log.warning("job %s: its sweep's next step is left to the reaper: %s", job_id,
                    str(exc).splitlines()[0][:200])


def advance_sweeps(settings: Settings) -> None:
    with session_scope() as session:
        advance_running(session, settings)
