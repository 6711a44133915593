"""GET /states: a job's, a dataset's and a sweep's statuses, which of them are terminal, and
the moves between them, from core.states (their one home): the web page and clients read
them here rather than keep a copy."""
from __future__ import annotations

from fastapi import APIRouter

from api.schemas import StatesPublic

router = APIRouter(tags=["states"])

STATES = StatesPublic.from_machines()


@router.get("/states", response_model=StatesPublic)
async def read_states() -> StatesPublic:
    """The job, dataset and sweep state machines: statuses, terminal ones, and allowed
    moves."""
    return STATES
