"""Child process of test_worker: the Mac worker's train function with torch unimportable, as on a Mac."""

import sys
from pathlib import Path

import ktoforge_mlx.app  # noqa: F401  (blocks torch first, as the worker does)
from ktoforge.jobs import JobStore
from ktoforge.settings import get_settings
from ktoforge_mlx.worker import train
from tests.mlx.conftest import context

job_id, dataset, root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
train(context(JobStore.from_url(get_settings().redis_url), job_id, dataset, root))
assert sys.modules["torch"] is None, "something imported torch"
print("NO_TORCH_OK")
