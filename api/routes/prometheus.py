"""GET /metrics: Prometheus text format (series named trainhub_*)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import require_admin
from api.errors import responses
from api.prometheus import exposition

router = APIRouter(tags=["prometheus"])


# Admin only: the counts span every tenant. Prometheus sends the key with its scrape
# config's `authorization: {credentials_file: ...}`.
@router.get("/metrics", response_class=Response, dependencies=[Depends(require_admin)],
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}},
                             "description": "Prometheus text exposition format"},
                       **responses(403)})
def read_prometheus_metrics() -> Response:
    """trainhub_jobs{status}, trainhub_queue_depth, trainhub_points_written_total,
    trainhub_sweeps{status}, trainhub_sweep_trials{status} (from the database),
    trainhub_request_duration_seconds, trainhub_predict_duration_seconds and
    trainhub_event_streams (from every API process)."""
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
