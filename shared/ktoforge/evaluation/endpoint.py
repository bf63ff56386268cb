"""The same prompts and scoring against any OpenAI-compatible server (mlx_lm.server, Ollama, vLLM, LM Studio).

One chat completion per prompt, temperature 0 (the comparison must not depend on sampling luck); the
reply's text and its structured ``tool_calls`` are both scored, so a server that parses calls itself and
one that returns raw text are judged alike. The report has one model column, named as the server knows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from ktoforge.evaluation.prompts import EvalPrompt
from ktoforge.evaluation.report import build_report


class EndpointError(RuntimeError):
    """The server refused or answered something that is not a chat completion; says which prompt."""


def base_url(url: str) -> str:
    """``http://host:8080`` and ``http://host:8080/v1`` both mean the server's /v1 routes."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def complete(http: httpx.Client, model: str, prompt: EvalPrompt, max_tokens: int) -> dict[str, Any]:
    """``{"text", "tool_calls"}`` of the server's reply to one prompt."""
    body = {"model": model, "messages": prompt.chat(), "temperature": 0, "max_tokens": max_tokens, "stream": False}
    try:
        response = http.post("/chat/completions", json=body)
        response.raise_for_status()
        message = response.json()["choices"][0]["message"]
    except httpx.HTTPStatusError as exc:
        raise EndpointError(f"prompt {prompt.id}: the server answered {exc.response.status_code}: "
                            f"{exc.response.text[:500]}") from exc
    except (httpx.TransportError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise EndpointError(f"prompt {prompt.id}: no chat completion from {http.base_url} ({exc!r})") from exc
    return {"text": message.get("content") or "", "tool_calls": message.get("tool_calls")}


def evaluate_endpoint(url: str, model: str, prompts: Sequence[EvalPrompt], max_tokens: int = 192,
                      api_key: str | None = None, timeout_s: float = 300) -> dict[str, Any]:
    """The report (``{"prompts", "models": {model: …}, "rows"}``) of ``model`` served at ``url``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url(url), headers=headers, timeout=timeout_s) as http:
        outputs = [complete(http, model, p, max_tokens) for p in prompts]
    return build_report(prompts, {model: outputs}, {"endpoint": base_url(url), "model": model,
                                                    "max_new_tokens": max_tokens})
