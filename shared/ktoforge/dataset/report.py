"""The dataset report: errors with line numbers, warnings, statistics, recommended weights.

One streamed pass: memory grows only by a few bytes per row (hashes, lengths), never with the text.
Token lengths use the job model's own tokenizer and chat template (``tokenizers`` + the shared render,
no transformers/torch), so "too long" means what training will cut.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean

from ktoforge.dataset.examples import Example, iter_rows
from ktoforge.dataset.formats import RowError
from ktoforge.dataset.render import ChatTemplate, RenderError, render_row
from ktoforge.dataset.weights import recommended_weights, weight_ratio
from ktoforge.schemas import DatasetReport, ReportIssue, ReportWarning

MAX_LISTED_ERRORS = 100
EXAMPLE_LINES = 20
LENGTH_CONFOUND = 1.5  # mean length ratio between classes worth a warning


class Lengths:
    """Token lengths of rendered rows, encoded in batches (the Rust tokenizer parallelises a batch)."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.template = ChatTemplate.from_dir(model_dir)
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.max_length = max_length
        self.pending: list[tuple[int, bool, str]] = []
        self.by_label: dict[bool, list[int]] = {True: [], False: []}
        self.over: list[tuple[int, int]] = []  # (line, tokens beyond max_length)

    def add(self, ex: Example) -> None:
        prompt, completion = render_row(ex.prompt, ex.completion, self.template)
        self.pending.append((ex.line, ex.label, prompt + completion))
        if len(self.pending) >= 256:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            encoded = self.tokenizer.encode_batch([t for _, _, t in self.pending], add_special_tokens=False)
            for (line, label, _), enc in zip(self.pending, encoded, strict=True):
                self.by_label[label].append(len(enc.ids))
                if len(enc.ids) > self.max_length:
                    self.over.append((line, len(enc.ids) - self.max_length))
            self.pending = []


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def build_report(path: Path, *, model_dir: Path | None = None, max_length: int = 1024,
                 on_error: str = "reject") -> DatasetReport:
    """Validate every line of ``path``; with ``on_error="skip"`` the bad lines are listed as skipped."""
    errors: list[ReportIssue] = []
    error_kinds: Counter[str] = Counter()
    labels: Counter[bool] = Counter()
    formats: Counter[str] = Counter()
    seen: set[bytes] = set()
    duplicates: list[int] = []
    bad_tools: list[int] = []
    prompts: dict[bytes, list] = defaultdict(lambda: [set(), []])  # prompt hash -> [labels, lines]
    chars: dict[bool, list[int]] = {True: [], False: []}
    lengths = Lengths(model_dir, max_length) if model_dir else None
    skipped: list[int] = []
    for line, item in iter_rows(path):
        if isinstance(item, Example):
            try:
                if lengths:
                    lengths.add(item)
            except RenderError as exc:
                item = RowError("template_error", f"the model's chat template cannot render this row: {exc}")
        if isinstance(item, RowError):
            error_kinds[item.kind] += 1
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append(ReportIssue(line=line, kind=item.kind, message=str(item)))
            if on_error == "skip":
                skipped.append(line)
            continue
        labels[item.label] += 1
        formats[item.format] += 1
        if item.digest in seen:
            duplicates.append(line)
        seen.add(item.digest)
        if item.invalid_tool_args:
            bad_tools.append(line)
        entry = prompts[_prompt_key(item)]
        entry[0].add(item.label)
        if len(entry[1]) < 4:
            entry[1].append(line)
        chars[item.label].append(len(item.completion["content"]) + sum(len(m["content"]) for m in item.prompt))
    if lengths:
        lengths.flush()
    n_d, n_u = labels[True], labels[False]
    w_d, w_u = recommended_weights(n_d, n_u)
    conflicts = [lines for labs, lines in prompts.values() if len(labs) == 2]
    warnings = [w for w in (
        _warn("tool_call_arguments_invalid", bad_tools, "rows with a tool call whose arguments are not valid JSON"),
        _warn("duplicate_rows", duplicates, "rows that repeat an earlier row exactly"),
        _warn("conflicting_labels", [ls[0] for ls in conflicts],
              "prompts that appear with both labels (lines are each prompt's first row)"),
    ) if w]
    stats: dict = {"format": formats.most_common(1)[0][0] if formats else None, "max_length": max_length}
    by_len = lengths.by_label if lengths else chars
    unit = "tokens" if lengths else "characters"
    if lengths:
        all_tokens = by_len[True] + by_len[False]
        over = [cut for _, cut in lengths.over]
        stats["tokens"] = {"p50": _percentile(all_tokens, 0.5), "p95": _percentile(all_tokens, 0.95),
                           "max": max(all_tokens, default=0)}
        stats["rows_truncated"] = len(over)
        if over:
            warnings.append(ReportWarning(kind="too_long", count=len(over), lines=[
                line for line, _ in lengths.over[:EXAMPLE_LINES]], message=(
                f"{len(over)} rows exceed max_length={max_length} tokens and would be cut: "
                f"{sum(over)} tokens in all, {round(mean(over))} per row on average, at most {max(over)}")))
    else:
        stats["tokens"] = None
        stats["note"] = "no local tokenizer for this model: lengths are in characters, truncation unknown"
    if n_d and n_u and not 1 <= weight_ratio(1, 1, n_d, n_u) <= 4 / 3:
        warnings.append(ReportWarning(kind="label_imbalance", count=abs(n_d - n_u), lines=[], message=(
            f"{n_d} desirable vs {n_u} undesirable rows is outside TRL's guidance (desirable_weight·n_D / "
            f"undesirable_weight·n_U in [1, 4/3]); use desirable_weight={w_d}, undesirable_weight={w_u} "
            "(what weights 'auto' does)")))
    if by_len[True] and by_len[False]:
        m_d, m_u = mean(by_len[True]), mean(by_len[False])
        stats[f"mean_{unit}"] = {"desirable": round(m_d, 1), "undesirable": round(m_u, 1)}
        if max(m_d, m_u) > LENGTH_CONFOUND * min(m_d, m_u):
            warnings.append(ReportWarning(kind="length_confound", count=n_d + n_u, lines=[], message=(
                f"desirable rows average {m_d:.0f} {unit}, undesirable {m_u:.0f}: the model may learn length "
                "instead of quality")))
    return DatasetReport(
        format=stats["format"], rows=n_d + n_u, desirable=n_d, undesirable=n_u, errors=errors,
        error_count=sum(error_kinds.values()), error_counts=dict(error_kinds), skipped_lines=skipped,
        warnings=warnings, stats=stats,
        recommended_weights={"desirable_weight": w_d, "undesirable_weight": w_u},
    )


def _prompt_key(ex: Example) -> bytes:
    text = "\x00".join(f"{m['role']}\x01{m['content']}" for m in ex.prompt)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _warn(kind: str, lines: list[int], what: str) -> ReportWarning | None:
    if not lines:
        return None
    return ReportWarning(kind=kind, count=len(lines), lines=lines[:EXAMPLE_LINES], message=f"{len(lines)} {what}")
