"""The oneDNN default of the workstation side, and the benchmark that justifies it (timings never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from fer_edge.benchmarks.train_speed import ENV, SETTINGS, cli


def _env_after_import(preset: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if preset is not None:
        env[ENV] = preset
    code = f"import os, fer_edge.train; print(os.environ.get({ENV!r}))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_train_side_turns_onednn_on_unless_the_user_chose():
    assert _env_after_import(None) == "1"
    assert _env_after_import("0") == "0"


def test_train_speed_runs_both_settings_in_children_and_writes_its_report(tmp_path):
    result = CliRunner().invoke(cli, ["--widths", "4,4,4,4,4", "--no-mirror", "--batch-size", "8", "--faces", "16",
                                      "--epochs", "1", "--repeats", "1", "--out", str(tmp_path), "--name", "ts"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ts.json").read_text())
    assert report["schema"] == "fer-train-speed/1"
    for setting in SETTINGS:
        (run,) = report["runs"][setting]
        assert run["onednn_env"] == ("1" if setting == "on" else "0")
        assert run["epoch_s"] > 0 and run["train_step_s"] > 0 and run["predict_batch_s"] > 0
    assert report["result"]["train_speedup"] > 0 and report["macs"] > 0
    assert "oneDNN on trains" in (tmp_path / "ts.md").read_text()


def test_train_speed_refuses_bad_widths(tmp_path):
    result = CliRunner().invoke(cli, ["--widths", "4,x", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "comma-separated list of integers" in result.output
