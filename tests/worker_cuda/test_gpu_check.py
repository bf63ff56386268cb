"""bench/gpu_check.py (issue 9's prepared GPU check) on a machine without a GPU: its inputs are checked, nothing
is measured, and no GPU figure is printed. (bench/ has no tests folder of its own; the check runs the CUDA
worker's code, so its test lives with the worker's.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "bench" / "gpu_check.py"


def lines(stdout: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in stdout.splitlines() if line and not line.startswith("#"))


def test_dry_run_builds_the_mistral_7b_shape_and_its_inputs_without_a_gpu():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--steps", "3"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = lines(proc.stdout)
    assert out["dry_run_params"] == "7248023552"  # Mistral-7B v0.3: 32 layers, GQA 8 KV heads, vocab 32768
    assert out["dry_run_lora_params"] == str(32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336)))
    assert out["dry_run_checkpoint_loading_issues"] == "0"  # the shard writer's names and shapes load back
    assert out["dry_run_rows"] == str(2 * 3 * 2)
    assert int(out["dry_run_min_row_tokens"]) > 1024 > int(out["dry_run_max_prompt_tokens"])
    assert out["dry_run_kto"] == "1024 2 3"  # the worker's own KTOConfig: max_length, batch, steps
    assert not [name for name in out if name.startswith(("gpu_", "unsloth_"))]


@pytest.mark.parametrize("argv, message", [
    ([], "needs a CUDA device"),
    (["--steps", "1"], "--steps must be >= 2"),
    (["--cap-gb", "0"], "--cap-gb in (0, 1024]"),
])
def test_without_a_gpu_or_with_bad_arguments_it_measures_nothing(argv, message):
    import torch

    if not argv and torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would measure")
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr
    assert "gpu_peak_vram_gb" not in proc.stdout and "unsloth_speedup" not in proc.stdout
