"""The Celery parent process stays light: the torch stack is imported only in its pool child, as that child starts
(prewarm) or, with KTOFORGE_WORKER_PREWARM=false, when its task runs."""

from __future__ import annotations

import os
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


def prewarm_imports(env: dict[str, str]) -> list[str]:
    """The heavy modules a fresh process holds after the pool child's prewarm hook ran in it."""
    code = ("import sys, ktoforge_worker.app as a\n"
            "a.prewarm()\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_the_pool_childs_prewarm_imports_the_training_stack_unless_turned_off(kf_env):
    assert prewarm_imports({}) == ["datasets", "peft", "torch", "transformers", "trl"]  # unsloth: no GPU here
    assert prewarm_imports({"KTOFORGE_WORKER_PREWARM": "false"}) == []
