"""Will it fit? Peak training memory of a KTO + LoRA job, estimated from shapes before anything is loaded.

Pure arithmetic (no torch, no hub): the API runs it at submit, the CLI and `GET /v1/presets` show it.
Running out of memory hours into a job is what hurts users most; this answers before the job starts.

Notation: b per-device batch, s max_length (the worst case: a batch padded to it), L layers, h hidden size,
i intermediate size, n_h / n_kv attention / key-value heads, d head dim, V vocabulary, r LoRA rank,
c bytes per element of the compute dtype (4 for float32, 2 for bfloat16 under 4-/8-/16-bit loading).

    weights     = P_lin * q + P_emb * c + P_norm * c
                  P_lin: the seven projections of every layer; q: 0.5 + 1/64 (NF4, 4 bits plus double-quantised
                  absmax of each 64-block; on MLX, whose 4-bit is affine: 0.5 + 4/64 for a float16 scale and
                  bias per 64-group), 1 (int8), c (16/32-bit); P_emb: embeddings and (untied) lm_head stay
                  in 16/32-bit as bitsandbytes and Unsloth keep them.
    adapter     = 2 * 4 * A       (LoRA weights and their gradients, float32 as PEFT keeps adapters);
                  A = sum over layers and targets of r * (in + out)
    optimizer   = A * 8 (AdamW: two float32 moments) or A * 2 (8-bit AdamW / paged 8-bit: two uint8 moments)
    activations = b * s * (L * per_layer + h * c)            without gradient checkpointing
                = b * s * (L + 1) * h * c + b * s * per_layer   with it (each layer keeps its input; one layer
                  is recomputed at a time during backward); h * c: the final norm's input (the frozen lm_head
                  keeps nothing: its input gradient needs only its weight)
      per_layer = c * (4h + 3 n_h d + 2 n_kv d + 4i)    two RMSNorms (input, normalised input), attention
                  (q, k, v, its output, the o_proj input copy), the SwiGLU MLP (gate, up, act(gate), product)
                + on MLX, c * n_h * s: the attention probabilities (MLX 0.32 has no fused attention backward)
                + per LoRA target: 4r, plus (4 + 1) * in_features when lora_dropout > 0 (the dropped-out input
                  in float32 and its mask), or 4 * in_features when c != 4 (PEFT casts the input to float32)
    logits      = LOGIT_COPIES[backend] * b * s * V * c_l     c_l = 4 (logits are taken to float32 for log-softmax)
                  torch (3): the policy's logits are kept for its backward while the no-grad passes (KL batch,
                  reference of the batch and of the KL batch) each materialise theirs, one at a time, plus the
                  log-softmax work buffer of the same size;
                  MLX (3): logits only at the positions that predict a completion token (b * s in the worst case
                  counted here: a one-token prompt); the gradient-free passes are evaluated and freed first, the
                  metrics are evaluated before the backward pass, which then holds the policy's logits, the
                  log-softmax's gradient and the logits' gradient
    runtime     = the framework's own allocations (CUDA context, kernels, allocator slack), a fixed assumption

The peak is the sum: the terms coexist at the end of the reference pass, just before backward. Unsloth's KTO
patch computes log-probs in chunks and needs far less than the logits term: the estimate stays an upper bound.
Checked against process peaks measured on CPU (tests/shared/test_fit.py for torch, tests/mlx/test_fit.py for MLX)
and the docs/fit.md figures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ktoforge.schemas import Hyperparameters, LoraSettings

Quantization = Literal["nf4", "int8", "bf16", "fp32"]
GB = 10**9
NF4_BYTES = 0.5 + 1 / 64  # 4-bit codes; absmax per 64-block, itself quantised to 8 bits (double quantisation)
MLX_4BIT_BYTES = 0.5 + 2 * 2 / 64  # mlx.nn.quantize: 4-bit codes, a float16 scale and bias per 64-group
QUANT_BYTES: dict[str, float] = {"nf4": NF4_BYTES, "int8": 1.0, "bf16": 2.0, "fp32": 4.0}
OPTIMIZER_BYTES: dict[str, int] = {"adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
                                   "adamw_8bit": 2, "adamw_bnb_8bit": 2, "paged_adamw_8bit": 2}
LOGIT_COPIES: dict[str, float] = {"torch": 3.0, "mlx": 3.0}  # batch-sized float32 logits arrays at the peak, per
# backend (see above; measured: tests/shared/test_fit.py, tests/mlx/test_fit.py)
RUNTIME_BYTES = {"cuda": int(0.5 * GB), "mlx": int(0.5 * GB), "cpu": 0}  # assumption, documented in docs/fit.md
NEAR_FIT = 0.9  # a job using more than this share of a device's memory fits "only just": a warning


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder (Llama/Mistral layout: seven projections per layer)."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a Hugging Face config.json (the keys every Llama-family config has)."""
        heads = int(config["num_attention_heads"])
        return cls(vocab=int(config["vocab_size"]), hidden=int(config["hidden_size"]),
                   intermediate=int(config["intermediate_size"]), layers=int(config["num_hidden_layers"]),
                   heads=heads, kv_heads=int(config.get("num_key_value_heads") or heads),
                   head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
                   tied=bool(config.get("tie_word_embeddings", False)))

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection of one layer, by PEFT target name."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


@dataclass(frozen=True)
class TrainPlan:
    """The job settings the estimate depends on (names as in the job body: TRL's and PEFT's)."""

    quantization: Quantization = "fp32"
    optim: str = "adamw_torch"
    r: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_dropout: float = 0.05
    batch: int = 2
    max_length: int = 1024
    gradient_checkpointing: bool = True
    device: Literal["cuda", "mlx", "cpu"] = "cpu"

    @property
    def compute_bytes(self) -> int:
        return 4 if self.quantization == "fp32" else 2


@dataclass(frozen=True)
class Estimate:
    """Each term in bytes; ``total`` is the predicted peak."""

    weights: int
    adapter: int
    optimizer: int
    activations: int
    logits: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.adapter + self.optimizer + self.activations + self.logits + self.runtime

    def as_gb(self) -> dict[str, float]:
        """The terms and the total in GB (10^9 bytes, as GPU and Mac specifications count), 2 decimals."""
        return {k: round(v / GB, 2) for k, v in {**asdict(self), "total": self.total}.items()}


def adapter_params(shape: ModelShape, plan: TrainPlan) -> int:
    """A = sum over layers and targeted projections of r * (in + out)."""
    dims = shape.projections()
    return shape.layers * sum(plan.r * sum(dims[t]) for t in plan.target_modules if t in dims)


def weight_bytes(shape: ModelShape, plan: TrainPlan) -> int:
    """Quantised projections; embeddings, lm_head and norms in the compute dtype."""
    dims = shape.projections()
    linear = shape.layers * sum(a * b for a, b in dims.values())
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    norms = shape.hidden * (2 * shape.layers + 1)
    mlx_4bit = plan.device == "mlx" and plan.quantization == "nf4"  # MLX has no NF4: its affine 4-bit instead
    q = MLX_4BIT_BYTES if mlx_4bit else QUANT_BYTES[plan.quantization]
    return int(linear * q + (embeddings + norms) * plan.compute_bytes)


def layer_activation_bytes(shape: ModelShape, plan: TrainPlan) -> int:
    """Bytes one decoder layer keeps for backward, per token (see the module docstring)."""
    c, h, d = plan.compute_bytes, shape.hidden, shape.head_dim
    base = c * (4 * h + 3 * shape.heads * d + 2 * shape.kv_heads * d + 4 * shape.intermediate)
    if plan.device == "mlx":  # MLX has no fused attention backward: each layer keeps its attention probabilities
        base += c * shape.heads * plan.max_length
    dims, lora = shape.projections(), 0
    for target in plan.target_modules:
        if target not in dims:
            continue
        fan_in = dims[target][0]
        lora += 4 * plan.r + (5 * fan_in if plan.lora_dropout > 0 else 4 * fan_in if c != 4 else 0)
    return base + lora


def activation_terms(shape: ModelShape, plan: TrainPlan) -> tuple[int, int]:
    """(kept through the forward, recomputed during backward): the second is one layer with checkpointing."""
    tokens, c, h = plan.batch * plan.max_length, plan.compute_bytes, shape.hidden
    per_layer = layer_activation_bytes(shape, plan)
    if plan.gradient_checkpointing:
        return tokens * (shape.layers + 1) * h * c, tokens * per_layer
    return tokens * (shape.layers * per_layer + h * c), 0


def activation_bytes(shape: ModelShape, plan: TrainPlan) -> int:
    """All layers' saved tensors, or (checkpointing) their inputs plus one layer recomputed in backward."""
    return sum(activation_terms(shape, plan))


def logit_bytes(shape: ModelShape, plan: TrainPlan) -> int:
    """The float32 logits arrays alive at the peak: the MLX worker (``device="mlx"``) holds one more than TRL."""
    copies = LOGIT_COPIES["mlx" if plan.device == "mlx" else "torch"]
    return int(copies * plan.batch * plan.max_length * shape.vocab * 4)


def estimate(shape: ModelShape, plan: TrainPlan) -> Estimate:
    """Peak memory of one KTO training step (the module docstring gives each term's formula)."""
    if plan.optim not in OPTIMIZER_BYTES:
        raise ValueError(f"unknown optimizer {plan.optim!r}; known: {', '.join(OPTIMIZER_BYTES)}")
    a = adapter_params(shape, plan)
    return Estimate(weights=weight_bytes(shape, plan), adapter=8 * a, optimizer=OPTIMIZER_BYTES[plan.optim] * a,
                    activations=activation_bytes(shape, plan),
                    logits=logit_bytes(shape, plan), runtime=RUNTIME_BYTES[plan.device])


def plan_of(hyperparameters: Hyperparameters, lora: LoraSettings, device_kind: str) -> TrainPlan:
    """A job's settings as the worker with a ``device_kind`` device ("cuda", "apple", "cpu") will run them.

    The torch worker on a CPU loads float32 whatever is asked; ``auto`` means 4-bit on a CUDA GPU and the
    model as stored (16-bit) on Apple silicon.
    """
    requested = hyperparameters.quantization
    if device_kind == "cpu":
        quantization = "fp32"
    elif requested == "auto":
        quantization = "nf4" if device_kind == "cuda" else "bf16"
    else:
        quantization = requested
    return TrainPlan(quantization=quantization, optim=hyperparameters.optim, r=lora.r,
                     target_modules=tuple(lora.target_modules), lora_dropout=lora.lora_dropout,
                     batch=hyperparameters.per_device_train_batch_size, max_length=hyperparameters.max_length,
                     gradient_checkpointing=hyperparameters.gradient_checkpointing,
                     device={"cuda": "cuda", "apple": "mlx"}.get(device_kind, "cpu"))


MISTRAL_7B = ModelShape(vocab=32768, hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, head_dim=128)
KNOWN_SHAPES: dict[str, ModelShape] = {
    "mistralai/Mistral-7B-Instruct-v0.3": MISTRAL_7B,
    "mistralai/Mistral-7B-v0.3": MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": ModelShape(**{**asdict(MISTRAL_7B), "vocab": 32000}),
    "mistralai/Mistral-7B-Instruct-v0.1": ModelShape(**{**asdict(MISTRAL_7B), "vocab": 32000}),
    "mistralai/Mistral-7B-v0.1": ModelShape(**{**asdict(MISTRAL_7B), "vocab": 32000}),
}


def known_shape(model: str, local_dir: Path | None = None) -> ModelShape | None:
    """The shape without the hub: the Mistral-7B family and the tiny builtin by name, else ``local_dir``'s
    config.json (a local model, or a builtin already generated in the model cache).

    None means "unknown here" (a hub id outside the table): the caller skips the check rather than guess.
    """
    if model in KNOWN_SHAPES:
        return KNOWN_SHAPES[model]
    from ktoforge.builtin_model import CONFIG, TINY_MISTRAL

    if model == TINY_MISTRAL:
        return ModelShape.from_config(CONFIG)
    if local_dir is None:  # another builtin not generated yet, or a hub id: not fetched to answer this
        return None
    folder = local_dir
    try:
        return ModelShape.from_config(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
