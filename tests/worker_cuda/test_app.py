"""The Celery parent process stays light: no torch stack imported until a task runs in its child."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "trl", "peft", "unsloth", "datasets")


def test_worker_app_registers_the_train_task_without_importing_torch(kf_env):
    code = (
        "import sys, ktoforge_worker.app as a, ktoforge.lifecycle, ktoforge.models, ktoforge.worker_client\n"
        "from ktoforge.queue import TRAIN_TASK\n"
        "assert TRAIN_TASK in a.celery_app.tasks, sorted(a.celery_app.tasks)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
