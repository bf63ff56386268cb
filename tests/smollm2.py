"""The converted ``builtin:smollm2-135m`` folder for tests: made once in var/models (about 10 s), then reused."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def smollm2_dir() -> Path:
    from ktoforge.builtin_model import builtin_path
    from ktoforge.builtin_smollm2 import SMOLLM2

    return builtin_path(SMOLLM2, ROOT / "var" / "models")
