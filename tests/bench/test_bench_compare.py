"""``fer-bench --compare A.json B.json``: ratios between two reports."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import run_main

from fer_edge.benchmarks.cli import main
from fer_edge.benchmarks.report import compare_reports, dumps
from fer_edge.errors import FerEdgeError


def _faster(report: dict, factor: float) -> dict:
    """The same report with every variant `factor` times faster."""
    out = copy.deepcopy(report)
    for row in out["variants"]:
        row["fps"] *= factor
        for stage in row["stages"].values():
            for key in stage:
                stage[key] /= factor
    return out


def _write(path, report):
    path.write_text(dumps(report))
    return str(path)


def test_compare_prints_ratios(tiny_report, tmp_path, monkeypatch, capsys):
    a = _write(tmp_path / "a.json", tiny_report)
    b = _write(tmp_path / "b.json", _faster(tiny_report, 2.0))
    assert run_main(main, ["--compare", a, b], monkeypatch) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "int8/blazeface/320x240/2face/1t" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "**2.00x**"  # FPS B/A
    assert cells[4] == "0.50x"  # total p50 B/A
    assert f"A: {a}" in out and f"B: {b}" in out


def test_compare_pairs_by_position_when_keys_differ(tiny_report):
    b = copy.deepcopy(tiny_report)
    for row in b["variants"]:
        row["key"] = "renamed/" + row["key"]
    text = compare_reports(tiny_report, b)
    assert "paired by position" in text and text.count("1.00x") >= 4


def test_compare_refuses_unrelated_reports(tiny_report):
    b = copy.deepcopy(tiny_report)
    b["variants"] = b["variants"][:1]
    b["variants"][0]["key"] = "something/else"
    with pytest.raises(FerEdgeError, match="no variant in common"):
        compare_reports(tiny_report, b)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("not json", "not a JSON report"),
    (json.dumps({"schema": "fer-bench/1"}), "'created' missing"),
])
def test_compare_rejects_bad_files_with_one_line(tiny_report, tmp_path, monkeypatch, capsys, content, message):
    good = _write(tmp_path / "good.json", tiny_report)
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert run_main(main, ["--compare", good, str(bad)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
