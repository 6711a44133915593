"""Rate limits as route dependencies: `dependencies=[rate_limited("jobs")]`."""
from __future__ import annotations

from fastapi import Depends

from api.auth import TenantDep
from core import quotas
from core.config import get_settings
from core.db import session_scope


def _limit(kind: str) -> quotas.RateLimit:
    settings = get_settings()
    return {
        "jobs": quotas.RateLimit("POST /jobs", settings.rate_limit_jobs_per_minute,
                                 "TRAINHUB_RATE_LIMIT_JOBS_PER_MINUTE"),
        "datasets": quotas.RateLimit("POST /datasets", settings.rate_limit_datasets_per_minute,
                                     "TRAINHUB_RATE_LIMIT_DATASETS_PER_MINUTE"),
        "predict": quotas.RateLimit("POST /predict", settings.rate_limit_predict_per_minute,
                                    "TRAINHUB_RATE_LIMIT_PREDICT_PER_MINUTE"),
    }[kind]


def rate_limited(kind: str):
    """A dependency that counts the request against the caller's key (429 past the limit)."""
    _limit(kind)  # an unknown kind fails at import, not at the first request

    def check(tenant: TenantDep) -> None:
        limit = _limit(kind)
        if tenant.is_admin or limit.per_minute <= 0:
            return
        with session_scope() as session:
            quotas.hit(session, tenant, limit)

    return Depends(check)
