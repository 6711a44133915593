"""POST /predict: classify uploaded images with a trained job's checkpoint."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile

from api.deps import SessionDep, get_job
from api.errors import field_error
from api.predictor import ImageTooLarge, NotAnImage, Predictor, decode_image
from api.routes.checkpoints import resolve_or_error
from core import checkpoints as ckpt
from core.artifacts import get_store
from core.config import get_settings

router = APIRouter(tags=["predict"])


@lru_cache
def get_predictor() -> Predictor:
    return Predictor(get_store(), get_settings().predict_cache_size)


@router.post("/predict")
def predict(
    session: SessionDep,
    image: Annotated[list[UploadFile], File(description="one or more images (any format and "
                                                        "mode Pillow reads)")],
    job_id: Annotated[str, Form()],
    checkpoint: Annotated[str, Form(pattern=ckpt.REF_REGEX,
                                    description="latest, best or an epoch")] = "best",
    top_k: Annotated[int, Form(ge=1)] = 5,
) -> dict:
    settings = get_settings()
    if len(image) > settings.predict_max_images:
        raise HTTPException(413, f"{len(image)} images in one request; the limit is "
                                 f"{settings.predict_max_images}")
    job = get_job(job_id, session)
    row = resolve_or_error(session, job, checkpoint, none_yet_status=409)
    decoded = []
    for position, upload in enumerate(image):
        name = f"image {position + 1} ({upload.filename or 'unnamed'})"
        if upload.size is not None and upload.size > settings.predict_max_bytes:
            raise HTTPException(413, f"{name} is {upload.size} bytes; the limit is "
                                     f"{settings.predict_max_bytes}")
        try:
            decoded.append(decode_image(upload.file.read(), settings.predict_max_pixels, name))
        except NotAnImage as exc:
            raise HTTPException(415, str(exc)) from None
        except ImageTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
    predictor = get_predictor()
    try:
        loaded = predictor.get(job.id, row.storage_key, row.sha256)
    except (ckpt.CheckpointError, OSError) as exc:
        raise HTTPException(409, f"checkpoint epoch {row.epoch} cannot be loaded: {exc}") from None
    if top_k > len(loaded.classes):
        raise field_error("top_k", f"top_k must be between 1 and the number of classes "
                                   f"({len(loaded.classes)})")
    return {"job_id": job.id,
            "checkpoint": {"ref": checkpoint, "epoch": row.epoch, "sha256": row.sha256},
            "predictions": predictor.predict(loaded, decoded, top_k)}
