"""An evaluation's claim, kept alive by its worker's renewals and lapsing without them; real Redis."""

from __future__ import annotations

import threading
import time

from ktoforge.evaluation.records import EvaluationCreate, EvaluationStore
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
