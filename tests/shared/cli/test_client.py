"""The CLI's pieces without a server: SSE parsing, --set, error texts, the bar's figures."""

from __future__ import annotations

import pytest
import typer

from ktoforge.cli.client import ApiError, SseEvent, parse_sse
from ktoforge.cli.job import apply_sets
from ktoforge.cli.options import describe
from ktoforge.cli.watch import format_eta, format_stats


def test_parse_sse_reads_events_retry_and_skips_pings() -> None:
    lines = ["retry: 2000", "", ": ping - 2026", "", "id: 1-0", "event: metrics",
             'data: {"id": "1-0", "type": "metrics", "time": 1, "data": {"step": 1, "loss": 0.7}}', "",
             "id: 2-0", "event: state", 'data: {"id": "2-0", "type": "state", "time": 2,', 'data: "data": {}}', ""]
    items = list(parse_sse(iter(lines)))
    assert items == [2000, SseEvent("1-0", "metrics", {"step": 1, "loss": 0.7}), SseEvent("2-0", "state", {})]


def test_parse_sse_ignores_a_frame_without_its_blank_line() -> None:
    """A connection cut mid-frame: the half frame is never dispatched (the resume sends it again)."""
    assert list(parse_sse(iter(["id: 3-0", "event: metrics"]))) == []


def test_set_puts_each_key_in_its_section() -> None:
    body = apply_sets({"dataset_id": "x"}, ["beta=0.2", "lora.r=8", "target_modules=q_proj,v_proj",
                                            "max_steps=10", "model=builtin:tiny-mistral", "gradient_checkpointing=false"])
    assert body == {"dataset_id": "x", "model": "builtin:tiny-mistral",
                    "hyperparameters": {"beta": 0.2, "max_steps": 10, "gradient_checkpointing": False},
                    "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}


@pytest.mark.parametrize("pair", ["nonsense=1", "lora.beta=1", "beta"])
def test_set_refuses_what_it_cannot_place(pair: str) -> None:
    with pytest.raises(typer.BadParameter):
        apply_sets({}, [pair])


def test_describe_turns_fastapi_details_into_lines() -> None:
    exc = ApiError(422, [{"loc": ["body", "model"], "msg": "no such model", "type": "value_error"}])
    assert describe(exc) == "422: body.model: no such model"
    assert describe(ApiError(0, "cannot reach the API")) == "cannot reach the API"


def test_bar_figures() -> None:
    assert format_stats({"loss": 0.69314, "kl": 0.0, "rewards/margins": -0.0123, "step": 3}) == \
        "loss 0.6931 kl 0 margins -0.0123"
    assert format_stats({"train_runtime": 3.0}) == ""
    assert format_eta(None) == "ETA -:--" and format_eta(75) == "ETA 1:15" and format_eta(3725) == "ETA 1:02:05"


def test_the_bar_keeps_the_last_margins_when_a_step_has_one_label() -> None:
    """TRL logs no rewards/margins for a step whose batches held one label; the bar keeps the last one."""
    import io

    from rich.console import Console

    from ktoforge.cli.watch import Bar

    bar = Bar(Console(file=io.StringIO()), "0" * 32)
    bar.on_event(SseEvent("1-0", "metrics", {"step": 5, "max_steps": 6, "loss": 0.6, "kl": 0.1,
                                             "rewards/margins": 0.25}))
    bar.on_event(SseEvent("2-0", "metrics", {"step": 6, "max_steps": 6, "loss": 0.5, "kl": 0.2}))
    assert bar.progress.tasks[0].fields["stats"] == "loss 0.5 kl 0.2 margins 0.25"
