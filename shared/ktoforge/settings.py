"""All runtime settings, read from ``KTOFORGE_*`` environment variables (every one is in .env.example).

One module so that the API, the workers, local mode and the CLI agree on names and defaults.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
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
        "",
        description="Where workers reach the API (another machine: its LAN URL); empty: derived from "
        "KTOFORGE_API_HOST and KTOFORGE_API_PORT (127.0.0.1 when the API binds 0.0.0.0 or ::).",
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
    dataset_check_processes: int = Field(
        0, ge=0, description="Processes that check one large dataset upload at once (0: one per core, for files of 8 MiB and more; 1: in the API process only).",
    )
    visibility_timeout_s: int = Field(
        7 * 24 * 3600,
        description="Redis visibility timeout: longer than any job, so a running job is never re-delivered.",
    )
    heartbeat_interval_s: float = Field(
        5.0, description="How often a worker refreshes a running job's heartbeat and an evaluation's claim."
    )
    heartbeat_stale_s: float = Field(
        60.0, description="A running job whose heartbeat is older than this is requeued by the reaper."
    )
    lease_ttl_s: float = Field(
        20.0, description="A job's lease, or an evaluation's claim, expires this long after its worker's last "
        "renewal (crash detection)."
    )
    reaper_interval_s: float = Field(
        10.0, description="How often the API's reaper looks for stale running jobs and evaluations."
    )
    upload_checkpoints: bool = Field(
        True, description="Workers also send each checkpoint to the API, so a job whose worker is gone for good "
        "resumes on any worker of its queue (another machine too), not only where the checkpoint was written.",
    )
    keep_checkpoints: int = Field(
        2, ge=1, le=1000, description="Checkpoints a worker keeps on its disk per job, the newest (both backends): "
        "older ones are deleted as each new one is saved. A job's worker folder goes once its artifacts are uploaded.",
    )
    max_attempts: int = Field(3, description="Deliveries of one job before the reaper fails it for good.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (closed by default).")
    hf_token: SecretStr = Field(SecretStr(""), description="Hugging Face token workers use for gated models.")
    local_workers: list[str] = Field(
        default_factory=lambda: ["cuda", "mlx"],
        description="Workers `ktoforge up` starts: cuda (torch, CPU fallback) and mlx (only where mlx imports).",
    )
    model_roots: list[Path] = Field(
        default_factory=list,
        description="Folders (JSON list) a job's local model may come from, besides the model cache dir, which is "
        "always one: the path is resolved (symlinks, `..`) and must lie inside one. Empty: the model cache dir only.",
    )
    hub_allowed_orgs: list[str] = Field(
        default_factory=list,
        description="Hugging Face organisations (JSON list) jobs may take hub models from; empty: any.",
    )
    hub_max_model_gb: float = Field(
        50.0, description="Largest hub model a worker downloads, in GB of the weight files a load fetches (read "
        "from the hub's file list before any download); 0: no cap.",
    )
    max_worker_upload_mb: int = Field(
        4096, description="Largest artifact or checkpoint a worker may upload, and the most a checkpoint tar may "
        "unpack to, in MiB.",
    )
    publish_address: str = Field(
        "127.0.0.1",
        description="Address compose publishes the API, Redis and Flower on. The one setting that opens them to "
        "the LAN (e.g. 0.0.0.0, for a Mac worker on another machine); Docker's published ports bypass host "
        "firewalls.",
    )
    redis_worker_password: SecretStr = Field(
        SecretStr(""),
        description="Password of compose's Redis ACL user `worker` (services and workers log in as it: no admin "
        "commands such as CONFIG, FLUSHALL, DEBUG, ACL, SHUTDOWN).",
    )
    require_gpu: bool = Field(
        False,
        description="The torch worker fails a job at once, naming the driver and runtime, when it sees no CUDA "
        "device, instead of training on the CPU (compose sets it for the CUDA worker; local mode keeps the CPU "
        "fallback).",
    )
    worker_prewarm: bool = Field(
        True,
        description="The torch worker's idle pool child imports the training stack (torch, Unsloth where used, TRL, "
        "transformers, peft, datasets) before a job arrives, so a job sent to an idle worker skips those seconds "
        "(6-8 on a 2-core CPU). false: each job imports them in its run, and no idle child holds them (nor, with "
        "Unsloth on a GPU, a CUDA context).",
    )
    max_json_body_kb: int = Field(
        256, description="Largest JSON request body the API reads, in KiB (413 above; refused before parsing)."
    )
    max_target_modules: int = Field(64, description="Most entries a job's lora.target_modules may list.")
    max_lora_r: int = Field(256, description="Largest LoRA rank a job may ask for.")
    max_steps: int = Field(100_000, description="Largest max_steps a job may ask for.")
    max_tokens_per_step: int = Field(
        1_048_576,
        description="Largest per_device_train_batch_size × max_length × gradient_accumulation_steps of a job "
        "(tokens per optimizer step).",
    )
    max_queued_jobs: int = Field(1000, description="Jobs that may wait in the queues at once (429 above).")
    event_stream_max_len: int = Field(
        100_000, description="Events kept per job stream (older ones trimmed, approximately: XADD MAXLEN ~)."
    )
    max_sse_per_key: int = Field(
        100, description="Open event streams (SSE) per API key and API process (429 above)."
    )

    @model_validator(mode="after")
    def _derive_api_url(self) -> Settings:
        """Local mode moves the API with KTOFORGE_API_HOST/PORT; the workers must follow without a second edit."""
        if not self.api_url:
            self.api_url = local_api_url(self.api_host, self.api_port)
        return self


def local_api_url(host: str, port: int) -> str:
    """The URL a process on the API's own machine uses: a wildcard bind is reached through loopback."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


@lru_cache
def get_settings() -> Settings:
    """Cached so every module sees one parsed environment; tests clear the cache when they change it."""
    return Settings()
