"""`fer-train runs`: one table over run folders, ranked on the split runs are chosen on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from helpers import run_main


def _run(root: Path, name: str, labels: str, val: Optional[float], test: float, split: str = "test",
         train: Optional[dict] = None) -> Path:
    """A run folder as `fer-train fit` leaves it, reduced to the two files the table reads."""
    folder = root / name
    folder.mkdir(parents=True)
    metrics = {"split": split, "samples": 100, "accuracy": test, "macro_f1": test - 0.1,
               "params": 476_335, "macs": 50_012_345, "epochs_run": 16, "seconds_per_epoch": 104.6,
               "data": {"labels": labels}}
    if val is not None:
        metrics["val_accuracy"] = val
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.json").write_text(json.dumps({"args": {"labels": labels}, "train": train or {}}))
    return folder


def _table(capsys) -> list[list[str]]:
    out = capsys.readouterr().out.strip().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in out[2:]]


def test_runs_rank_by_validation_within_each_label_set(tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    runs = [
        _run(tmp_path, "a-low", "fer2013", 0.69, 0.71),  # best on test, ranked by val all the same
        _run(tmp_path, "b-high", "fer2013", 0.70, 0.69,
             train={"init": "train/results/a-low/model.keras", "teachers": ["x", "y"]}),
        _run(tmp_path, "c-plus", "ferplus-soft", 0.85, 0.83),
        _run(tmp_path, "d-plus", "ferplus", 0.84, 0.84, train={"teacher": "runs/train/c-plus"}),
        _run(tmp_path, "e-noval", "fer2013", None, 0.72),
    ]
    out = tmp_path / "table.md"
    assert run_main(main, ["runs", *map(str, runs), "--out", str(out)], monkeypatch) == 0
    rows = _table(capsys)
    assert [r[0] for r in rows] == ["b-high", "a-low", "e-noval", "c-plus", "d-plus"]
    b = rows[0]
    assert b[1:] == ["fer2013", "a-low", "2", "0.48M", "50.0M", "16", "105", "70.00%", "69.00%", "0.590"]
    assert rows[4][2:4] == ["-", "1"]  # from scratch; one "teacher", as runs recorded it before --teacher could repeat
    assert rows[2][8] == ""  # no validation figure: listed, ranked last
    assert out.read_text().startswith("| run | labels | from | teachers |")


def test_runs_sorted_by_name_and_folders_without_metrics_skipped(tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    runs = [_run(tmp_path, "z", "fer2013", 0.7, 0.7), _run(tmp_path, "m", "fer2013", 0.6, 0.6)]
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_text("{}")
    notes = tmp_path / "README.md"  # what a glob over a results folder also picks up
    notes.write_text("# runs\n")
    assert run_main(main, ["runs", "--sort", "name", *map(str, runs), str(stopped), str(notes)],
                    monkeypatch) == 0
    captured = capsys.readouterr()
    assert [line.split("|")[1].strip() for line in captured.out.splitlines()[2:]] == ["m", "z"]
    assert captured.err.strip() == "skipped 2 without a metrics.json: stopped, README.md"


def test_runs_refuse_mixed_report_splits(tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    runs = [_run(tmp_path, "t", "fer2013", 0.7, 0.7), _run(tmp_path, "v", "fer2013", 0.7, 0.7, split="val")]
    assert run_main(main, ["runs", *map(str, runs)], monkeypatch) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the runs report on different splits (test, val): compare them apart")


def test_runs_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    missing = tmp_path / "nope"
    assert run_main(main, ["runs", str(missing)], monkeypatch) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: not found"

    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "metrics.json").write_text('{"split": "te')
    assert run_main(main, ["runs", str(torn)], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {torn / 'metrics.json'}: unreadable (JSONDecodeError") and "\n" not in err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"accuracy": 0.5}')
    assert run_main(main, ["runs", str(foreign)], monkeypatch) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {foreign / 'metrics.json'}: not a fer-train metrics file (missing or bad 'split')")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main(main, ["runs", str(empty)], monkeypatch) == 2
    assert "no run folders with a metrics.json to compare" in capsys.readouterr().err
