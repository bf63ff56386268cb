"""Prompt sets for an evaluation: the job's held-out desirable rows, or a file in the upstream Evaluator's format.

Held-out rows are the ones the trainer never saw (the same split, by the job's seed and eval_fraction, that
both backends train with); only desirable rows are used because their completion is the behaviour we want,
so the tools it calls are the expected ones (none: a plain reply is expected). The upstream format is a
JSON list of ``{id, question, expected_tools, system?, tags?}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ktoforge.dataset import ChatTemplate, load_examples, template_messages
from ktoforge.dataset.split import split
from ktoforge.evaluation.toolcalls import dataset_calls

MAX_PROMPTS = 1000
Text = Annotated[str, Field(min_length=1, max_length=100_000)]


class EvalPrompt(BaseModel):
    """One prompt of the upstream Evaluator's format; ``messages`` (ours) carries a multi-turn prompt."""

    model_config = ConfigDict(extra="ignore")
    id: Annotated[str, Field(min_length=1, max_length=200)]
    question: Text
    expected_tools: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=64)] = []
    system: Annotated[str | None, Field(max_length=100_000)] = None
    tags: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)] = []
    messages: Annotated[list[dict[str, Any]] | None, Field(max_length=256)] = None

    def chat(self) -> list[dict[str, Any]]:
        """The turns a model is prompted with."""
        if self.messages:
            return [{"role": m["role"], "content": m["content"]} for m in self.messages]
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.question}]


PromptList = TypeAdapter(Annotated[list[EvalPrompt], Field(min_length=1, max_length=MAX_PROMPTS)])


class PromptFileError(ValueError):
    """A prompt file that is not a JSON list of prompts in the upstream format; says where."""


def parse_prompts(data: Any) -> list[EvalPrompt]:
    """Validated prompts from already-decoded JSON (an API body or a file); PromptFileError says where."""
    try:
        prompts = PromptList.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PromptFileError(f"prompts: {where}: {first['msg']}") from None
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise PromptFileError("prompts: ids must be unique")
    return prompts


def load_prompt_file(path: Path) -> list[EvalPrompt]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"{path}: not a readable JSON file ({exc})") from None
    return parse_prompts(data)


def held_out_prompts(dataset: Path, eval_fraction: float, seed: int, limit: int | None = None) -> list[EvalPrompt]:
    """The job's held-out desirable rows as prompts; the expected tools are those its completion calls."""
    _, held = split(load_examples(dataset), eval_fraction, seed)
    prompts = []
    for ex in held:
        if not ex.label:
            continue
        turns = [m for m in ex.prompt if m.get("role") in ("system", "user", "assistant")]
        question = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
        expected = [c.name for c in dataset_calls(str(ex.completion.get("content") or ""))]
        prompts.append(EvalPrompt(id=f"line-{ex.line}", question=question or "(no user turn)",
                                  expected_tools=expected, messages=turns, tags=["held-out"]))
    return prompts[:limit] if limit else prompts


def prompt_text(prompt: EvalPrompt, template: ChatTemplate) -> str:
    """The prompt rendered by the model's chat template, ready for the assistant's turn."""
    turns, _ = template_messages(prompt.chat(), {"role": "assistant", "content": ""}, template)
    return template.render(turns, add_generation_prompt=True)
