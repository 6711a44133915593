"""One settings object for the API and the worker (environment prefix TRAINHUB_)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINHUB_", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None
    dataset_root: Path | None = None
    allow_download: bool = True
    lease_seconds: int = Field(60, ge=5)
    # Claims a job may use before the reaper fails it (the first run and 3 resumes); a
    # graceful stop's requeue does not use one up.
    max_attempts: int = Field(4, ge=1)
    # How often each worker refreshes its row in `workers` (GET /workers); one unseen for
    # three times this is no longer listed.
    worker_heartbeat_seconds: float = Field(10.0, gt=0)
    # How often every worker's reaper looks for expired leases and unsent queued jobs, and
    # how long a queued job may wait with no record of its message before it is re-sent.
    reaper_interval_seconds: float = Field(10.0, gt=0)
    enqueue_grace_seconds: float = Field(30.0, ge=0)
    # Mid-epoch resume checkpoints: every N steps (0: off) and/or every T seconds (0: off).
    checkpoint_every_steps: int = Field(0, ge=0)
    checkpoint_every_seconds: float = Field(60.0, ge=0)
    # How long the worker trains on while the database is unreachable (points buffered)
    # before it checkpoints and gives the job up, for a reaper to resume later.
    database_outage_seconds: float = Field(300.0, gt=0)
    # Longer than the longest job: Redis re-delivers an unacked message after this.
    broker_visibility_timeout: int = Field(7 * 24 * 3600, ge=60)
    # The most of a CUDA device's free memory a job's dataset may take to be held there;
    # a larger one stays in host memory and streams to the device (0: always stream).
    device_dataset_fraction: float = Field(0.5, ge=0, le=1)
    # How often a running loop asks whether it was cancelled (seconds).
    cancel_check_seconds: float = Field(2.0, gt=0)
    events_ttl_seconds: int = Field(24 * 3600, ge=60)
    queue: str = "trainhub"
    # Checkpoints kept per job besides `best` (the newest ones).
    checkpoint_keep: int = Field(3, ge=1)
    # /predict limits: bytes per image, decoded pixels per image, images per request, and
    # pixels per request (all its images together; each is decoded on its own).
    predict_max_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    predict_max_pixels: int = Field(64_000_000, ge=1)
    predict_max_images: int = Field(64, ge=1)
    predict_max_request_pixels: int = Field(64_000_000, ge=1)
    # Uploaded datasets (a worker decodes them; the API checks their headers): caps (the
    # defaults admit the full CIFAR-10 and more), and the memory decoding one may take,
    # estimated from its headers before any is spent.
    dataset_max_upload_bytes: int = Field(2 * 1024**3, ge=1024)
    dataset_max_entries: int = Field(250_000, ge=1)
    dataset_max_unpacked_bytes: int = Field(4 * 1024**3, ge=1024)
    dataset_max_image_pixels: int = Field(16_000_000, ge=1)
    dataset_max_decoded_bytes: int = Field(512 * 1024**2, ge=1024)
    # Tenants' own architectures (torch.export programs, core/program_archive.py): the largest
    # .pt2 file, and the most its entries may unpack to (from the zip's headers, and again as
    # each entry is read).
    program_max_upload_bytes: int = Field(1024**3, ge=1024)
    program_max_unpacked_bytes: int = Field(2 * 1024**3, ge=1024)
    # The most parameters a job's model may have (at its dataset's class count), checked
    # at submit from models/zoo_sizes.json: what a worker can hold (vit_h_14 has 631M;
    # its weights, gradients and Adam's two moments take 10 GB). 0: no cap.
    max_model_parameters: int = Field(200_000_000, ge=0)
    # Trained models held in the API process for /predict (least recently used leave).
    predict_cache_size: int = Field(8, ge=1)
    # /predict micro-batching: concurrent requests for one model share a forward pass of at
    # most predict_max_batch images; a collector waits up to the window for more only while
    # other /predict requests are on their way (a lone request never waits).
    predict_batch_window_ms: float = Field(2.0, ge=0)
    predict_max_batch: int = Field(64, ge=1)
    # Authentication: "on" (API keys) or "off" (everyone is an admin; only with the API
    # bound to 127.0.0.1). Web page sessions last session_hours.
    auth: Literal["on", "off"] = "on"
    session_hours: float = Field(12.0, gt=0)
    # Origins allowed to call the API from a browser (CORS); none by default.
    # NoDecode: the environment's value reaches the validator below as text, not as JSON.
    cors_origins: Annotated[list[str], NoDecode] = []
    # The API's access log (api/prometheus.py): "changes" (requests that change
    # something, and every answer of 400 or more; not the reads a page polls), "all", "off".
    access_log: Literal["changes", "all", "off"] = "changes"
    # Body cap on every JSON route (uploads have their own, above).
    json_max_bytes: int = Field(1024 * 1024, ge=1024)
    # Per-key requests a minute (0: no limit); admin keys are exempt.
    rate_limit_jobs_per_minute: int = Field(60, ge=0)
    rate_limit_datasets_per_minute: int = Field(10, ge=0)
    rate_limit_predict_per_minute: int = Field(600, ge=0)
    # Per-tenant caps (0: none): queued + running jobs, and bytes stored (datasets and
    # checkpoints); admins are exempt.
    tenant_max_active_jobs: int = Field(20, ge=0)
    tenant_max_stored_bytes: int = Field(100 * 1024**3, ge=0)
    # Artifacts (checkpoints, dataset tensor files, TensorBoard event files): unset, the
    # folder $TRAINHUB_DATA_DIR/artifacts; s3://bucket/prefix, an S3-compatible bucket
    # (core/s3store.py), reached at s3_endpoint_url when set (MinIO and the like) with
    # boto3's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...).
    artifact_url: str | None = None
    s3_endpoint_url: str | None = None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        # TRAINHUB_CORS_ORIGINS=https://a.example,https://b.example (a JSON list works too).
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("artifact_url", "s3_endpoint_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """SQLAlchemy URL; plain postgresql:// URLs get the psycopg (v3) driver."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'trainhub.db'}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    @property
    def resolved_dataset_root(self) -> Path:
        return (self.dataset_root or self.data_dir / "datasets").expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def tensorboard_dir(self) -> Path:
        return self.data_dir / "tensorboard"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin.key"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


@lru_cache
def get_settings() -> Settings:
    return Settings()
