"""One settings object for every process, read from ``CLASSPULSE_*`` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "dev-only-insecure-secret-change-me"


class Settings(BaseSettings):
    """Everything configurable. Build with ``get_settings()``; tests pass overrides."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_", env_file=None, extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("classpulse-data")
    # Unset: `classpulse run` starts an embedded PostgreSQL / Redis under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str = DEV_SECRET
    public_url: str | None = None  # e.g. https://pulse.school.example; join links use it
    host: str = "127.0.0.1"
    port: int = 8000
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
    frame_max_bytes: int = 300_000
    frame_max_fps: float = 5.0
    frames_in_flight: int = 2
    frames_stream_maxlen: int = 5_000
    results_stream_maxlen: int = 100_000
    # Frames a worker reads per batch; "auto" (None): 32 on the CPU, 128 when the models run on a
    # GPU (the detector and the classifier then batch the whole read in one call each).
    worker_batch_size: int | None = None
    # A stream entry pending this long is taken over (XAUTOCLAIM) from a consumer that died;
    # None: 10 s for frames (workers), 15 s for results (aggregators).
    reclaim_idle_ms: int | None = None
    frame_max_age_ms: int = 2_000  # fresher than this or dropped as stale
    bucket_seconds: int = 5
    smoothing_alpha: float = 0.5
    uncertain_below: float = 0.4  # smoothed top probability under this is shown as uncertain
    # A face box shorter than this (pixels, shorter side) is upscaled to the 64 px model input and
    # read unreliably: shown as "face too small" instead of a label.
    small_face_px: int = 48
    # The audit log's retention (days): who viewed, exported or deleted what must outlive the
    # data, so never shorter than the policy's retention_days (the longer of the two applies).
    audit_retention_days: int = Field(default=365, ge=1, le=36500)
    student_token_ttl_s: int = 4 * 3600
    access_token_ttl_s: int = 12 * 3600
    login_attempts_per_minute: int = 10

    @field_validator("worker_batch_size", mode="before")
    @classmethod
    def _auto_batch(cls, value: object) -> object:
        return None if value in ("auto", "", 0, "0") else value

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.env == "production" and self.secret_key == DEV_SECRET:
            raise ValueError("CLASSPULSE_SECRET_KEY must be set to a random value in production")
        if self.env == "production" and len(self.secret_key) < 32:
            raise ValueError("CLASSPULSE_SECRET_KEY must be at least 32 characters")
        return self

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
