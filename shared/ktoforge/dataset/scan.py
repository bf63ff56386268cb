"""One pass over a dataset file, or over one part of it: errors by line, tallies, token lengths.

Memory grows only by a few bytes per row (a row hash, a prompt hash, a length in a packed array), never with
the text. Token lengths use the job model's own tokenizer and chat template (``tokenizers`` + the shared
render, no transformers/torch), so "too long" means what training will cut. A part's Scan merges into the
Scan of the parts before it (``ktoforge.dataset.parallel``); ``ktoforge.dataset.report`` turns the whole
file's Scan into its report.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ktoforge.dataset.examples import Example
from ktoforge.dataset.formats import RowError
from ktoforge.dataset.render import ChatTemplate, RenderError, render_row
from ktoforge.schemas import ReportWarning

MAX_LISTED_ERRORS = 100
EXAMPLE_LINES = 20
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
    def for_model(cls, model_dir: Path, max_length: int) -> Lengths | str:
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

    def __getstate__(self) -> dict[str, Any]:
        """Sent back from a part's process without the tokenizer and template (flushed first: nothing pending)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("template", "tokenizer", "pending")}

    def extend(self, part: Lengths, offset: int) -> None:
        for label, lengths in part.by_label.items():
            self.by_label[label] += lengths
        self.over_lines += [line + offset for line in part.over_lines][:EXAMPLE_LINES - len(self.over_lines)]
        self.over_count, self.over_sum = self.over_count + part.over_count, self.over_sum + part.over_sum
        self.over_max = max(self.over_max, part.over_max)

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
        self.format: str | None = None  # every row counted has the file's format (others are errors)
        self.bad_tools: list[int] = []
        self.lines, self.label_bits = array("I"), array("b")
        self.row_hashes, self.prompt_hashes = array("Q"), array("Q")
        self.chars: dict[bool, array] = {True: array("I"), False: array("I")}

    @property
    def labels(self) -> Counter[bool]:
        desirable = sum(self.label_bits)
        return Counter({True: desirable, False: len(self.label_bits) - desirable})

    def add(self, ex: Example) -> None:
        self.format = ex.format
        if ex.invalid_tool_args:
            self.bad_tools.append(ex.line)
        self.lines.append(ex.line)
        self.label_bits.append(ex.label)
        self.row_hashes.append(ex.row_hash)
        self.prompt_hashes.append(ex.prompt_hash)
        self.chars[ex.label].append(len(ex.completion["content"]) + sum([len(m["content"]) for m in ex.prompt]))

    def extend(self, part: Tally, offset: int) -> None:
        self.format = self.format or part.format
        self.bad_tools += [line + offset for line in part.bad_tools]
        self.lines += array("I", (line + offset for line in part.lines))
        self.label_bits += part.label_bits
        self.row_hashes += part.row_hashes
        self.prompt_hashes += part.prompt_hashes
        for label, chars in part.chars.items():
            self.chars[label] += chars

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


class Scan:
    """What one pass over a file, or over one part of it, found: parts checked in parallel merge in file order.

    Errors are kept as (line, kind, message) and lengths without their tokenizer, so that a part's Scan is
    cheap to send back from the process that made it.
    """

    @dataclass(frozen=True)
    class Spec:
        model_dir: Path | None
        max_length: int
        on_error: str

    def __init__(self, spec: Scan.Spec) -> None:
        self.spec = spec
        self.errors: list[tuple[int, str, str]] = []
        self.error_kinds: Counter[str] = Counter()
        self.skipped: list[int] = []
        self.tally = Tally()
        self.lengths: Lengths | str = Lengths.for_model(Path(spec.model_dir), spec.max_length) \
            if spec.model_dir else "no local tokenizer for this model: lengths are in characters, truncation unknown"

    def run(self, rows: Iterable[tuple[int, Example | RowError]]) -> Scan:
        lengths = self.lengths if isinstance(self.lengths, Lengths) else None
        count = self.tally.add
        for line, item in rows:
            if lengths is not None and isinstance(item, Example):
                try:
                    lengths.add(item)
                except RenderError as exc:
                    item = RowError("template_error", f"the model's chat template cannot render this row: {exc}")
            if isinstance(item, RowError):
                self.error(line, item)
            else:
                count(item)
        if lengths is not None:
            lengths.flush()
        return self

    def error(self, line: int, err: RowError) -> None:
        self.error_kinds[err.kind] += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append((line, err.kind, str(err)))
        if self.spec.on_error == "skip":
            self.skipped.append(line)

    def extend(self, part: Scan, offset: int) -> None:
        """Append the Scan of the part that follows, its line numbers shifted by the lines before it."""
        room = MAX_LISTED_ERRORS - len(self.errors)
        self.errors += [(line + offset, kind, msg) for line, kind, msg in part.errors[:max(room, 0)]]
        self.error_kinds += part.error_kinds
        self.skipped += [line + offset for line in part.skipped]
        self.tally.extend(part.tally, offset)
        if isinstance(self.lengths, Lengths) and isinstance(part.lengths, Lengths):
            self.lengths.extend(part.lengths, offset)


def _percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0
