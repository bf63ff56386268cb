"""A page of jobs joined from kept answers is, to the character, the page pydantic writes."""

from __future__ import annotations

import json

from ktoforge.job_json import JobAnswers
from ktoforge.schemas import Job, JobCreate, JobPage, JobStatus


def job(i: int, status: JobStatus, **fields) -> Job:
    record = {**JobCreate(dataset_id=f"{i:064x}").model_dump(), "history": [{"status": "queued", "time": 1.5 + i}],
              **fields}
    return Job(id=f"{i:032x}", status=status, created_at=1.5 + i, updated_at=2.25 + i, **record)


JOBS = [
    job(1, JobStatus.queued),
    job(2, JobStatus.failed, reason="Le GPU n'a plus de mémoire — réduisez max_length 🙂", attempts=3,
        warnings=["a near fit: 7.6 of 8 GB", 'quote " and \\ backslash'], worker="cuda@box", step=12),
    job(3, JobStatus.running, started_at=3.0, max_steps=1000, preset="rtx3070-8gb"),
    job(4, JobStatus.succeeded, finished_at=9.0, history=[{"status": "queued", "time": 1.0, "note": None}]),
]


def pydantic_page(jobs: list[Job], status: JobStatus | None, total: int, offset: int, limit: int) -> str:
    items = [j for j in jobs if status is None or j.status == status]
    return JobPage(items=items, total=total, offset=offset, limit=limit).model_dump_json()


def test_the_page_is_the_text_pydantic_writes_filtered_and_with_deleted_records():
    raws = [JOBS[0].model_dump_json(), None, *(j.model_dump_json() for j in JOBS[1:])]  # None: deleted meanwhile
    answers = JobAnswers()
    for status in (None, JobStatus.queued, JobStatus.failed, JobStatus.cancelled):
        for _ in range(2):  # parsed the first time, joined from kept answers the second
            assert answers.page(raws, status, 57, 5, 50) == pydantic_page(JOBS, status, 57, 5, 50)
    assert answers.page([], None, 0, 0, 50) == pydantic_page([], None, 0, 0, 50)
    assert len(answers.kept) == len(JOBS)


def test_a_record_written_otherwise_is_answered_as_the_schema_writes_it():
    """Another writer's spacing and key order, and a field missing from an older record (its default): the
    answer is the record as parsed and written by this process's schema, never the stored text itself."""
    stored = json.loads(JOBS[1].model_dump_json())
    del stored["preset"], stored["attempts"]
    raw = json.dumps(dict(reversed(list(stored.items()))), indent=1, ensure_ascii=True)
    expected = Job.model_validate_json(raw)
    assert expected.attempts == 0
    assert JobAnswers().page([raw], None, 1, 0, 50) == pydantic_page([expected], None, 1, 0, 50)


def test_a_changed_record_is_answered_anew_and_what_is_kept_stays_bounded():
    answers = JobAnswers(max_chars=3 * 2 * len(JOBS[2].model_dump_json()))  # about three records' worth
    running = JOBS[2]
    assert answers.page([running.model_dump_json()], JobStatus.running, 1, 0, 50) == \
        pydantic_page([running], None, 1, 0, 50)
    done = running.model_copy(update={"status": JobStatus.succeeded, "finished_at": 99.0})
    assert answers.page([done.model_dump_json()], JobStatus.running, 1, 0, 50) == pydantic_page([], None, 1, 0, 50)
    assert answers.page([done.model_dump_json()], None, 1, 0, 50) == pydantic_page([done], None, 1, 0, 50)
    many = [job(i, JobStatus.queued) for i in range(10, 30)]
    assert answers.page([j.model_dump_json() for j in many], None, 20, 0, 50) == pydantic_page(many, None, 20, 0, 50)
    assert answers.chars <= answers.max_chars and 1 <= len(answers.kept) <= 3
    assert answers.chars == sum(len(raw) + len(text) for raw, (_, text) in answers.kept.items())
