"""The one shape of a job id: 32 lowercase hex digits (``uuid4().hex``), checked wherever an id becomes a path
or a key; and of a dataset id, the sha256 of its file.

A job id names folders on the workers (``work_dir/jobs/<id>``) and in the API's storage. The id comes from
Redis or a URL, so whoever can write either could otherwise name ``../..`` and have a worker write or delete
outside its folder. No imports of ours: the API, the workers and the job store may all use it.
"""

from __future__ import annotations

import re

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
DATASET_ID = re.compile(r"^[0-9a-f]{64}$")  # content-addressed: the file's sha256 in hex


def is_job_id(value: object) -> bool:
    """True for a well-formed job id (fullmatch: "$" alone would let a trailing newline through)."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def check_job_id(job_id: object) -> str:
    """The id itself, or ValueError saying what a job id looks like."""
    if not is_job_id(job_id):
        raise ValueError(f"{str(job_id)[:80]!r} is not a job id (32 lowercase hex digits)")
    return job_id  # type: ignore[return-value]
