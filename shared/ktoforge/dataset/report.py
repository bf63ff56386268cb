"""The dataset report: errors with line numbers, warnings, statistics, recommended weights.

One streamed pass: memory grows only by a few bytes per row (a row hash, a prompt hash, a length in a
packed array), never with the text. Token lengths use the job model's own tokenizer and chat template
(``tokenizers`` + the shared render, no transformers/torch), so "too long" means what training will cut.
"""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np

from ktoforge.dataset.examples import Example, iter_rows
from ktoforge.dataset.formats import RowError
from ktoforge.dataset.render import ChatTemplate, RenderError, render_row
from ktoforge.dataset.weights import recommended_weights, weight_ratio
from ktoforge.schemas import DatasetReport, ReportIssue, ReportWarning

MAX_LISTED_ERRORS = 100
EXAMPLE_LINES = 20
LENGTH_CONFOUND = 1.5  # mean length ratio between classes worth a warning
ON_ERROR = ("reject", "skip")
BATCH = 256


class Lengths:
    """Token lengths of rendered rows, encoded in batches (the Rust tokenizer parallelises a batch)."""

    def __init__(self, template: ChatTemplate, tokenizer: Any, max_length: int) -> None:
        self.template, self.tokenizer, self.max_length = template, tokenizer, max_length
        self.pending: list[tuple[int, bool, str]] = []
        self.by_label: dict[bool, array] = {True: array("I"), False: array("I")}
        self.over_lines: list[int] = []  # the first EXAMPLE_LINES rows over max_length
        self.over_count = self.over_sum = self.over_max = 0  # rows over, and tokens that would be cut

    @classmethod
    def for_model(cls, model_dir: Path, max_length: int) -> "Lengths | str":
        """Lengths for this model, or why its lengths cannot be measured here."""
        from tokenizers import Tokenizer

        if not (model_dir / "tokenizer.json").is_file():
            return f"{model_dir} has no tokenizer.json: lengths are in characters, truncation unknown"
        try:
            template = ChatTemplate.from_dir(model_dir)
        except (OSError, ValueError) as exc:
            return f"no chat template in {model_dir} ({exc}): lengths are in characters, truncation unknown"
        return cls(template, Tokenizer.from_file(str(model_dir / "tokenizer.json")), max_length)

    def add(self, ex: Example) -> None:
        """Render now (a template error is the row's error); tokenize later, in a batch."""
        prompt, completion = render_row(ex.prompt, ex.completion, self.template)
        self.pending.append((ex.line, ex.label, prompt + completion))
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        encoded = self.tokenizer.encode_batch([t for _, _, t in self.pending], add_special_tokens=False)
        for (line, label, _), enc in zip(self.pending, encoded, strict=True):
            n = len(enc.ids)
            self.by_label[label].append(n)
            if n > self.max_length:
                cut = n - self.max_length
                self.over_count, self.over_sum, self.over_max = (self.over_count + 1, self.over_sum + cut,
                                                                 max(self.over_max, cut))
                if len(self.over_lines) < EXAMPLE_LINES:
                    self.over_lines.append(line)
        self.pending = []

    def stats(self) -> dict[str, Any]:
        everything = sorted(self.by_label[True] + self.by_label[False])
        return {"tokens": {"p50": _percentile(everything, 0.5), "p95": _percentile(everything, 0.95),
                           "max": everything[-1] if everything else 0},
                "rows_truncated": self.over_count}

    def warning(self) -> ReportWarning | None:
        if not self.over_count:
            return None
        return ReportWarning(kind="too_long", count=self.over_count, lines=self.over_lines, message=(
            f"{self.over_count} rows exceed max_length={self.max_length} tokens and would be cut: "
            f"{self.over_sum} tokens in all, {round(self.over_sum / self.over_count)} per row on average, "
            f"at most {self.over_max}"))


class Tally:
    """Label counts, exact duplicates, prompts seen with both labels, and tool-call argument errors.

    Per row it keeps 8-byte hashes of the row and of its prompt in packed arrays (about 25 bytes a row in all);
    duplicates and conflicts are found by sorting those once at the end, not by growing hash tables.
    """

    def __init__(self) -> None:
        self.labels: Counter[bool] = Counter()
        self.formats: Counter[str] = Counter()
        self.bad_tools: list[int] = []
        self.lines, self.label_bits = array("I"), array("b")
        self.row_hashes, self.prompt_hashes = array("Q"), array("Q")
        self.chars: dict[bool, array] = {True: array("I"), False: array("I")}

    def add(self, ex: Example) -> None:
        self.labels[ex.label] += 1
        self.formats[ex.format] += 1
        if ex.invalid_tool_args:
            self.bad_tools.append(ex.line)
        self.lines.append(ex.line)
        self.label_bits.append(ex.label)
        self.row_hashes.append(int.from_bytes(ex.digest[:8], "little"))
        self.prompt_hashes.append(_prompt_hash(ex))
        self.chars[ex.label].append(len(ex.completion["content"]) + sum(len(m["content"]) for m in ex.prompt))

    def duplicates(self) -> list[int]:
        """Lines of rows that repeat an earlier row exactly."""
        order, starts = _groups(self.row_hashes)
        repeats = np.ones(len(order), dtype=bool)
        repeats[starts] = False
        return np.asarray(self.lines)[np.sort(order[repeats])].tolist()

    def conflicts(self) -> list[int]:
        """First line of each prompt that appears with both labels."""
        order, starts = _groups(self.prompt_hashes)
        if not len(order):
            return []
        labels = np.asarray(self.label_bits, dtype=bool)[order]
        both = np.logical_or.reduceat(labels, starts) & np.logical_or.reduceat(~labels, starts)
        return np.sort(np.asarray(self.lines)[order[starts[both]]]).tolist()


def _groups(hashes: array) -> tuple[np.ndarray, np.ndarray]:
    """(row indices sorted by hash, stably; where each run of equal hashes starts in that order)."""
    values = np.asarray(hashes, dtype=np.uint64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(order) else order


def build_report(path: Path, *, model_dir: Path | None = None, max_length: int = 1024,
                 on_error: str = "reject") -> DatasetReport:
    """Validate every line of ``path``; with ``on_error="skip"`` the bad lines are listed as skipped."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    errors: list[ReportIssue] = []
    error_kinds: Counter[str] = Counter()
    skipped: list[int] = []
    tally = Tally()
    lengths = Lengths.for_model(Path(model_dir), max_length) if model_dir else \
        "no local tokenizer for this model: lengths are in characters, truncation unknown"
    for line, item in iter_rows(path):
        if isinstance(item, Example) and isinstance(lengths, Lengths):
            try:
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
        tally.add(item)
    n_d, n_u = tally.labels[True], tally.labels[False]
    stats: dict[str, Any] = {"format": tally.formats.most_common(1)[0][0] if tally.formats else None,
                             "max_length": max_length}
    warnings = [w for w in (
        _warn("tool_call_arguments_invalid", tally.bad_tools,
              "rows with a tool call whose arguments are not valid JSON"),
        _warn("duplicate_rows", tally.duplicates(), "rows that repeat an earlier row exactly"),
        _warn("conflicting_labels", tally.conflicts(),
              "prompts that appear with both labels (lines are each prompt's first row)"),
    ) if w]
    if isinstance(lengths, Lengths):
        lengths.flush()
        stats.update(lengths.stats())
        warnings += [w for w in (lengths.warning(),) if w]
        by_len, unit = lengths.by_label, "tokens"
    else:
        stats.update(tokens=None, rows_truncated=None, note=lengths)
        by_len, unit = tally.chars, "characters"
    w_d, w_u = recommended_weights(n_d, n_u)
    if n_d and n_u and not 1 <= weight_ratio(1, 1, n_d, n_u) <= 4 / 3:
        warnings.append(ReportWarning(kind="label_imbalance", count=abs(n_d - n_u), lines=[], message=(
            f"{n_d} desirable vs {n_u} undesirable rows is outside TRL's guidance (desirable_weight·n_D / "
            f"undesirable_weight·n_U in [1, 4/3]); use desirable_weight={w_d}, undesirable_weight={w_u} "
            "(what weights 'auto' does)")))
    if by_len[True] and by_len[False]:
        m_d, m_u = fmean(by_len[True]), fmean(by_len[False])
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


def _percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def _prompt_hash(ex: Example) -> int:
    """64 bits equal for equal prompts, within one check (Python's keyed hash: see examples._row_hash)."""
    text = "\x00".join(f"{m['role']}\x01{m['content']}" for m in ex.prompt)
    return hash(text) & 0xFFFF_FFFF_FFFF_FFFF


def _warn(kind: str, lines: list[int], what: str) -> ReportWarning | None:
    if not lines:
        return None
    return ReportWarning(kind=kind, count=len(lines), lines=lines[:EXAMPLE_LINES], message=f"{len(lines)} {what}")
