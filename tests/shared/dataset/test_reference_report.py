"""The reference file's report, checked against counts this test derives from the file by itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from ktoforge.dataset.report import build_report
from ktoforge.dataset.weights import weight_ratio


def independent_counts(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    seen, dups = set(), []
    prompts = defaultdict(set)
    bad_args = 0
    for i, row in enumerate(rows, start=1):
        key = json.dumps(row, sort_keys=True)
        if key in seen:
            dups.append(i)
        seen.add(key)
        prompts[json.dumps(row["conversations"][:-1])].add(row["label"])
        texts = [m["content"] for m in row["conversations"] if m["role"] == "assistant"]
        ok = True
        for text in texts:
            for part in text.split("arguments:")[1:]:
                try:
                    json.JSONDecoder().raw_decode(part.strip())
                except json.JSONDecodeError:
                    ok = False
        bad_args += not ok
    labels = Counter(r["label"] for r in rows)
    return {"rows": len(rows), "desirable": labels[True], "undesirable": labels[False], "dups": dups,
            "both": sum(len(v) == 2 for v in prompts.values()), "bad_args": bad_args}


def test_reference_report_matches_independent_counts(reference_dataset, tiny_model_dir):
    expected = independent_counts(reference_dataset)
    assert (expected["rows"], expected["desirable"], expected["undesirable"]) == (1000, 746, 254)
    report = build_report(reference_dataset, model_dir=tiny_model_dir, max_length=1024)
    assert (report.rows, report.desirable, report.undesirable, report.error_count) == (1000, 746, 254, 0)
    warnings = {w.kind: w for w in report.warnings}
    assert warnings["duplicate_rows"].count == len(expected["dups"])
    assert warnings["duplicate_rows"].lines == expected["dups"][:20]
    assert warnings["conflicting_labels"].count == expected["both"]
    assert warnings["tool_call_arguments_invalid"].count == expected["bad_args"]
    assert {"label_imbalance", "length_confound", "too_long"} <= set(warnings)
    assert report.stats["rows_truncated"] == warnings["too_long"].count > 0
    tokens = report.stats["tokens"]
    assert 0 < tokens["p50"] <= tokens["p95"] <= tokens["max"]
    w = report.recommended_weights
    assert 1 <= weight_ratio(w["desirable_weight"], w["undesirable_weight"], 746, 254) <= 4 / 3
    assert report.stats["mean_tokens"]["desirable"] > 1.5 * report.stats["mean_tokens"]["undesirable"]


def test_cli_json_equals_the_library_and_the_api(reference_dataset, tiny_model_dir, kf_env, redis_client):
    from fastapi.testclient import TestClient

    from ktoforge_api.main import create_app

    cli = subprocess.run([str(Path(sys.executable).parent / "ktoforge"), "dataset", "inspect", str(reference_dataset),
                          "--json"], capture_output=True, text=True, env={**__import__("os").environ, **kf_env})
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    assert from_cli == build_report(reference_dataset, model_dir=tiny_model_dir).model_dump(mode="json")
    with TestClient(create_app()) as client, reference_dataset.open("rb") as fh:
        r = client.post("/v1/datasets", files={"file": ("ref.jsonl", fh)},
                        headers={"Authorization": f"Bearer {kf_env['KTOFORGE_API_KEY']}"})
        assert r.status_code == 201
        from_api = r.json()
        assert client.get(f"/v1/datasets/{from_api['id']}", headers={
            "Authorization": f"Bearer {kf_env['KTOFORGE_API_KEY']}"}).json() == from_api
    assert {**from_api, "id": None} == from_cli


def test_cli_human_output_and_exit_code(tmp_path, reference_dataset):
    ktoforge = str(Path(sys.executable).parent / "ktoforge")
    ok = subprocess.run([ktoforge, "dataset", "inspect", str(reference_dataset)], capture_output=True, text=True)
    assert ok.returncode == 0 and "746" in ok.stdout and "duplicate_rows" in ok.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": [], "label": true}\n')
    failed = subprocess.run([ktoforge, "dataset", "inspect", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1 and "no_conversation" in failed.stdout
