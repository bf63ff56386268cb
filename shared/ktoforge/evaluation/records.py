"""Evaluation requests and their records in Redis, beside the job they evaluate.

An evaluation is a small job of its own: queued by the API on the job's queue, claimed once by a worker of
the job's backend (a Redis SET NX, so a redelivered message runs nothing twice), then succeeded or failed
with a reason. Its results are job artifacts (``eval_report.json``, ``eval_report.md``); the record says
where it stands. The claim token is also what the API asks of the worker's uploads, as a job lease is.

The claim lapses KTOFORGE_LEASE_TTL_S after its worker's last renewal (every KTOFORGE_HEARTBEAT_INTERVAL_S, as
a job's lease): the API's reaper then fails an evaluation still running whose worker was killed or lost
(``ktoforge_api.reaper.reap_evaluations``).
"""

from __future__ import annotations

import json
import time
import uuid
from enum import Enum
from typing import Annotated

import redis
from pydantic import BaseModel, Field

from ktoforge.evaluation.prompts import MAX_PROMPTS, EvalPrompt, parse_prompts
from ktoforge.jobs import PREFIX

EVAL_TASK = "ktoforge.evaluate"
REPORT_FILES = ("eval_report.json", "eval_report.md")


class EvaluationStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class EvaluationCreate(BaseModel):
    """POST /v1/jobs/{id}/evaluations: prompts in the upstream Evaluator's format, or none for the job's
    held-out desirable rows."""

    prompts: Annotated[list[EvalPrompt] | None, Field(min_length=1, max_length=MAX_PROMPTS)] = None
    limit: Annotated[int, Field(ge=1, le=MAX_PROMPTS, description="Most held-out rows used")] = 32
    max_new_tokens: Annotated[int, Field(ge=1, le=4096, description="Generated per prompt and model")] = 192


class Evaluation(BaseModel):
    """Where an evaluation stands; ``prompts`` is known once the worker has built the prompt set."""

    id: str
    job_id: str
    status: EvaluationStatus = EvaluationStatus.queued
    prompt_source: str
    prompts: int | None = None
    limit: int
    max_new_tokens: int
    created_at: float
    updated_at: float
    worker: str | None = None
    reason: str | None = None
    artifacts: list[str] = []


def _key(*parts: str) -> str:
    return ":".join((PREFIX, "evaluation", *parts))


class EvaluationStore:
    """Records, prompt lists and claims of evaluations (JSON values under ``kf:evaluation:*``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @classmethod
    def from_url(cls, url: str) -> "EvaluationStore":
        return cls(redis.Redis.from_url(url, decode_responses=True))

    def create(self, job_id: str, spec: EvaluationCreate) -> Evaluation:
        now = time.time()
        ev = Evaluation(id=uuid.uuid4().hex, job_id=job_id, prompt_source="file" if spec.prompts else "held-out",
                        prompts=len(spec.prompts) if spec.prompts else None, limit=spec.limit,
                        max_new_tokens=spec.max_new_tokens, created_at=now, updated_at=now)
        with self.r.pipeline() as pipe:
            pipe.set(_key(ev.id), ev.model_dump_json())
            if spec.prompts:
                pipe.set(_key(ev.id, "prompts"), "[" + ",".join(p.model_dump_json() for p in spec.prompts) + "]")
            pipe.zadd(_key("job", job_id), {ev.id: now})
            pipe.execute()
        return ev

    def get(self, evaluation_id: str) -> Evaluation | None:
        raw = self.r.get(_key(evaluation_id))
        return Evaluation.model_validate_json(raw) if raw else None

    def prompts(self, evaluation_id: str) -> list[EvalPrompt] | None:
        raw = self.r.get(_key(evaluation_id, "prompts"))
        return parse_prompts(json.loads(raw)) if raw else None

    def of_job(self, job_id: str) -> list[Evaluation]:
        """Newest first."""
        ids = self.r.zrevrange(_key("job", job_id), 0, 99)
        raws = self.r.mget([_key(i) for i in ids]) if ids else []
        return [Evaluation.model_validate_json(r) for r in raws if r]

    def update(self, evaluation_id: str, **fields: object) -> Evaluation:
        """The record with ``fields`` changed; the index of running evaluations (running_ids) follows its status."""
        ev = self._changed(self.get(evaluation_id), evaluation_id, fields)
        with self.r.pipeline() as pipe:
            self._write(pipe, ev)
            pipe.execute()
        return ev

    def update_if_claimed(self, evaluation_id: str, token: str, **fields: object) -> Evaluation | None:
        """update(), only while ``token`` holds the claim, atomically (WATCH on the claim and the record); None
        when it does not. A worker whose claim lapsed must not overwrite what the reaper wrote (its reason tells
        the user to queue the evaluation again) nor revive the record."""
        claim, record = _key(evaluation_id, "claim"), _key(evaluation_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(claim, record)
                    if pipe.get(claim) != token:
                        return None
                    raw = pipe.get(record)
                    ev = self._changed(Evaluation.model_validate_json(raw) if raw else None, evaluation_id, fields)
                    pipe.multi()
                    self._write(pipe, ev)
                    pipe.execute()
                    return ev
                except redis.WatchError:  # the claim or the record changed meanwhile: read them again
                    continue

    @staticmethod
    def _changed(ev: Evaluation | None, evaluation_id: str, fields: dict[str, object]) -> Evaluation:
        if ev is None:
            raise KeyError(evaluation_id)
        return ev.model_copy(update={**fields, "updated_at": time.time()})

    @staticmethod
    def _write(pipe: redis.client.Pipeline, ev: Evaluation) -> None:
        pipe.set(_key(ev.id), ev.model_dump_json())
        if ev.status == EvaluationStatus.running:
            pipe.zadd(_key("running"), {ev.id: ev.updated_at})
        else:
            pipe.zrem(_key("running"), ev.id)

    def running_ids(self) -> list[str]:
        """The evaluations marked running, oldest first (what the reaper looks at)."""
        return self.r.zrange(_key("running"), 0, -1)

    def claim(self, evaluation_id: str, token: str, ttl_s: float) -> bool:
        """True for the first worker only; its token then authorises the report uploads. The claim lapses
        ``ttl_s`` after it is taken or last renewed (renew_claim)."""
        return bool(self.r.set(_key(evaluation_id, "claim"), token, nx=True, px=int(ttl_s * 1000)))

    def renew_claim(self, evaluation_id: str, token: str, ttl_s: float) -> bool:
        """Extend our claim by ``ttl_s``; False if it lapsed (the reaper may have failed the evaluation) or is
        another worker's."""
        script = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                  "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
        return bool(self.r.eval(script, 1, _key(evaluation_id, "claim"), token, int(ttl_s * 1000)))

    def claim_holder(self, evaluation_id: str) -> str | None:
        return self.r.get(_key(evaluation_id, "claim"))
