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



def test_half_a_surrogate_pair_is_rejected_naming_the_line(client: TestClient, tmp_path: Path):
    """JSON can escape half a UTF-16 pair ("\\ud800"); Python's parser accepts it, nothing can encode it (was a 500)."""
    path = tmp_path / "surrogate.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD).replace("hi", "hi \\ud800") + "\n")
    r = upload(client, path)
    assert r.status_code == 422, r.text
    assert "line 2" in json.dumps(r.json()["detail"]) and "surrogate" in r.text

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


def multipart(field: str, payload: bytes, boundary: str = "kf-boundary", close: bool = True) -> bytes:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nignored\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="d.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n").encode()
    return head + payload + (f"\r\n--{boundary}--\r\n".encode() if close else b"")


FORM = {"Content-Type": "multipart/form-data; boundary=kf-boundary"}


def test_hand_built_form_with_other_fields(client: TestClient, reference_dataset: Path):
    r = client.post("/v1/datasets", content=multipart("file", reference_dataset.read_bytes()), headers=FORM)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == sha256(reference_dataset)


def test_chunked_upload_past_the_limit_is_cut_off(kf_env, redis_client, monkeypatch):
    """No Content-Length to refuse up front: the stream itself is counted and dropped at the limit."""
    monkeypatch.setenv("KTOFORGE_MAX_UPLOAD_MB", "1")
    from ktoforge.settings import get_settings

    get_settings.cache_clear()

    def body():  # a generator body travels chunked, with no Content-Length
        yield multipart("file", b"", close=False)
        line = (json.dumps(GOOD) + "\n").encode() * 1000
        for _ in range(20):  # ~2 MiB
            yield line

    with make_client({"Authorization": "Bearer test-api-key"}) as c:
        r = c.post("/v1/datasets", content=body(), headers=FORM)
    assert r.status_code == 413, r.text
    data = Path(kf_env["KTOFORGE_DATA_DIR"])
    assert not any((data / "tmp").iterdir()) and not any((data / "datasets").iterdir())


def test_malformed_forms_are_422_and_store_nothing(client: TestClient, reference_dataset: Path, kf_env):
    payload = reference_dataset.read_bytes()
    cases = {
        "no file field": (multipart("data", payload), FORM),
        "cut short": (multipart("file", payload, close=False), FORM),
        "not multipart": (payload, {"Content-Type": "application/jsonl"}),
        "no boundary": (multipart("file", payload), {"Content-Type": "multipart/form-data"}),
        "garbage": (b"\x00" * 100, FORM),
    }
    for what, (body, headers) in cases.items():
        r = client.post("/v1/datasets", content=body, headers=headers)
        assert r.status_code == 422, (what, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "file"], what
    data = Path(kf_env["KTOFORGE_DATA_DIR"])
    assert not any((data / "tmp").iterdir()) and not any((data / "datasets").iterdir())


def test_upload_checked_in_parts_reports_as_one_pass(kf_env, redis_client, tmp_path: Path, monkeypatch,
                                                      reference_dataset: Path, tiny_model_dir: Path):
    """KTOFORGE_DATASET_CHECK_PROCESSES: the API forks part processes from its worker thread; same report."""
    from ktoforge.dataset.report import build_report
    from ktoforge.settings import get_settings

    rows = reference_dataset.read_text().splitlines()
    rows[700] = json.dumps(BAD_LABEL)
    path = tmp_path / "parts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("KTOFORGE_DATASET_CHECK_PROCESSES", "3")
    get_settings.cache_clear()
    with make_client({"Authorization": "Bearer test-api-key"}) as c:
        r = upload(c, path, on_error="skip")
    assert r.status_code == 201, r.text
    report = r.json()
    one = build_report(path, model_dir=tiny_model_dir, on_error="skip", processes=1).model_dump(mode="json")
    assert {k: v for k, v in report.items() if k != "id"} == {k: v for k, v in one.items() if k != "id"}
    assert report["skipped_lines"] == [701] and report["rows"] == 999 and report["stats"]["rows_truncated"] > 0
