"""Finding 7: job ids become paths (the worker's ``work_dir/jobs/<id>``, the API's checkpoints and artifacts);
anything but 32 hex digits is refused before it names a folder, so a record planted in Redis under a key like
``kf:job:../../x`` makes nobody write outside its folder."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ktoforge.ids import check_job_id
from ktoforge.jobs import JobStore
from ktoforge.lifecycle import JobContext, run_job
from ktoforge.schemas import JobCreate
from ktoforge_api.storage import Storage


EVIL = "../../x"
ROW = b'{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": true}\n'


def _plant(store: JobStore, job_id: str, dataset_id: str) -> None:
    """A queued job record stored under a key an attacker with Redis access chose (its id included)."""
    job, _ = store.create(JobCreate(dataset_id=dataset_id))
    store.r.set(f"kf:job:{job_id}", store.get(job.id).model_dump_json().replace(job.id, job_id))


def test_the_worker_refuses_a_job_id_that_is_a_path(kf_env, redis_client, tmp_path):
    work = Path(kf_env["KTOFORGE_WORK_DIR"])
    dataset_id = hashlib.sha256(ROW).hexdigest()
    (work / "datasets").mkdir(parents=True)
    (work / "datasets" / f"{dataset_id}.jsonl").write_bytes(ROW)  # cached: the run needs no API to get this far
    store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    _plant(store, EVIL, dataset_id)
    calls: list[JobContext] = []
    run_job(EVIL, "cuda", calls.append)
    assert calls == []
    assert not (work / "jobs" / EVIL).resolve().exists() and not (tmp_path / "x").exists()
    assert store.lease_holder(EVIL) is None and redis_client.get(f"kf:job:{EVIL}") is not None  # left untouched
    assert '"status":"queued"' in redis_client.get(f"kf:job:{EVIL}")


def test_api_storage_refuses_a_job_id_that_is_a_path(tmp_path):
    storage = Storage(tmp_path / "data")
    tmp, _, _ = asyncio.run(storage.receive(_chunks(b"tar bytes"), limit=100))
    with pytest.raises(ValueError, match="not a job id"):
        storage.commit_checkpoint(tmp, EVIL, 1)
    for call in (lambda: storage.latest_checkpoint(".."), lambda: storage.checkpoint_file(EVIL, 1),
                 lambda: storage.delete_checkpoints(".."), lambda: storage.list_artifacts("..")):
        with pytest.raises(ValueError, match="not a job id"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written beside the data dir
    assert storage.artifact_path(EVIL, "x.bin") is None
    assert check_job_id("0123456789abcdef" * 2) == "0123456789abcdef" * 2
    for bad in ("", "..", EVIL, "A" * 32, "a" * 31, "a" * 33, "a" * 32 + "\n"):
        with pytest.raises(ValueError):
            check_job_id(bad)


def test_api_routes_answer_404_for_a_planted_record_with_a_path_id(client, worker, redis_client, kf_env):
    store = JobStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    _plant(store, "..", "0" * 64)
    data = Path(kf_env["KTOFORGE_DATA_DIR"])
    data.mkdir(parents=True, exist_ok=True)
    (data / "checkpoint-5.tar").write_bytes(b"not yours")  # what ".." would name from the checkpoints folder
    assert worker.get("/v1/internal/jobs/%2E%2E/checkpoint").status_code == 404
    assert worker.delete("/v1/internal/jobs/%2E%2E/checkpoint").status_code == 404
    assert worker.put("/v1/internal/jobs/%2E%2E/checkpoint/5", content=b"x").status_code == 404
    assert client.get("/v1/jobs/%2E%2E/artifacts").status_code == 404
    assert (data / "checkpoint-5.tar").read_bytes() == b"not yours"


async def _chunks(*chunks: bytes):
    for chunk in chunks:
        yield chunk
