"""No model or tokenizer load in the torch worker runs code from the model's repo or folder (issue 10): every
``from_pretrained`` passes ``trust_remote_code=False`` explicitly, so no library default can change that."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

WORKER = ROOT / "services" / "worker-cuda" / "ktoforge_worker"
NO_REMOTE_CODE_ARG = {"PeftModel"}  # loads adapter weights only: it has no trust_remote_code


def loads_without_the_flag(path) -> list[str]:
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ast.unparse(node.func.value)
        flag = [k for k in node.keywords if k.arg == "trust_remote_code"]
        if owner not in NO_REMOTE_CODE_ARG and not (flag and ast.literal_eval(flag[0].value) is False):
            missing.append(f"{path.name}:{node.lineno} {owner}.from_pretrained")
    return missing


def test_every_load_passes_trust_remote_code_false():
    files = sorted(WORKER.glob("*.py"))
    calls = sum(ast.unparse(tree).count(".from_pretrained(") for tree in (ast.parse(f.read_text()) for f in files))
    assert calls >= 3  # Unsloth's and transformers' model and tokenizer loads at least
    assert [m for f in files for m in loads_without_the_flag(f)] == []
