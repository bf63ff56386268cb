"""Dataset upload: reports from the real pipeline, content-addressed storage, errors naming lines."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.conftest import make_client, sha256, upload

GOOD = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "label": True}
BAD_LABEL = {**GOOD, "label": "yes"}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reference_dataset_upload_is_content_addressed(client: TestClient, reference_dataset: Path, kf_env):
    first = upload(client, reference_dataset)
    assert first.status_code == 201, first.text
    report = first.json()
    assert (report["rows"], report["desirable"], report["undesirable"]) == (1000, 746, 254)
    assert report["id"] == sha256(reference_dataset)
    assert report["error_count"] == 0

    second = upload(client, reference_dataset)
    assert second.status_code in (200, 201)
    assert second.json()["id"] == report["id"]

    stored = Path(kf_env["KTOFORGE_DATA_DIR"]) / "datasets" / f"{report['id']}.jsonl"
    assert stored.read_bytes() == reference_dataset.read_bytes()
    got = client.get(f"/v1/datasets/{report['id']}")
    assert got.status_code == 200 and got.json()["rows"] == 1000


def test_invalid_rows_are_rejected_with_their_lines(client: TestClient, tmp_path: Path, kf_env):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, BAD_LABEL, GOOD])
    with path.open("a") as fh:
        fh.write("{not json\n")
    r = client.post("/v1/datasets", files={"file": ("bad.jsonl", path.read_bytes())})
    assert r.status_code == 422, r.text
    body = r.json()
    lines = {e["line"] for e in body["report"]["errors"]}
    assert lines == {2, 4}
    assert any("line 2" in d["loc"] for d in body["detail"])
    assert not any((Path(kf_env["KTOFORGE_DATA_DIR"]) / "datasets").glob("*.jsonl"))  # nothing stored


def test_skip_mode_stores_and_lists_skipped_lines(client: TestClient, tmp_path: Path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, BAD_LABEL, {**GOOD, "label": False}])
    r = upload(client, path, on_error="skip")
    assert r.status_code == 201, r.text
    report = r.json()
    assert (report["rows"], report["desirable"], report["undesirable"]) == (2, 1, 1)
    assert report["skipped_lines"] == [2]


def test_non_utf8_is_rejected_naming_the_line(client: TestClient, tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).replace("hi", "h\xe9").encode("latin-1")
                     + b"\n")
    r = upload(client, path)
    assert r.status_code == 422, r.text
    assert "line 2" in json.dumps(r.json()["detail"])


def test_empty_file_is_rejected(client: TestClient, tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert upload(client, path).status_code == 422


def test_upload_larger_than_limit_is_413(kf_env, redis_client, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KTOFORGE_MAX_UPLOAD_MB", "1")
    from ktoforge.settings import get_settings

    get_settings.cache_clear()
    path = tmp_path / "big.jsonl"
    line = json.dumps(GOOD) + "\n"
    path.write_text(line * (2 * 1024 * 1024 // len(line)))
    with make_client({"Authorization": "Bearer test-api-key"}) as c:
        r = upload(c, path)
    assert r.status_code == 413 and "KTOFORGE_MAX_UPLOAD_MB" in r.json()["detail"]


def test_unknown_model_names_model(client: TestClient, reference_dataset: Path):
    r = upload(client, reference_dataset, model="builtin:nope")
    assert r.status_code == 422
    assert "model" in r.json()["detail"][0]["loc"]


def test_auth_and_unknown_ids(client: TestClient, anon: TestClient, reference_dataset: Path):
    r = upload(anon, reference_dataset)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    wrong = TestClient(client.app, headers={"Authorization": "Bearer wrong"})
    assert wrong.get(f"/v1/datasets/{'0' * 64}").status_code == 401
    assert client.get(f"/v1/datasets/{'0' * 64}").status_code == 404
    assert client.get("/v1/datasets/not-a-hash").status_code == 404
