"""The dataset report: errors with line numbers, warnings, statistics, recommended weights.

The file is read once (``ktoforge.dataset.scan``), in parts at once where it is large
(``ktoforge.dataset.parallel``); this module turns what that pass found into the report.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

from ktoforge.dataset.parallel import scan_file
from ktoforge.dataset.scan import EXAMPLE_LINES, Lengths, Scan
from ktoforge.dataset.weights import recommended_weights, weight_ratio
from ktoforge.schemas import DatasetReport, ReportIssue, ReportWarning

LENGTH_CONFOUND = 1.5  # mean length ratio between classes worth a warning
ON_ERROR = ("reject", "skip")


def build_report(path: Path, *, model_dir: Path | None = None, max_length: int = 1024,
                 on_error: str = "reject", processes: int | None = None) -> DatasetReport:
    """Validate every line of ``path``; with ``on_error="skip"`` the bad lines are listed as skipped.

    ``processes``: how many processes check parts of the file at once (``ktoforge.dataset.parallel``); None
    chooses (one per core for a large file, one for a small one), 1 checks in this process only.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    return _report(scan_file(path, Scan.Spec(model_dir, max_length, on_error), processes), max_length)


def _report(scan: Scan, max_length: int) -> DatasetReport:
    """The report of a whole file's Scan: its warnings, statistics and recommended weights."""
    tally, lengths = scan.tally, scan.lengths
    labels = tally.labels  # counted from the packed label bits: once
    n_d, n_u = labels[True], labels[False]
    stats: dict[str, Any] = {"format": tally.format,
                             "max_length": max_length}
    warnings = [w for w in (
        _warn("tool_call_arguments_invalid", tally.bad_tools,
              "rows with a tool call whose arguments are not valid JSON"),
        _warn("duplicate_rows", tally.duplicates(), "rows that repeat an earlier row exactly"),
        _warn("conflicting_labels", tally.conflicts(),
              "prompts that appear with both labels (lines are each prompt's first row)"),
    ) if w]
    if isinstance(lengths, Lengths):
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
        format=stats["format"], rows=n_d + n_u, desirable=n_d, undesirable=n_u,
        errors=[ReportIssue(line=line, kind=kind, message=msg) for line, kind, msg in scan.errors],
        error_count=sum(scan.error_kinds.values()), error_counts=dict(scan.error_kinds),
        skipped_lines=scan.skipped, warnings=warnings, stats=stats,
        recommended_weights={"desirable_weight": w_d, "undesirable_weight": w_u},
    )


def _warn(kind: str, lines: list[int], what: str) -> ReportWarning | None:
    if not lines:
        return None
    return ReportWarning(kind=kind, count=len(lines), lines=lines[:EXAMPLE_LINES], message=f"{len(lines)} {what}")
