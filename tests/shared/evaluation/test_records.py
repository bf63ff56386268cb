"""An evaluation's claim, kept alive by its worker's renewals and lapsing without them; real Redis."""

from __future__ import annotations

import threading
import time

from ktoforge.evaluation.records import EvaluationCreate, EvaluationStatus, EvaluationStore
from ktoforge.lifecycle import Renewal


def test_a_renewed_claim_outlives_its_ttl_and_lapses_once_renewals_stop(redis_client, kf_env) -> None:
    """What run_evaluation does while it generates: a Renewal of the claim every interval keeps it held
    well past its TTL; stopped (the worker killed), the claim lapses within the TTL, and a lapsed claim can
    be neither renewed nor taken back by its old holder's renewal."""
    evals = EvaluationStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    ev = evals.create("a" * 32, EvaluationCreate())
    assert evals.claim(ev.id, "w1:a", 0.3) and not evals.claim(ev.id, "w2:b", 0.3)  # one worker only
    lost = threading.Event()
    renewal = Renewal("claim", lambda: evals.renew_claim(ev.id, "w1:a", 0.3), 0.05, lost)
    renewal.start()
    time.sleep(1.0)  # more than three TTLs
    assert evals.claim_holder(ev.id) == "w1:a" and not lost.is_set()
    renewal.stopped.set()
    renewal.join()
    time.sleep(0.5)
    assert evals.claim_holder(ev.id) is None and not evals.renew_claim(ev.id, "w1:a", 0.3)


def test_a_renewal_that_finds_the_claim_taken_says_so_and_ends(redis_client, kf_env) -> None:
    evals = EvaluationStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    ev = evals.create("a" * 32, EvaluationCreate())
    assert evals.claim(ev.id, "w2:b", 60)
    lost = threading.Event()
    renewal = Renewal("claim", lambda: evals.renew_claim(ev.id, "w1:a", 60), 0.05, lost)
    renewal.start()
    renewal.join(timeout=5)
    assert lost.is_set() and not renewal.is_alive() and evals.claim_holder(ev.id) == "w2:b"


def test_only_the_claims_holder_writes_the_record_and_a_lapsed_holder_changes_nothing(redis_client, kf_env) -> None:
    """update_if_claimed: the worker's final write. Once its claim lapsed, the reaper's failure stands."""
    evals = EvaluationStore.from_url(kf_env["KTOFORGE_REDIS_URL"])
    ev = evals.create("a" * 32, EvaluationCreate())
    assert evals.claim(ev.id, "w1:a", 0.2)
    held = evals.update_if_claimed(ev.id, "w1:a", status=EvaluationStatus.running)
    assert held is not None and evals.get(ev.id).status == EvaluationStatus.running
    assert evals.running_ids() == [ev.id]
    assert evals.update_if_claimed(ev.id, "w2:b", status=EvaluationStatus.succeeded) is None  # not its claim
    time.sleep(0.4)  # the claim lapses; the reaper fails the evaluation
    evals.update(ev.id, status=EvaluationStatus.failed, reason="reaped")
    assert evals.update_if_claimed(ev.id, "w1:a", status=EvaluationStatus.succeeded, artifacts=["x"]) is None
    after = evals.get(ev.id)
    assert (after.status, after.reason, after.artifacts) == (EvaluationStatus.failed, "reaped", [])
    assert evals.running_ids() == []
