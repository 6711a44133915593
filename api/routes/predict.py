"""POST /predict: classify uploaded images with a trained job's checkpoint."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from api.auth import TenantDep
from api.deps import SessionDep, load_job
from api.quota import rate_limited
from api.errors import responses
from api.predictor import Predictor
from api.schemas import CheckpointUsed, PredictResponse
from core import checkpoints as ckpt
from core.artifacts import get_store
from core.config import get_settings
from core.errors import Conflict, FieldError, TooLarge
from core.images import decode_image
from core.text import ECHO_LIMIT, safe

router = APIRouter(tags=["predict"])


@lru_cache
def get_predictor() -> Predictor:
    return Predictor(get_store(), get_settings().predict_cache_size)


@router.post("/predict", response_model=PredictResponse,
             responses=responses(404, 409, 413, 415, 422, 429),
             dependencies=[rate_limited("predict")])
def predict(
    session: SessionDep,
    tenant: TenantDep,
    image: Annotated[list[UploadFile], File(description="one or more images (any format and "
                                                        "mode Pillow reads)")],
    job_id: Annotated[str, Form()],
    checkpoint: Annotated[str, Form(pattern=ckpt.REF_REGEX,
                                    description="latest, best or an epoch")] = "best",
    top_k: Annotated[int, Form(ge=1)] = 5,
) -> PredictResponse:
    settings = get_settings()
    if len(image) > settings.predict_max_images:
        raise TooLarge(f"{len(image)} images in one request; the limit is "
                       f"{settings.predict_max_images}")
    job = load_job(session, job_id, tenant)
    row = ckpt.find(session, job, checkpoint, none_yet=Conflict)
    decoded = []
    for position, upload in enumerate(image):
        name = f"image {position + 1} ({safe((upload.filename or 'unnamed')[:ECHO_LIMIT])})"
        if upload.size is not None and upload.size > settings.predict_max_bytes:
            raise TooLarge(f"{name} is {upload.size} bytes; the limit is "
                           f"{settings.predict_max_bytes}")
        decoded.append(decode_image(upload.file.read(), settings.predict_max_pixels, name))
    predictor = get_predictor()
    try:
        loaded = predictor.get(job.id, row.storage_key, row.sha256)
    except (ckpt.CheckpointError, OSError) as exc:
        raise Conflict(f"checkpoint epoch {row.epoch} cannot be loaded: {exc}") from None
    if top_k > len(loaded.classes):
        raise FieldError("top_k", f"top_k must be between 1 and the number of classes "
                                  f"({len(loaded.classes)})")
    return PredictResponse(
        job_id=job.id,
        checkpoint=CheckpointUsed(ref=checkpoint, epoch=row.epoch, sha256=row.sha256),
        predictions=predictor.predict(loaded, decoded, top_k))
