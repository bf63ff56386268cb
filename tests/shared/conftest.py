"""Fixtures for tests of shared modules that run a job: a real JobContext, and a real API process."""

from tests.job_fixtures import api, dataset_id, make_ctx, new_job  # noqa: F401 (fixtures)
