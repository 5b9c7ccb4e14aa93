"""One table over many run folders, so runs are compared on the split they were chosen on.

After a few rounds of fine-tunes, which run is best, what it cost and where
it started live in a dozen `metrics.json` and `config.json` files. Reading
them by hand invites slips, and sorting by the report split (PrivateTest)
invites choosing on it; `fer-train runs` sorts by the validation split, the
one every run was selected on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from fer_edge.errors import FerEdgeError
from fer_edge.train.fit import recorded_teachers


@dataclass(frozen=True)
class RunSummary:
    """What one finished run folder says about itself."""

    name: str
    labels: str
    start: str  # the run it was initialised from (--init), or "" from scratch
    teachers: int
    params: Optional[int]
    macs: Optional[int]
    epochs: Optional[int]
    seconds_per_epoch: Optional[float]
    val_accuracy: Optional[float]
    report_split: str
    report_accuracy: float
    report_macro_f1: float


def _run_name(reference: Optional[str]) -> str:
    """The run folder a path names (``train/results/x/model.keras`` and ``runs/train/x`` both give ``x``)."""
    if not reference:
        return ""
    path = Path(reference)
    return path.parent.name if path.suffix == ".keras" else path.name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FerEdgeError(f"{path}: unreadable ({exc.__class__.__name__}: {exc})") from None


def read_run(run_dir: Path) -> Optional[RunSummary]:
    """Summarise a run folder, or None when it holds no metrics.json (a run stopped before its first epoch).

    Soups too: a soup's config.json carries its first run's training
    settings, so its "from" and teachers columns are that run's.
    """
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = _read_json(metrics_path)
    config_path = run_dir / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    train = config.get("train", {})
    try:
        return RunSummary(
            name=run_dir.name,
            labels=str(metrics.get("data", {}).get("labels") or config.get("args", {}).get("labels", "")),
            start=_run_name(train.get("init")),
            teachers=len(recorded_teachers(train)),
            params=metrics.get("params"),
            macs=metrics.get("macs"),
            epochs=metrics.get("epochs_run"),
            seconds_per_epoch=metrics.get("seconds_per_epoch"),
            val_accuracy=metrics.get("val_accuracy"),
            report_split=str(metrics["split"]),
            report_accuracy=float(metrics["accuracy"]),
            report_macro_f1=float(metrics["macro_f1"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FerEdgeError(f"{metrics_path}: not a fer-train metrics file (missing or bad {exc})") from None


def label_family(labels: str) -> str:
    """FER+ soft-label runs are chosen on FER+ majority labels, so they rank among the majority-label runs."""
    return labels.removesuffix("-soft")


def sort_runs(runs: Sequence[RunSummary], by: str) -> list[RunSummary]:
    """Per label set, best validation accuracy first (runs without one last); or by name.

    Accuracies on different label sets (FER2013 vs FER+) are not comparable,
    so each set forms its own block.
    """
    if by == "name":
        return sorted(runs, key=lambda r: r.name)
    if by == "val":
        return sorted(runs, key=lambda r: (label_family(r.labels), r.val_accuracy is None,
                                           -(r.val_accuracy or 0.0), r.name))
    raise FerEdgeError(f"unknown sort key '{by}': use val or name")


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2%}"


def _millions(value: Optional[int], digits: int) -> str:
    return "" if value is None else f"{value / 1e6:.{digits}f}M"


def markdown_table(runs: Sequence[RunSummary]) -> str:
    """A Markdown table, one row per run, in the order given.

    The report split's columns carry the split's name as the runs record it
    (FER2013's PrivateTest is "test"). Runs that report on different splits
    are refused, since one column would then mix two test sets.
    """
    if not runs:
        raise FerEdgeError("no run folders with a metrics.json to compare")
    splits = sorted({r.report_split for r in runs})
    if len(splits) > 1:
        raise FerEdgeError(f"the runs report on different splits ({', '.join(splits)}): compare them apart")
    header = ("| run | labels | from | teachers | params | MACs | epochs | s/epoch | val top-1 "
              f"| {splits[0]} top-1 | {splits[0]} macro-F1 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in runs:
        lines.append(
            f"| {r.name} | {r.labels} | {r.start or '-'} | {r.teachers or '-'} "
            f"| {_millions(r.params, 2)} | {_millions(r.macs, 1)} "
            f"| {'' if r.epochs is None else r.epochs} "
            f"| {'' if r.seconds_per_epoch is None else f'{r.seconds_per_epoch:.0f}'} "
            f"| {_pct(r.val_accuracy)} | {_pct(r.report_accuracy)} | {r.report_macro_f1:.3f} |"
        )
    return "\n".join(lines) + "\n"
