"""The report: schema, Markdown, plots, and what the command writes and prints."""

from __future__ import annotations

import copy
import json

import pytest
from bench_helpers import needs_face_photo
from helpers import run_main

from fer_edge.benchmarks.cli import main
from fer_edge.benchmarks.report import (
    dumps, load_report, models_table, threads_table, to_markdown, validate_report, write_report,
)
from fer_edge.benchmarks.stats import SUMMARY_KEYS
from fer_edge.device.pipeline import STAGES
from fer_edge.errors import FerEdgeError


def test_report_has_the_documented_schema(tiny_report):
    report = validate_report(copy.deepcopy(tiny_report))
    machine = report["machine"]
    for key in ("cpu_model", "cores", "os", "python"):
        assert machine[key]
    assert machine["runtime"]["name"] in ("litert", "tflite-runtime", "tensorflow") and machine["runtime"]["version"]
    assert len(report["bundle"]["sha256"]) == 64
    assert [r["key"] for r in report["variants"]] == [
        "int8/blazeface/320x240/2face/1t", "int8/blazeface/320x240/2face/2t",
        "copy/blazeface/320x240/2face/1t", "copy/blazeface/320x240/2face/2t"]
    for row in report["variants"]:
        assert row["status"] == "ok" and row["frames"] == 4 and row["fps"] > 0
        assert set(row["stages"]) == {*STAGES, "total"}
        assert all(set(s) == set(SUMMARY_KEYS) for s in row["stages"].values())
        assert row["stages"]["detect"]["p50"] > 0 and row["stages"]["classify"]["p50"] > 0
        assert row["stages"]["log"]["max"] > 0 and row["stages"]["draw"]["max"] > 0  # default sinks ran
        assert all(len(v) == 4 for v in row["samples_ms"].values())
        assert row["faces_mean"] == 2  # both composed faces were found and classified
    assert set(report["models"]) == {"int8", "copy"}
    assert report["models"]["int8"]["sha256"] == report["models"]["copy"]["sha256"]
    json.loads(dumps(report))  # the compact writer still writes JSON


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.pop("machine"), "'machine' missing"),
    (lambda r: r["machine"].pop("cores"), "machine.cores missing"),
    (lambda r: r["machine"]["runtime"].pop("version"), "machine.runtime.version missing"),
    (lambda r: r.update(schema="other/9"), "schema"),
    (lambda r: r["variants"][0]["stages"].pop("classify"), "variants[0].stages.classify missing"),
    (lambda r: r["variants"][1]["stages"]["detect"].pop("p99"), "variants[1].stages.detect.p99 missing"),
])
def test_schema_errors_name_the_key(tiny_report, damage, message):
    broken = copy.deepcopy(tiny_report)
    damage(broken)
    with pytest.raises(FerEdgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_report(broken)


def test_error_rows_need_no_timings(tiny_report):
    report = copy.deepcopy(tiny_report)
    report["variants"].append({"key": "x/yunet/320x240/1face/1t", "model": "x", "detector": "yunet", "threads": 1,
                               "status": "error: the yunet detector needs its model file"})
    validate_report(report)
    assert "error: the yunet detector" in to_markdown(report)


def test_markdown_has_summary_threads_and_models_tables(tiny_report):
    text = to_markdown(tiny_report, ["bench_latency.png"])
    assert "## Summary" in text and "## Every stage" in text and "![bench_latency](bench_latency.png)" in text
    threads = "\n".join(threads_table(tiny_report))
    assert "1 thread" in threads and "2 threads" in threads and "FPS 2 vs 1 thread" in threads
    models = "\n".join(models_table(tiny_report))
    assert "| int8 |" in models and "| copy |" in models and "classify/face p50" in models


def test_write_report_writes_json_markdown_and_plots(tiny_report, tmp_path):
    pytest.importorskip("matplotlib")
    written = write_report(copy.deepcopy(tiny_report), tmp_path, "r")
    assert load_report(written["json"])["variants"][0]["key"] == tiny_report["variants"][0]["key"]
    assert [p.name for p in written["plots"]] == ["r_latency.png", "r_fps_threads.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written["plots"])
    assert "r_fps_threads.png" in written["markdown"].read_text()


def test_a_report_that_fails_midway_leaves_no_json(tiny_report, tmp_path, monkeypatch):
    """NAME.json is written last, so its presence means the whole report is there (and nothing is torn)."""
    import fer_edge.benchmarks.report as report_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "to_markdown", full_disk)
    with pytest.raises(OSError):
        write_report(copy.deepcopy(tiny_report), tmp_path, "r", plots=False)
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob(".*"))


@needs_face_photo
def test_command_end_to_end(tmp_path, monkeypatch, capsys, shipped_bundle):
    copy_path = tmp_path / "copy.tflite"
    copy_path.write_bytes(shipped_bundle.model_path.read_bytes())
    out = tmp_path / "out"
    code = run_main(main, ["--frames", "3", "--warmup", "1", "--threads", "1", "--resolution", "320x240",
                           "--model", f"int8={shipped_bundle.root}", "--model", f"f={copy_path}",
                           "--detector", "blazeface,yunet", "--detector-model", f"yunet={tmp_path / 'gone.onnx'}",
                           "--sinks", "none", "--out", str(out), "--no-plots"],
                    monkeypatch)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = load_report(out / "bench.json")
    status = {r["key"]: r["status"] for r in report["variants"]}
    assert status["int8/blazeface/320x240/1face/1t"] == "ok" and status["f/blazeface/320x240/1face/1t"] == "ok"
    assert status["int8/yunet/320x240/1face/1t"].endswith("gone.onnx: YuNet model file not found")
    assert report["config"]["sinks"] == []
    assert all(r["stages"]["log"]["max"] == 0 for r in report["variants"] if r["status"] == "ok")
    assert "| `int8/blazeface/320x240/1face/1t` | ok |" in captured.out
    assert "yunet" in captured.err and "report:" in captured.err
    assert (out / "bench.md").is_file()
