"""Jobs as the API's JSON (a page, or one record), written from each record's answer kept by its stored text.

``GET /v1/jobs`` read 50 records and, for each, parsed it into a ``Job`` and wrote it out again: under wrk that
was 44 % of the API's samples (pydantic's validate 32 %, dump 12 %, bench/profiles/api_list_before.txt), and the
endpoint answered 487 requests/s where ``GET /v1/jobs/{id}`` answers 2,300 (1,463 after, with hiredis:
api_list_after.txt). A record's answer depends on its stored text alone (and this process's schema), so it is
kept, keyed by that text: a record that changed is a new key, parsed once, and a page of unchanged records is
joined from kept answers. Exact: the page is the text ``JobPage.model_dump_json`` writes (the same item texts,
joined by its separators; tests/shared/test_job_json.py compares them), and a filtered page leaves out a record
that is not of the status, as ``JobStore.list`` does. ``GET /v1/jobs/{id}`` answers from the same kept
answers (``JobReader.get_json``): 968 -> 1,344 requests/s with auth's settings dependency gone too
(bench/profiles/api_2aed219.txt, api_kept_answer.txt; a slower machine than the figures above).
"""

from __future__ import annotations

from ktoforge.schemas import Job, JobStatus

MAX_KEPT_CHARS = 8 << 20  # stored texts + answers kept, in characters: ~4,000 jobs of 1 KB, 8 MiB if ASCII


class JobAnswers:
    """Each record's (status, answer text), by its stored text; the oldest kept are dropped past MAX_KEPT_CHARS.

    One per JobReader, which is one per event loop: no lock, nothing awaited between a read and a write.
    """

    def __init__(self, max_chars: int = MAX_KEPT_CHARS) -> None:
        self.max_chars = max_chars
        self.kept: dict[str, tuple[JobStatus, str]] = {}  # insertion order: the oldest first
        self.chars = 0

    def answer(self, raw: str) -> tuple[JobStatus, str]:
        """The record's status and its text as the API answers it (``Job.model_dump_json``)."""
        kept = self.kept.get(raw)
        if kept is None:
            job = Job.model_validate_json(raw)
            kept = self.kept[raw] = (job.status, job.model_dump_json())
            self.chars += len(raw) + len(kept[1])
            while self.chars > self.max_chars and len(self.kept) > 1:
                old = next(iter(self.kept))
                self.chars -= len(old) + len(self.kept.pop(old)[1])
        return kept

    def page(self, raws: list[str | None], status: JobStatus | None, total: int, offset: int, limit: int) -> str:
        """``JobPage(items=..., total=..., offset=..., limit=...).model_dump_json()`` of these records, less those
        deleted (None) or, filtered, not of ``status`` (as ``JobStore.list`` leaves them out)."""
        items = [text for s, text in map(self.answer, filter(None, raws)) if status is None or s == status]
        return f'{{"items":[{",".join(items)}],"total":{total},"offset":{offset},"limit":{limit}}}'
