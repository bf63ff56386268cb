"""API schemas: the one place request and response bodies are defined (OpenAPI is generated from them).

Hyperparameter names mirror TRL's ``KTOConfig`` so a TRL user reads them without translation.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Backend = Literal["cuda", "mlx"]
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


# Optimizers only bitsandbytes on a CUDA GPU provides: a worker without one refuses them rather than training
# with a 32-bit AdamW whose state needs four times the memory the job was admitted with.
CUDA_ONLY_OPTIMIZERS = frozenset({"adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit"})


class Hyperparameters(BaseModel):
    """Training settings; defaults are the RTX 3070 recipe, with a per-device batch KTO can use (≥ 2)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, le=10, description="KTO temperature β: how far the policy may move from the reference.")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (cosine schedule, warmup 0.1).")
    per_device_train_batch_size: int = Field(
        2, ge=2, le=256, description="Rows per step per device; ≥ 2 because KTO's KL estimate pairs rows in a batch."
    )
    gradient_accumulation_steps: int = Field(4, ge=1, le=1024, description="Batches accumulated per optimizer step.")
    max_length: int = Field(1024, ge=16, le=32768, description="Tokens kept per row (prompt + completion); longer rows are cut.")
    num_train_epochs: float = Field(1.0, gt=0, le=100, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, ge=-1, le=1_000_000, description="Stop after this many optimizer steps; -1 = use epochs.")
    desirable_weight: float | Literal["auto"] = Field(
        "auto", description="Loss weight of desirable rows; 'auto' balances the dataset's label counts."
    )
    undesirable_weight: float | Literal["auto"] = Field(
        "auto", description="Loss weight of undesirable rows; 'auto' balances the dataset's label counts."
    )
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="TRL's KTO loss variant.")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed for initialisation, shuffling and the eval split.")
    save_steps: int = Field(50, ge=1, le=1_000_000, description="Checkpoint every this many optimizer steps.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of steps spent warming the learning rate up.")
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule.")
    logging_steps: int = Field(1, ge=1, le=10_000, description="Emit metrics every this many optimizer steps.")
    gradient_checkpointing: bool = Field(True, description="Trade compute for memory (needed for 7B on 8 GB).")
    precompute_ref_log_probs: bool = Field(
        False, description="TRL's precompute_ref_log_probs, on both backends: the reference model's "
        "log-probabilities are computed once, over the whole training set, before the first step, and each step "
        "then skips the reference forward passes (bench/precompute_ref.py: about 30 % less time per step on "
        "torch, MLX's figure beside it). It pays for jobs of one epoch or more: a shorter one pays the pass over the "
        "whole training set up front and saves less than that, which the submit response warns about.")
    eval_fraction: float = Field(0.0, ge=0, lt=0.5, description="Share of rows held out (stratified) for evaluation.")
    optim: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit",
                   "paged_adamw_32bit"] = Field(
        "adamw_torch", description="Optimizer (TrainingArguments.optim): the 8-bit ones keep AdamW's state in a "
        "quarter of the memory; they and the paged ones are bitsandbytes', CUDA only (a worker without CUDA, the "
        "MLX one included, fails the job at once). The memory estimate depends on it.")
    quantization: Literal["auto", "nf4", "int8", "bf16", "fp32"] = Field(
        "auto", description="How the base weights are loaded: nf4 (4-bit NormalFloat, bitsandbytes' "
        "bnb_4bit_quant_type; MLX: its affine 4-bit), int8, bf16 or fp32; auto: 4-bit on a CUDA GPU (Unsloth), "
        "float32 on CPU, the model as stored on MLX. nf4 and int8 need a CUDA GPU on the torch worker (a CPU "
        "worker fails the job at once). The memory estimate depends on it.")

    @model_validator(mode="after")
    def _weights_positive(self) -> "Hyperparameters":
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            if value != "auto" and not (0 < float(value) <= 100):
                raise ValueError(f"{name} must be 'auto' or a number in (0, 100], got {value!r}")
        return self


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(BaseModel):
    """LoRA adapter shape (PEFT names)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    lora_alpha: float = Field(16, gt=0, le=4096, description="Scaling numerator: the update is scaled by alpha / r.")
    lora_dropout: float = Field(
        0.05, ge=0, lt=1, description="Dropout on the adapter input during training (the base model's own dropout "
        "stays off, as TRL's KTOTrainer wants). The MLX worker drops it under gradient_checkpointing: MLX's "
        "recompute would draw a second mask.")
    target_modules: list[ModuleName] = Field(
        default_factory=lambda: list(LORA_TARGETS), min_length=1,
        description="Linear layers that get an adapter (names of at most 128 characters; how many: "
        "KTOFORGE_MAX_TARGET_MODULES).",
    )


class JobCreate(BaseModel):
    """Body of POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset_id: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 id returned by POST /v1/datasets.")
    backend: Backend | Literal["auto"] = Field(
        "cuda", description="Queue that trains it: 'cuda' (torch worker), 'mlx' (Mac worker), or 'auto': a queue "
        "whose live worker can hold the memory estimate, GPU first.")
    preset: str | None = Field(None, description="A machine preset (GET /v1/presets) whose settings fill in "
                               "whatever this body does not state.")
    force: bool = Field(False, description="Queue the job even when no live worker can hold its memory estimate.")
    model: str = Field(
        "builtin:tiny-mistral",
        min_length=1,
        max_length=512,
        description="builtin:tiny-mistral, a Hugging Face id (e.g. mistralai/Mistral-7B-Instruct-v0.3) or a local path.",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    lora: LoraSettings = Field(default_factory=LoraSettings)

    @model_validator(mode="before")
    @classmethod
    def _preset_fills_in(cls, data: Any) -> Any:
        """A preset's values wherever the body is silent: explicit fields override it (ktoforge.presets)."""
        from ktoforge.presets import PRESETS, apply_preset  # presets imports this module's LORA_TARGETS

        if isinstance(data, dict) and data.get("preset") is not None:
            if data["preset"] not in PRESETS:
                raise ValueError(f"unknown preset {data['preset']!r}; known: {', '.join(PRESETS)}")
            return apply_preset(data)
        return data


class Job(BaseModel):
    """A job record as stored and returned."""

    model_config = ConfigDict(protected_namespaces=())

    id: str
    status: JobStatus
    dataset_id: str
    backend: Backend
    model: str
    hyperparameters: Hyperparameters
    lora: LoraSettings
    preset: str | None = Field(None, description="The preset the job was submitted with, if any.")
    warnings: list[str] = Field(default_factory=list, description="Said at submit: a near fit, a learning rate "
                                "or β far from KTO's usual range.")
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = Field(None, description="Why the job failed or was cancelled, in words a user can act on.")
    attempts: int = Field(0, description="How many times a worker started it (resumes count).")
    worker: str | None = Field(None, description="Celery node name of the worker that ran it last.")
    step: int | None = Field(None, description="Last optimizer step reported.")
    max_steps: int | None = Field(None, description="Total optimizer steps, once known.")
    history: list[dict[str, Any]] = Field(default_factory=list, description="State changes with timestamps.")


class WorkerList(BaseModel):
    """GET /v1/workers: per queue, the workers whose presence heartbeat is live, with their device."""

    queues: dict[str, list[dict[str, Any]]]


class PresetInfo(BaseModel):
    """A machine preset and its peak-memory estimate for one model (GET /v1/presets)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    description: str
    backend: Backend
    device_memory_gb: float = Field(description="Memory of the machine the preset is for.")
    model: str
    hyperparameters: Hyperparameters
    lora: LoraSettings
    estimate_gb: dict[str, float] = Field(description="Peak memory by term and in total (ktoforge.fit).")
    fits: bool = Field(description="Whether the estimate is within the machine's memory.")


class JobPage(BaseModel):
    items: list[Job]
    total: int
    offset: int
    limit: int


class Event(BaseModel):
    """One entry of a job's event stream; ``id`` is the Redis stream id (the SSE cursor)."""

    id: str
    type: Literal["state", "metrics", "log", "warning"] = Field(
        description="warning: training health (ktoforge.health) and submit-time warnings, meant to be shown")
    time: float
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[Event]
    next_after: str | None = Field(None, description="Pass as `after` to read the following page.")


class Artifact(BaseModel):
    name: str
    size: int


class CheckpointInfo(BaseModel):
    """The latest checkpoint the API keeps for a job (worker routes), so any worker can resume it."""

    step: int | None = Field(description="Optimizer step of the stored checkpoint; null when there is none.")


class ReportIssue(BaseModel):
    """An error of one line."""

    line: int
    kind: str
    message: str


class ReportWarning(BaseModel):
    """A warning kind with its count and a few example lines."""

    kind: str
    count: int
    message: str
    lines: list[int] = Field(default_factory=list)


class DatasetReport(BaseModel):
    """What the dataset pipeline found in a file (returned on upload, stored with the dataset)."""

    id: str | None = None
    format: str | None = None
    rows: int
    desirable: int
    undesirable: int
    errors: list[ReportIssue] = Field(default_factory=list, description="First 100 errors.")
    error_count: int = 0
    error_counts: dict[str, int] = Field(default_factory=dict)
    skipped_lines: list[int] = Field(default_factory=list)
    warnings: list[ReportWarning] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    recommended_weights: dict[str, float] = Field(default_factory=dict)


class Problem(BaseModel):
    """Error body: what is wrong and where."""

    detail: Any
