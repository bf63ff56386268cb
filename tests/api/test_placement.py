"""Will it fit, at submit: workers' advertised devices against the estimate (ktoforge_api.placement), backend
"auto", near-fit and range warnings, GET /v1/workers and GET /v1/presets. Workers announce themselves through
the real presence keys in the tests' Redis, exactly as queue.py's heartbeat writes them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ktoforge.jobs import JobStore
from ktoforge.settings import get_settings

MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"


def gpu(total_gb: float) -> dict:
    return {"kind": "cuda", "name": "NVIDIA GeForce RTX 3070", "memory_total_gb": total_gb,
            "memory_free_gb": total_gb - 0.3, "driver": "580.65", "ram_total_gb": 32.0, "ram_free_gb": 30.0}


CPU = {"kind": "cpu", "name": "x86_64 (2 threads)", "memory_total_gb": 24.0, "memory_free_gb": 20.0,
       "ram_total_gb": 24.0, "ram_free_gb": 20.0}
MAC = {"kind": "apple", "name": "Apple M4", "memory_total_gb": 24.0, "memory_free_gb": 20.0, "ram_total_gb": 24.0,
       "ram_free_gb": 20.0}


def announce(queue: str, node: str, device: dict) -> None:
    JobStore.from_url(get_settings().redis_url).announce_worker(node, queue, {"device": device, "host": "h"}, 30)


def submit(client: TestClient, dataset_id: str, **body) -> dict:
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, "model": MISTRAL, **body})
    return {**r.json(), "http": r.status_code}


def test_workers_lists_each_queue_with_devices(client: TestClient) -> None:
    announce("cuda", "cuda@box", gpu(8.0))
    listing = client.get("/v1/workers").json()
    assert listing["queues"]["mlx"] == []
    (worker,) = listing["queues"]["cuda"]
    assert worker["name"] == "cuda@box" and worker["device"]["memory_total_gb"] == 8.0 and worker["age_s"] < 5


def test_the_8gb_preset_fits_an_8gb_card_and_a_6gb_card_is_refused_with_figures(client, dataset_id) -> None:
    announce("cuda", "cuda@small", gpu(6.0))
    refused = submit(client, dataset_id, preset="rtx3070-8gb")
    assert refused["http"] == 422
    (error,) = refused["detail"]
    assert error["type"] == "does_not_fit" and "cuda@small" in error["msg"] and "6.0 GB" in error["msg"]
    assert 6.0 < error["workers"][0]["estimate_gb"]["total"] < 8.0
    forced = submit(client, dataset_id, preset="rtx3070-8gb", force=True)
    assert forced["http"] == 201 and forced["warnings"][0].startswith("forced")
    announce("cuda", "cuda@3070", gpu(8.0))
    ok = submit(client, dataset_id, preset="rtx3070-8gb")
    assert ok["http"] == 201 and ok["preset"] == "rtx3070-8gb" and ok["hyperparameters"]["optim"] == "adamw_8bit"


def test_a_near_fit_is_accepted_with_a_warning_event(client, dataset_id) -> None:
    announce("cuda", "cuda@tight", gpu(7.5))
    job = submit(client, dataset_id, preset="rtx3070-8gb")
    assert job["http"] == 201 and job["warnings"][0].startswith("fits only just")
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["items"]
    assert [e["data"]["message"] for e in events if e["type"] == "warning"] == job["warnings"]


def test_auto_prefers_a_gpu_and_otherwise_a_queue_that_can_hold_it(client, dataset_id) -> None:
    announce("cuda", "cuda@cpu-box", CPU)  # float32 on a CPU: ~30 GB, more than its 24 GB
    announce("mlx", "mlx@mac", MAC)
    assert submit(client, dataset_id, backend="auto")["backend"] == "mlx"
    assert submit(client, dataset_id, backend="cuda")["http"] == 422
    announce("cuda", "cuda@gpu-box", gpu(24.0))
    assert submit(client, dataset_id, backend="auto")["backend"] == "cuda"


def test_no_live_worker_queues_it_with_a_note(client, dataset_id) -> None:
    job = submit(client, dataset_id, backend="mlx")
    assert job["http"] == 201 and "no live worker on queue mlx" in job["warnings"][0]


def test_beta_and_learning_rate_far_from_ktos_range_are_warned(client, dataset_id) -> None:
    job = submit(client, dataset_id, model="builtin:tiny-mistral",
                 hyperparameters={"beta": 5.0, "learning_rate": 0.5})
    assert job["http"] == 201
    assert any(w.startswith("beta 5.0 is far outside") for w in job["warnings"])
    assert any(w.startswith("learning_rate 0.5 is far outside") for w in job["warnings"])


def test_presets_list_their_estimate(client) -> None:
    presets = {p["name"]: p for p in client.get("/v1/presets").json()}
    assert set(presets) == {"rtx3070-8gb", "m4-24gb"}
    assert presets["rtx3070-8gb"]["fits"] and presets["rtx3070-8gb"]["estimate_gb"]["total"] < 8.0
    assert presets["m4-24gb"]["backend"] == "mlx" and presets["m4-24gb"]["estimate_gb"]["total"] < 24.0
    assert client.get("/v1/presets", params={"model": "someone/unknown"}).status_code == 422
    bad = client.post("/v1/jobs", json={"dataset_id": "0" * 64, "preset": "nope"})
    assert bad.status_code == 422 and "unknown preset 'nope'" in bad.text


def test_precompute_ref_log_probs_is_queued_on_either_backend(client, dataset_id) -> None:
    """Both workers honour the option (TRL's on torch, precompute_references on MLX): a job asking for it is
    queued whichever queue the body names or "auto" picks, and the option reaches the stored job."""
    option = {"hyperparameters": {"precompute_ref_log_probs": True}}
    announce("mlx", "mlx@mac", MAC)
    for backend in ("mlx", "auto", "cuda"):
        queued = submit(client, dataset_id, model="builtin:tiny-mistral", backend=backend, **option)
        assert queued["http"] == 201, queued
        assert queued["hyperparameters"]["precompute_ref_log_probs"] is True
        assert queued["backend"] == ("mlx" if backend == "auto" else backend)
        assert not any("precompute_ref_log_probs" in w for w in queued["warnings"] or [])  # one epoch: it pays
    plain = submit(client, dataset_id, model="builtin:tiny-mistral", backend="mlx")
    assert plain["http"] == 201 and plain["hyperparameters"]["precompute_ref_log_probs"] is False


def test_precompute_on_a_run_shorter_than_an_epoch_is_queued_with_a_warning(client, dataset_id) -> None:
    """10 steps of 2 rows on the reference file's 1000: the pass over every row would cost more than it saves."""
    hp = {"precompute_ref_log_probs": True, "max_steps": 10, "per_device_train_batch_size": 2,
          "gradient_accumulation_steps": 1}
    short = submit(client, dataset_id, model="builtin:tiny-mistral", backend="cuda", hyperparameters=hp)
    assert short["http"] == 201, short
    (warning,) = [w for w in short["warnings"] if "precompute_ref_log_probs" in w]
    assert "all 1000 training rows" in warning and "about 2% of an epoch" in warning
    events = client.get(f"/v1/jobs/{short['id']}/events").json()["items"]
    assert any(e["type"] == "warning" and e["data"]["message"] == warning for e in events)
    halves = {**hp, "max_steps": -1, "num_train_epochs": 0.5, "eval_fraction": 0.2}
    half = submit(client, dataset_id, model="builtin:tiny-mistral", backend="cuda", hyperparameters=halves)
    assert any("all 800 training rows" in w and "about 50% of an epoch" in w for w in half["warnings"]), half


def test_the_precompute_warning_counts_the_training_rows_the_split_leaves(client, dataset_id) -> None:
    """At eval_fraction 0.0135 the split holds out round(746 x f) = 10 desirable and round(254 x f) = 3
    undesirable rows: 987 train. Rounding the whole file's 13.5 instead would say 986."""
    from ktoforge.dataset import load_examples
    from ktoforge.dataset.split import split
    from tests.conftest import REFERENCE_DATASET

    hp = {"precompute_ref_log_probs": True, "max_steps": 10, "per_device_train_batch_size": 2,
          "gradient_accumulation_steps": 1, "eval_fraction": 0.0135}
    job = submit(client, dataset_id, model="builtin:tiny-mistral", backend="cuda", hyperparameters=hp)
    train, _ = split(load_examples(REFERENCE_DATASET), 0.0135, job["hyperparameters"]["seed"])
    assert len(train) == 987
    assert any("all 987 training rows" in w for w in job["warnings"]), job["warnings"]
