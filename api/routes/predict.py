"""POST /predict: classify uploaded images with a trained job's checkpoint."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import torch
from fastapi import APIRouter, File, Form, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.auth import TenantDep
from api.deps import SessionDep, load_job
from api.errors import responses
from api.predictor import Arrivals, Batcher, Predictor
from api.quota_checks import rate_limited
from api.schemas import CheckpointUsed, PredictResponse
from core import checkpoint_format as ckpt
from core.artifacts import get_store
from core.config import get_settings
from core.errors import Conflict, FieldError, TooLarge
from core.image_decode import open_image
from core.text import ECHO_LIMIT, safe

router = APIRouter(tags=["predict"])


@lru_cache
def get_predictor() -> Predictor:
    # One intra-op thread per forward pass in the API process: passes run in worker threads
    # beside the other requests' threads, and OpenMP's threads on top of them oversubscribe
    # the cores (LeNet, 1 image on 2 busy cores: 0.7 ms with one thread, 10 ms with two).
    # Concurrent requests get their throughput from micro-batching instead.
    torch.set_num_threads(1)
    return Predictor(get_store(), get_settings().predict_cache_size)


# Requests on their way to a model's Batcher (this process, its one event loop).
ARRIVALS = Arrivals()


@router.post("/predict", response_model=PredictResponse,
             responses=responses(404, 409, 413, 415, 422, 429),
             dependencies=[rate_limited("predict")])
async def predict(
    session: SessionDep,
    tenant: TenantDep,
    image: Annotated[list[UploadFile], File(description="one or more images (any format and "
                                                        "mode Pillow reads)")],
    job_id: Annotated[str, Form()],
    checkpoint: Annotated[str, Form(pattern=ckpt.REF_REGEX,
                                    description="latest, best or an epoch")] = "best",
    top_k: Annotated[int, Form(ge=1)] = 5,
) -> PredictResponse:
    """The database, the decoding and the model load run in a worker thread (off the event
    loop); the forward pass is shared with concurrent requests for the same model."""
    settings = get_settings()
    if len(image) > settings.predict_max_images:
        raise TooLarge(f"{len(image)} images in one request; the limit is "
                       f"{settings.predict_max_images}")
    ARRIVALS.enter()
    arrived = False
    try:
        job, row, loaded, tensors = await run_in_threadpool(
            _prepare, session, tenant, image, job_id, checkpoint, top_k)
        batcher = loaded.batcher
        if batcher is None:
            batcher = loaded.batcher = Batcher(loaded, settings.predict_batch_window_ms / 1000,
                                               settings.predict_max_batch, ARRIVALS)
        ARRIVALS.leave()
        arrived = True
        predictions = await batcher.submit(tensors, top_k)
    finally:
        if not arrived:
            ARRIVALS.leave()
    return PredictResponse(
        job_id=job.id,
        checkpoint=CheckpointUsed(ref=checkpoint, epoch=row.epoch, sha256=row.sha256),
        predictions=predictions)


def _prepare(session, tenant, image: list[UploadFile], job_id: str, checkpoint: str,
             top_k: int):
    """The job, its checkpoint row, the loaded model and the images as uint8 tensors; every
    error a request can have is raised here, before it joins a batch. Every image's header
    is read (and its limits checked) before any is decoded."""
    job = load_job(session, job_id, tenant)
    row = ckpt.find(session, job, checkpoint, none_yet=Conflict)
    # The rows are read: the connection goes back to the pool now rather than after the
    # forward pass (a request waiting for its batch held one, and 16 at once outgrew it).
    session.close()
    opened = _open_images(image)
    predictor = get_predictor()
    try:
        loaded = predictor.get(job.id, row.storage_key, row.sha256)
    except (ckpt.CheckpointError, OSError) as exc:
        raise Conflict(f"checkpoint epoch {row.epoch} cannot be loaded: {exc}") from None
    if top_k > len(loaded.classes):
        raise FieldError("top_k", f"top_k must be between 1 and the number of classes "
                                  f"({len(loaded.classes)})")
    return job, row, loaded, Predictor.decode(loaded, opened)


def _open_images(image: list[UploadFile]) -> list[tuple[str, Image.Image]]:
    """(name, image) per upload, headers read, nothing decoded: TooLarge when an image's
    bytes or pixels, or all of the request's pixels together, are over their limits."""
    settings = get_settings()
    opened, pixels = [], 0
    for position, upload in enumerate(image):
        name = f"image {position + 1} ({safe((upload.filename or 'unnamed')[:ECHO_LIMIT])})"
        if upload.size is not None and upload.size > settings.predict_max_bytes:
            raise TooLarge(f"{name} is {upload.size} bytes; the limit is "
                           f"{settings.predict_max_bytes}")
        header = open_image(upload.file, settings.predict_max_pixels, name)
        opened.append((name, header))
        pixels += header.width * header.height
    if pixels > settings.predict_max_request_pixels:
        raise TooLarge(f"image: {pixels} pixels in {len(image)} image"
                       f"{'s' if len(image) != 1 else ''}; a request may hold at most "
                       f"{settings.predict_max_request_pixels} pixels in all "
                       "(TRAINHUB_PREDICT_MAX_REQUEST_PIXELS)")
    return opened
