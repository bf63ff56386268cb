"""The dataset report: errors with line numbers, warnings, statistics, recommended weights.

One pass over the file (streamed), so memory stays flat whatever its size.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ktoforge.dataset.examples import Example, iter_rows
from ktoforge.dataset.weights import recommended_weights
from ktoforge.schemas import DatasetReport, ReportIssue

MAX_LISTED_ERRORS = 100


def build_report(path: Path, *, model_dir: Path | None = None, max_length: int = 1024,
                 on_error: str = "reject") -> DatasetReport:
    """Validate every line of ``path``; ``on_error`` is recorded ("skip" lists the skipped lines)."""
    errors: list[ReportIssue] = []
    counts: Counter[str] = Counter()
    labels: Counter[bool] = Counter()
    skipped: list[int] = []
    for line, item in iter_rows(path):
        if isinstance(item, Example):
            labels[item.label] += 1
            continue
        counts[item.kind] += 1
        if len(errors) < MAX_LISTED_ERRORS:
            errors.append(ReportIssue(line=line, kind=item.kind, message=str(item)))
        if on_error == "skip":
            skipped.append(line)
    w_d, w_u = recommended_weights(labels[True], labels[False])
    return DatasetReport(
        format="conversations", rows=labels[True] + labels[False], desirable=labels[True],
        undesirable=labels[False], errors=errors, error_count=sum(counts.values()), error_counts=dict(counts),
        skipped_lines=skipped, recommended_weights={"desirable_weight": w_d, "undesirable_weight": w_u},
    )
