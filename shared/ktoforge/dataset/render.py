"""One rendering of a row into (prompt text, completion text), shared by the torch and MLX backends.

The text is the model's own chat template applied exactly as inference applies it: prompt =
template(prompt turns, add_generation_prompt=True); completion = template(prompt + completion) minus that
prefix. The template is evaluated with jinja2 the way transformers does, but without importing
transformers (which pulls torch into the API and the Mac worker); a test checks both agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = dict[str, Any]


class RenderError(ValueError):
    """The template cannot render this conversation (e.g. roles it does not accept)."""


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def _token_text(value: Any) -> str:
    return value.get("content", "") if isinstance(value, dict) else (value or "")


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template and special tokens, read from its tokenizer_config.json."""

    source: str
    bos_token: str
    eos_token: str
    system_role: bool

    @classmethod
    def from_dir(cls, path: str | Path) -> "ChatTemplate":
        path = Path(path)
        cfg = json.loads((path / "tokenizer_config.json").read_text())
        source = cfg.get("chat_template")
        if source is None and (path / "chat_template.jinja").exists():
            source = (path / "chat_template.jinja").read_text()
        if isinstance(source, list):  # several named templates: use the default one
            source = next(t["template"] for t in source if t.get("name") == "default")
        if not source:
            raise RenderError(f"{path} has no chat template; a chat model's tokenizer is required")
        tmpl = cls(source, _token_text(cfg.get("bos_token")), _token_text(cfg.get("eos_token")), True)
        probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        try:
            tmpl.render(probe, add_generation_prompt=True)
        except RenderError:
            return cls(source, tmpl.bos_token, tmpl.eos_token, False)
        return tmpl

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        try:
            return _compile(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError as exc:
            raise RenderError(str(exc)) from exc


def merge_system(messages: list[Message]) -> list[Message]:
    """Fold system turns into the next user turn, for templates without a system role (Mistral v0.3)."""
    out: list[Message] = []
    pending: list[str] = []
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
        elif m["role"] == "user" and pending:
            out.append({**m, "content": "\n\n".join([*pending, m["content"]])})
            pending = []
        else:
            out.append(m)
    if pending:
        out.insert(0, {"role": "user", "content": "\n\n".join(pending)})
    return out


def template_messages(prompt: list[Message], completion: Message,
                      template: ChatTemplate) -> tuple[list[Message], Message]:
    """The turns exactly as the template receives them (system text merged where it has no system role)."""
    return (prompt if template.system_role else merge_system(prompt)), completion


def render_row(prompt: list[Message], completion: Message, template: ChatTemplate) -> tuple[str, str]:
    """(prompt text, completion text) such that their concatenation is template(prompt + completion)."""
    prompt, completion = template_messages(prompt, completion, template)
    prompt_text = template.render(prompt, add_generation_prompt=True)
    full = template.render([*prompt, completion])
    if not full.startswith(prompt_text):
        raise RenderError("the chat template renders the prompt differently when a completion follows it")
    return prompt_text, full[len(prompt_text):]
