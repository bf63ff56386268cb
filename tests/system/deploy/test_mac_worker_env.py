"""native-mac/worker.env.example, sourced by the real start.sh: paths with spaces survive, and it joins as `worker`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import ROOT

MAC = ROOT / "native-mac"


def test_start_sh_sources_the_example_with_spaces_in_paths(tmp_path: Path):
    """start.sh as documented (`cp worker.env.example worker.env`), from a folder whose name has a space; the
    Python it execs is a probe that prints what start.sh handed over instead of starting Celery."""
    folder = tmp_path / "Application Support" / "native-mac"
    folder.mkdir(parents=True)
    shutil.copy(MAC / "start.sh", folder / "start.sh")
    shutil.copy(MAC / "worker.env.example", folder / "worker.env")
    probe = tmp_path / "probe.py"
    probe.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                     "print(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() "
                     "if k.startswith('KTOFORGE_')}}))\n")
    probe.chmod(0o755)
    home = tmp_path / "home"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "KTOFORGE_MLX_PYTHON": str(probe)}
    result = subprocess.run(["bash", str(folder / "start.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"][:5] == ["-m", "celery", "-A", "ktoforge_mlx.app", "worker"]
    assert seen["env"]["KTOFORGE_WORK_DIR"] == f"{home}/Library/Application Support/ktoforge/work"
    assert seen["env"]["KTOFORGE_MODEL_CACHE_DIR"] == f"{home}/Library/Application Support/ktoforge/models"
    assert urlsplit(seen["env"]["KTOFORGE_REDIS_URL"]).username == "worker"


def test_example_uses_the_worker_acl_user_and_the_stack_placeholders():
    example = (MAC / "worker.env.example").read_text()
    stack = (ROOT / ".env.example").read_text()
    placeholder = next(line.split("=", 1)[1] for line in stack.splitlines()
                       if line.startswith("KTOFORGE_REDIS_WORKER_PASSWORD="))
    assert f"redis://worker:{placeholder}@" in example
    assignments = [line for line in example.splitlines() if line and not line.startswith("#")]
    assert assignments and all(line.split("=", 1)[1].startswith('"') for line in assignments)
