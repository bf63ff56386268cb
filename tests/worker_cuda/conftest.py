"""The torch worker's job fixtures: a real JobContext, a real API process, Redis and an uploaded dataset."""

from tests.job_fixtures import api, dataset_id, make_ctx, new_job  # noqa: F401 (fixtures)
