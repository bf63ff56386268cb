"""The torch worker's job fixtures (a real API process, Redis and an uploaded dataset), shared with tests/worker."""

from tests.worker.conftest import api, dataset_id, new_job  # noqa: F401 (fixtures)
