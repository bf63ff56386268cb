"""Prompt sets: the job's held-out desirable rows (expected tools from their completions), or a file in the
upstream Evaluator's format, refused with the place of the problem when it is not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ktoforge.dataset import ChatTemplate, load_examples
from ktoforge.dataset.split import split
from ktoforge.evaluation.prompts import (EvalPrompt, PromptFileError, held_out_prompts, load_prompt_file,
                                         parse_prompts, prompt_text)


def test_held_out_prompts_are_the_desirable_rows_the_trainer_never_saw(reference_dataset: Path):
    prompts = held_out_prompts(reference_dataset, 0.1, 42)
    train, held = split(load_examples(reference_dataset), 0.1, 42)
    held_lines = {e.line for e in held if e.label}
    assert {int(p.id.removeprefix("line-")) for p in prompts} == held_lines
    assert not held_lines & {e.line for e in train}
    calling = [p for p in prompts if p.expected_tools]
    assert calling and len(calling) < len(prompts)  # the dataset also has rows answered without a call
    assert all("_" in t for p in calling for t in p.expected_tools)  # names like vaultManager_createFolder
    assert len(held_out_prompts(reference_dataset, 0.1, 42, limit=5)) == 5
    assert held_out_prompts(reference_dataset, 0.0, 42) == []


def test_upstream_format_is_read_and_rendered(tmp_path: Path, tiny_model_dir: Path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"id": "1", "question": "Make a folder", "expected_tools": ["a_b"],
                                 "system": "You manage a vault.", "tags": ["folders"], "extra": "ignored"}]))
    (prompt,) = load_prompt_file(path)
    assert prompt.chat() == [{"role": "system", "content": "You manage a vault."},
                             {"role": "user", "content": "Make a folder"}]
    text = prompt_text(prompt, ChatTemplate.from_dir(tiny_model_dir))  # Mistral: no system role, merged
    assert text.startswith("<s>[INST] You manage a vault.\n\nMake a folder[/INST]")


@pytest.mark.parametrize(("data", "says"), [
    ({"id": "1"}, "(top level)"),
    ([], "(top level)"),
    ([{"id": "1"}], "0.question: Field required"),
    ([{"id": "1", "question": "q", "expected_tools": "a_b"}], "0.expected_tools"),
    ([{"id": "1", "question": "q"}, {"id": "1", "question": "r"}], "ids must be unique"),
])
def test_bad_prompt_sets_say_where(data, says):
    with pytest.raises(PromptFileError, match=rf"{__import__('re').escape(says)}"):
        parse_prompts(data)


def test_an_unreadable_file_is_a_prompt_file_error(tmp_path: Path):
    (tmp_path / "p.json").write_text("[{")
    with pytest.raises(PromptFileError, match="not a readable JSON file"):
        load_prompt_file(tmp_path / "p.json")
    assert EvalPrompt(id="x", question="y").expected_tools == []
