"""One settings object for every process, read from ``CLASSPULSE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
import secrets
import time
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# The placeholder earlier versions shipped as the default; it is in the public repository, so a
# gateway that anyone else can reach must never sign with it.
DEV_SECRET = "dev-only-insecure-secret-change-me"
MIN_SECRET_LENGTH = 32
SECRET_FILE = "secret_key"  # under data_dir: generated on first start when no key is configured


DEFAULT_UNCERTAIN_BELOW = 0.4  # for a model that is not calibrated, or derived no threshold


class Settings(BaseSettings):
    """Everything configurable. Build with ``get_settings()``; tests pass overrides."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_", env_file=None, extra="ignore")
    # Whether this process signs or verifies tokens (the gateway) and so needs the signing key;
    # False in KeylessSettings, which every other process builds (worker, aggregator, migrate).
    signs_tokens: ClassVar[bool] = True

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("classpulse-data")
    # Unset: `classpulse run` starts an embedded PostgreSQL / Redis under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    # Signs access and student tokens. Unset: a random key is generated on first start and kept
    # (mode 0600) in data_dir/secret_key; production requires it set explicitly.
    secret_key: str | None = None
    public_url: str | None = None  # e.g. https://pulse.school.example; join links use it
    host: str = "127.0.0.1"
    port: int = 8000
    # Addresses of the reverse proxies whose X-Forwarded-For/-Proto the gateway believes
    # (comma-separated IPs or networks, "*" for any). Login and join limits count per client
    # address, which behind a TLS proxy is only known from that header.
    forwarded_allow_ips: str = "127.0.0.1"
    # HTTPS served by the gateway itself (`classpulse run --lan`): the school's own certificate
    # (PEM, chain after the leaf) and key, used as they are. Unset with --lan: a local CA under
    # data_dir/tls issues one (classpulse/tls.py).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # More names or addresses for the certificate --lan issues, comma-separated (`--tls-name`).
    tls_names: str = ""
    # --lan: the plain-HTTP port of the page that says how devices trust the certificate; None:
    # 80 when it can be bound, else 8080; 0: no such page.
    lan_http_port: int | None = Field(default=None, ge=0, le=65535)
    log_level: str = "INFO"

    admin_email: str | None = None
    admin_password: str | None = None

    # --- models and inference ---------------------------------------------------------------
    models_dir: Path = REPO_ROOT / "models"
    emotion_model: Path | None = None  # default: models_dir / emotion_mini_xception.onnx
    detector_model: Path | None = None  # default: models_dir / face_detection_full_range.onnx
    # More classifiers with the same labels, averaged with the first (an ensemble); JSON list.
    extra_emotion_models: list[Path] = Field(default_factory=list)
    # Execution providers in order of preference; intersected with what onnxruntime offers.
    # TensorRT is only used when listed explicitly.
    providers: list[str] = Field(default_factory=lambda: ["cuda", "cpu"])
    require_gpu: bool = False  # fail start-up instead of silently running on the CPU
    intra_op_threads: int = 1
    # None: the threshold MediaPipe uses for this detector (its metadata's min_score_thresh).
    detector_score_threshold: float | None = None
    detector_iou_threshold: float = 0.3
    min_face_size: int = 20  # pixels of the frame; smaller faces are ignored
    max_faces: int = 32
    crop_scale: float = 1.1
    flip_average: bool = False

    # --- live pipeline ----------------------------------------------------------------------
    # What student pages send: "frames" (JPEG frames; the workers detect the faces) or "edge"
    # (the page runs the face detector and sends boxes and grey crops: docs/edge-wire.md). Told
    # to each page in its socket's config; with "edge" and "frames" the gateway accepts both
    # kinds (a page may fall back to frames when it cannot run the detector); "edge-only" is
    # "edge" with JPEG frames refused (edge_required): no picture of the room ever leaves a
    # device, and a page that cannot run the detector sends nothing and says why (app/ingest.py).
    capture_mode: Literal["edge", "edge-only", "frames"] = "edge"
    # A JPEG frame over this is refused (too_large). Pages send 320×240 at quality 0.7: 8–16 KB
    # for camera pictures in Chromium, 41.3 KB for uniform noise (the worst case); 48 KB takes
    # them all. Faces messages have their own bound (their wire format's, app/ingest.py).
    frame_max_bytes: int = 48_000
    frame_max_fps: float = 5.0
    frames_in_flight: int = 2
    # Per stream shard. Frames are real-time data (stale after frame_max_age_ms): 2,000 entries
    # hold 2 s of 1,000 frames/s and at most 96 MB of frames at the byte cap.
    frames_stream_maxlen: int = 2_000
    results_stream_maxlen: int = 100_000  # per stream shard
    # Frames and results spread over this many streams by session id (contracts.shard_of); the
    # same in every process. 1 keeps the single streams cp:frames / cp:results.
    stream_shards: int = Field(default=1, ge=1, le=1024)
    # The shards this worker or aggregator consumes, e.g. "0,2" (`--shards` on the command
    # line); empty: all of them. Each shard needs at least one worker and one aggregator.
    stream_shards_owned: str = ""
    # Frames a worker reads per batch; "auto" (None): 32 on the CPU, 128 when the models run on a
    # GPU (the detector and the classifier then batch the whole read in one call each).
    worker_batch_size: int | None = None
    # A stream entry pending this long is taken over (XAUTOCLAIM) from a consumer that died;
    # None: 10 s for frames (workers), 15 s for results (aggregators).
    reclaim_idle_ms: int | None = None
    frame_max_age_ms: int = 2_000  # fresher than this or dropped as stale
    # Analysed frames are deleted from the stream at once; where Redis keeps an append-only file,
    # a worker also has it rewritten at most this often (seconds) so their payloads leave the
    # disk too (worker/aof.py). 0: never (Redis's own auto-rewrite only).
    aof_rewrite_every_s: float = Field(default=10.0, ge=0)
    bucket_seconds: int = 5
    # An aggregator's flush gathers the results of this long (ms) before it writes them in one
    # transaction and publishes their live updates: at 2,000 results/s, 0 (a flush per read)
    # cost 282 µs of aggregator + PostgreSQL CPU per result (bench/bench_aggregator.py --rate
    # 2000), 50 ms 106 µs; the dashboard waits up to this long more.
    aggregator_linger_ms: int = Field(default=50, ge=0, le=1000)
    # An aggregator shows each flush's results live at once but writes them to PostgreSQL (and
    # acknowledges them) this often (ms): every student's bucket once per commit instead of once
    # per flush. 0: a commit per flush. Nothing is acknowledged before its commit, so a crash
    # replays at most this much (not shown twice by the survivor: a fresh process shows it).
    aggregator_commit_ms: int = Field(default=2000, ge=0, le=10_000)
    smoothing_alpha: float = 0.5
    # A smoothed top probability under this is shown as "uncertain". None: the threshold the
    # emotion model's calibration derived (modelmeta.Calibration.uncertain_below, published by
    # the workers), else DEFAULT_UNCERTAIN_BELOW. A number here overrides the model's.
    uncertain_below: float | None = Field(default=None, ge=0, le=1)
    # A face box shorter than this (pixels, shorter side) is upscaled to the 64 px model input and
    # read unreliably: shown as "face too small" instead of a label.
    small_face_px: int = 48
    # The audit log's retention (days): who viewed, exported or deleted what must outlive the
    # data, so never shorter than the policy's retention_days (the longer of the two applies).
    audit_retention_days: int = Field(default=365, ge=1, le=36500)
    # Bucket rows go with their whole UTC day (one partition dropped) instead of row by row as the
    # cut-off passes: no per-row deletes and WAL at district scale, but rows are kept up to a day
    # past retention_days (docs/retention.md).
    retention_whole_days: bool = False
    student_token_ttl_s: int = 4 * 3600
    access_token_ttl_s: int = 12 * 3600
    # Failed logins (wrong email or password; an attempt counts while it is checked and is taken
    # back when it was right) per minute: per account from browsers that never logged in to it,
    # and per account again for browsers that did (a count strangers cannot use up)...
    login_attempts_per_minute: int = 10
    # ...and per client address (one address = one school: correct logins are never counted).
    login_failures_per_minute_per_address: int = 30
    # Request bodies are small JSON documents (the largest, a policy or alert rules, is under
    # 2 KB); anything bigger is refused with 413 before it is read. Frames travel over the
    # student WebSocket, which has its own cap (frame_max_bytes).
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Join codes that are wrong or whose class ended (join page lookups and joins) per client
    # address per minute: guessing codes is stopped, a school's typos and old links are not.
    join_failures_per_minute_per_address: int = 120
    # Every join per client address per minute: a whole school behind one NAT address joins
    # within its first period's minute; a flood beyond that is refused.
    joins_per_minute_per_address: int = 3000
    # Join attempts per session per minute; None: twice the session's student cap
    # (max_students_per_session): a whole class joins in a minute, the next student is told the
    # class is full (409), and a flood of fake names is refused (429) past that.
    joins_per_minute_per_session: int | None = None
    max_students_per_session: int = Field(default=250, ge=1)
    # camera/stats/ping messages a student socket may send per second (burst: 4x); the page
    # sends about one a second.
    control_messages_per_second: float = 2.0

    @field_validator("worker_batch_size", mode="before")
    @classmethod
    def _auto_batch(cls, value: object) -> object:
        return None if value in ("auto", "", 0, "0") else value

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> Settings:
        if not self.signs_tokens:
            self.secret_key = None  # never held where it is not needed, even if configured
            return self
        # Anyone who knows the signing key can mint an admin token. The placeholder and short
        # keys are refused wherever the gateway may be reached by others: in production, and on
        # any listen address but loopback.
        exposed = self.env == "production" or not is_loopback(self.host)
        where = "in production" if self.env == "production" else f"when listening on {self.host}"
        if self.env == "production" and self.secret_key is None:
            raise ValueError("CLASSPULSE_SECRET_KEY must be set to a random value in production")
        if exposed and self.secret_key == DEV_SECRET:
            raise ValueError(f"the placeholder CLASSPULSE_SECRET_KEY is refused {where}")
        if exposed and self.secret_key is not None and len(self.secret_key) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"CLASSPULSE_SECRET_KEY must have at least {MIN_SECRET_LENGTH} characters {where}"
            )
        return self

    @field_validator("stream_shards_owned")
    @classmethod
    def _owned_list(cls, value: str) -> str:
        parts = [p.strip() for p in value.replace(" ", ",").split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"stream_shards_owned must be shard numbers like '0,2', not {value!r}")
        return ",".join(parts)

    @model_validator(mode="after")
    def _owned_in_range(self) -> Settings:
        bad = [k for k in self.owned_shards if k >= self.stream_shards]
        if bad:
            raise ValueError(
                f"stream_shards_owned {bad} out of range: there are {self.stream_shards} shard(s)"
            )
        return self

    @property
    def owned_shards(self) -> list[int]:
        """The shards this consumer reads: those of stream_shards_owned, else every shard."""
        if not self.stream_shards_owned:
            return list(range(self.stream_shards))
        return sorted({int(p) for p in self.stream_shards_owned.split(",")})

    @cached_property
    def emotion_model_path(self) -> Path:
        return self.emotion_model or self.models_dir / "emotion_mini_xception.onnx"

    @cached_property
    def detector_model_path(self) -> Path:
        return self.detector_model or self.models_dir / "face_detection_full_range.onnx"

    @property
    def embedded(self) -> bool:
        """True when `classpulse run` must start its own PostgreSQL and Redis."""
        return self.database_url is None or self.redis_url is None


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


class KeylessSettings(Settings):
    """The settings of a process that neither signs nor verifies tokens: the inference worker
    (which decodes untrusted images), the aggregator, migrations and the other one-shot
    commands. No signing key is required, also in production, and one given anyway is dropped;
    deployments give CLASSPULSE_SECRET_KEY to the gateway alone."""

    signs_tokens: ClassVar[bool] = False


def keyless_settings(**overrides: object) -> Settings:
    return KeylessSettings(**overrides)  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "0.0.0.0"-style wildcard resolves to who knows what


def with_signing_key(settings: Settings) -> Settings:
    """The settings with ``secret_key`` filled: the configured key, else the one kept in
    ``data_dir/secret_key``, generated (256 random bits, mode 0600) the first time."""
    if settings.secret_key is not None:
        return settings
    path = settings.data_dir / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting at once, one creates the key and both read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    key = ""
    for _ in range(50):  # the creator may not have written it yet
        key = path.read_text().strip()
        if key:
            break
        time.sleep(0.01)
    if len(key) < MIN_SECRET_LENGTH:
        raise ValueError(f"{path} holds no usable key; delete it to generate a new one")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # readable by others: tighten, the key is as good as an admin password
    return settings.model_copy(update={"secret_key": key})
