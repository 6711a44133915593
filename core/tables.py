"""SQLAlchemy 2.0 schema: jobs, metric points, checkpoints (same on Postgres and SQLite)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


def newest_first_indexes(table: str, *filters: tuple[str, ...]) -> tuple[Index, ...]:
    """The indexes of a list read newest first (api.paging: ORDER BY created_at DESC, id
    DESC after a (created_at, id) cursor): one for the whole table, and one per set of
    columns the list filters on by equality, those columns first. Each serves its page in
    order from where the cursor points, so a page reads its own rows and sorts none."""
    return tuple(Index("_".join(("ix", table, *columns, "created_at_id")), *columns,
                       "created_at", "id") for columns in ((), *filters))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # An Idempotency-Key is the submitting tenant's own: another tenant's equal key
        # neither replays nor blocks it (jobs from before tenants have no owner: '').
        Index("ix_jobs_owner_idempotency_key", func.coalesce(text("owner"), ""),
              "idempotency_key", unique=True),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # A sweep's trial number is taken once: two schedulers racing make one job of it.
        Index("ix_jobs_sweep_trial", "sweep_id", "trial", unique=True),
        # GET /jobs: anyone's or one owner's, with or without a status.
        *newest_first_indexes("jobs", ("owner",), ("status",), ("owner", "status")),
        # GET /jobs?sweep=: of trials only (most jobs are none: they stay out of it). On
        # Postgres, migration 0010's st_jobs_sweep_owner says a sweep decides its owner.
        Index("ix_jobs_sweep_id_created_at_id", "sweep_id", "created_at", "id",
              postgresql_where=text("sweep_id IS NOT NULL"),
              sqlite_where=text("sweep_id IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The submitting user's id; None with authentication off (then every caller is admin).
    owner: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(64))
    final_metrics: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # A running job's lease, renewed by its worker's heartbeat; a reaper requeues (or fails,
    # past max_attempts) a running job whose lease has expired.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Requeues by a graceful stop (SIGTERM): they do not count against max_attempts.
    graceful_stops: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where the current attempt started: {"epoch", "step"}, None for a fresh start.
    resumed_from: Mapped[dict | None] = mapped_column(JSON)
    # When the job's message was handed to the broker; None: the reaper must (re)send it.
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # POST /jobs Idempotency-Key, and the hash of the body it was first sent with.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # A sweep's trial: its sweep, its number in it, and the values sampled for it (by
    # spec path); all None for a job submitted on its own.
    sweep_id: Mapped[str | None] = mapped_column(String(32))
    trial: Mapped[int | None] = mapped_column(Integer)
    trial_values: Mapped[dict | None] = mapped_column(JSON)
    # An asha trial's current rung: the epoch at whose end this attempt pauses (None: it
    # trains to its last epoch).
    pause_at_epoch: Mapped[int | None] = mapped_column(Integer)


class Sweep(Base):
    """A hyperparameter search; its trials are jobs (Job.sweep_id). The body it was
    submitted with is `spec`; the columns beside it are what queries filter on."""

    __tablename__ = "sweeps"
    # GET /sweeps: anyone's or one owner's, with or without a status.
    __table_args__ = newest_first_indexes("sweeps", ("owner",), ("status",), ("owner", "status"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))
    max_trials: Mapped[int] = mapped_column(Integer)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    spec: Mapped[dict] = mapped_column(JSON)
    # Why no new trial could start at the last try (the tenant's caps); None otherwise.
    waiting: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SweepRung(Base):
    """An asha trial that reached a rung: its metric there, and when it was promoted from
    it (None: not, or not yet). The search's state: decisions read only these and the
    trials' statuses."""

    __tablename__ = "sweep_rungs"

    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"),
                                          primary_key=True)
    trial: Mapped[int] = mapped_column(Integer, primary_key=True)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: the first
    epoch: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)  # None: diverged (never promoted)
    reached_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (
        UniqueConstraint("job_id", "name", "step", name="uq_metric_points_job_name_step"),
        # A page of all names, in (step, id) order (GET /jobs/{id}/metrics without a name;
        # with one, the unique constraint above is that page's order).
        Index("ix_metric_points_job_step_id", "job_id", "step", "id"),
    )

    # Monotonic per database: doubles as the event id for live streams.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer)
    batch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_checkpoints_job_epoch"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    """An uploaded dataset: the raw upload, then a materialised uint8 tensor file."""

    __tablename__ = "datasets"
    # GET /datasets: anyone's or one owner's, newest first.
    __table_args__ = newest_first_indexes("datasets", ("owner",))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))  # as Job.owner
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)  # processing | ready | failed
    error: Mapped[str | None] = mapped_column(Text)
    source_filename: Mapped[str | None] = mapped_column(String(255))
    upload_key: Mapped[str | None] = mapped_column(String(512))
    upload_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    options: Mapped[dict] = mapped_column(JSON)  # test_fraction, resize, channels
    layout: Mapped[str | None] = mapped_column(String(32))  # split | single | npz
    classes: Mapped[list | None] = mapped_column(JSON)
    counts: Mapped[dict | None] = mapped_column(JSON)
    shape: Mapped[list | None] = mapped_column(JSON)
    mean: Mapped[list | None] = mapped_column(JSON)
    std: Mapped[list | None] = mapped_column(JSON)
    cache_key: Mapped[str | None] = mapped_column(String(512))
    # What it holds in the artifact store: the upload while processing, then the tensor file.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Program(Base):
    """A tenant's own architecture: torch.export programs (train mode, and eval mode unless
    its graph has no mode-dependent op), checked at upload (core.programs)."""

    __tablename__ = "programs"
    # GET /models: anyone's or one owner's programs, newest first.
    __table_args__ = newest_first_indexes("programs", ("owner",))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))  # as Job.owner
    name: Mapped[str] = mapped_column(String(200))
    source_filename: Mapped[str | None] = mapped_column(String(255))
    eval_source_filename: Mapped[str | None] = mapped_column(String(255))
    train_key: Mapped[str] = mapped_column(String(512))
    eval_key: Mapped[str | None] = mapped_column(String(512))  # None: the lone program
    # Of the stored train file, then the eval file, hashed together (core.programs).
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # counts toward the stored bytes cap
    input_shape: Mapped[list] = mapped_column(JSON)  # [channels, height, width]
    num_classes: Mapped[int] = mapped_column(Integer)
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    ops: Mapped[list] = mapped_column(JSON)  # the graph's operators, sorted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobLog(Base):
    """A job's own log lines (claim, data, epochs, warnings, errors), in the order written."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(10))
    attempt: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(100))  # the logger's name
    message: Mapped[str] = mapped_column(Text)


class User(Base):
    """A tenant: owns jobs and datasets; an admin sees and manages everyone's."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A user's API key: `id` is its public part; only the whole key's sha256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    key_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSession(Base):
    """A web page login: the cookie's token (kept as its sha256) stands for an API key, and
    ends with it."""

    __tablename__ = "web_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"),
                                        index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RateCount(Base):
    """Requests one key made to one limited action in one fixed window (minute)."""

    __tablename__ = "rate_counts"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    action: Mapped[str] = mapped_column(String(32), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds // 60
    count: Mapped[int] = mapped_column(Integer, default=0)


class Worker(Base):
    """A running worker's heartbeat: what it consumes and has. It deletes its row when it
    stops; a row not refreshed for a while (a killed worker) is no longer listed."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # the Celery node name
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list] = mapped_column(JSON)
    devices: Mapped[list] = mapped_column(JSON)  # [{"name", "type", "memory_bytes"}]
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)  # the host's RAM
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
