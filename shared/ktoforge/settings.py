"""All runtime settings, read from ``KTOFORGE_*`` environment variables (every one is in .env.example).

One module so that the API, the workers, local mode and the CLI agree on names and defaults.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings shared by every service; a field's description is its documentation."""

    model_config = SettingsConfigDict(env_prefix="KTOFORGE_", env_file=".env", extra="ignore")

    api_key: SecretStr = Field(
        SecretStr("dev-api-key"), description="Bearer key users send to every /v1 route."
    )
    worker_token: SecretStr = Field(
        SecretStr("dev-worker-token"),
        description="Bearer token of workers for worker-only routes (dataset download, artifact and checkpoint "
        "upload).",
    )
    api_host: str = Field("127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(8000, description="Port the API listens on.")
    api_url: str = Field(
        "http://127.0.0.1:8000", description="Where workers reach the API (another machine: its LAN URL)."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6390/0",
        description="Redis for the Celery broker, job records and event streams (password in the URL).",
    )
    redis_port: int = Field(6390, description="Port of the redis-server that local mode starts.")
    redis_password: SecretStr = Field(
        SecretStr(""), description="Password local mode and compose give redis-server (requirepass)."
    )
    data_dir: Path = Field(
        Path("./var/data"), description="API storage: datasets (content-addressed) and job artifacts."
    )
    work_dir: Path = Field(
        Path("./var/work"), description="Worker scratch space: downloaded datasets, checkpoints, outputs."
    )
    model_cache_dir: Path = Field(
        Path("./var/models"), description="Where builtin models are generated and cached."
    )
    flower_port: int = Field(5555, description="Port of the Flower dashboard.")
    flower_user: str = Field("admin", description="Flower basic-auth user.")
    flower_password: SecretStr = Field(SecretStr("dev-flower-password"), description="Flower basic-auth password.")
    max_upload_mb: int = Field(200, description="Largest dataset upload accepted, in MiB (413 above).")
    visibility_timeout_s: int = Field(
        7 * 24 * 3600,
        description="Redis visibility timeout: longer than any job, so a running job is never re-delivered.",
    )
    heartbeat_interval_s: float = Field(5.0, description="How often a worker refreshes a running job's heartbeat.")
    heartbeat_stale_s: float = Field(
        60.0, description="A running job whose heartbeat is older than this is requeued by the reaper."
    )
    lease_ttl_s: float = Field(
        20.0, description="A job's lease expires this long after its worker's last renewal (crash detection)."
    )
    reaper_interval_s: float = Field(10.0, description="How often the API's reaper looks for stale running jobs.")
    upload_checkpoints: bool = Field(
        True, description="Workers also send each checkpoint to the API, so a job whose worker is gone for good "
        "resumes on any worker of its queue (another machine too), not only where the checkpoint was written.",
    )
    max_attempts: int = Field(3, description="Deliveries of one job before the reaper fails it for good.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (closed by default).")
    hf_token: SecretStr = Field(SecretStr(""), description="Hugging Face token workers use for gated models.")
    local_workers: list[str] = Field(
        default_factory=lambda: ["cuda", "mlx"],
        description="Workers `ktoforge up` starts: cuda (torch, CPU fallback) and mlx (only where mlx imports).",
    )


@lru_cache
def get_settings() -> Settings:
    """Cached so every module sees one parsed environment; tests clear the cache when they change it."""
    return Settings()
