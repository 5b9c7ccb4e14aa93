"""The side-by-side script's pure parts (the comparison itself needs the peer venv and is not run by tests)."""

from __future__ import annotations

import numpy as np

from fer_edge.benchmarks.compare_fer import GOALS, peer_prepare, to_markdown, verdicts


def test_peer_faces_are_prepared_as_fer_does():
    face = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))
    face[0, 0], face[-1, -1] = 0, 255
    out = np.zeros((1, 64, 64, 1), np.float32)
    peer_prepare(face, out)
    assert out.dtype == np.float32 and -1.0 <= out.min() and out.max() <= 1.0
    assert out[0, 0, 0, 0] == -1.0  # pixel 0 -> -1, as (x / 255 - 0.5) * 2
    import cv2

    expected = (cv2.resize(face, (64, 64)).astype(np.float32) / 255.0 - 0.5) * 2.0
    assert np.array_equal(out[0, :, :, 0], expected)


def _model(top1: float, ms: float) -> dict:
    return {"top1": top1, "model_ms": {"p50": ms, "p90": ms, "mean": ms}, "bytes": 2048,
            "preprocess_plus_model_ms": {"p50": ms * 1.1, "p90": ms * 1.2},
            "input": {"shape": [1, 48, 48, 1], "dtype": "int8"}}


def test_verdicts_apply_the_issue_goals():
    model = {"fer-edge": _model(0.72, 0.8), "fer": _model(0.66, 0.5)}
    pipe = {"fer-edge": {"fps": 60.0}, "fer": {"fps": 18.0}}
    v = verdicts(model, pipe)
    assert v["accuracy_gain_pp"] == 6.0 and v["latency_ratio"] == 1.6 and v["accuracy_goal_met"]
    assert v["fps_ratio"] == round(60 / 18, 3) and v["fps_goal_met"]
    slow = verdicts({"fer-edge": _model(0.72, 1.1), "fer": _model(0.66, 0.5)}, None)
    assert not slow["accuracy_goal_met"] and "fps_ratio" not in slow  # 2.2x the latency breaks the goal
    assert GOALS == {"accuracy_gain_pp": 5.0, "latency_ratio_max": 2.0, "fps_ratio_min": 3.0}


def test_markdown_without_the_pipeline_level_says_why():
    model = {"fer-edge": _model(0.70, 0.3), "fer": _model(0.66, 0.5)}
    report = {"machine_line": "cpu", "bundle": {"sha256": "0" * 64, "model_mode": "int8"}, "peer": {"fer": "25.10.3"},
              "data": {"split": "PrivateTest", "samples": 10}, "runtime": "litert 2.3.0",
              "settings": {"model_passes": 1}, "model_level": model, "pipeline_level": None,
              "pipeline_error": "FER() failed: AttributeError: module 'cv2' has no attribute 'CascadeClassifier'",
              "verdicts": verdicts(model, None), "load_average": {"start": None, "end": None}}
    text = to_markdown(report)
    assert "| top-1 accuracy | 70.00% | 66.00% | +4.00 pp |" in text and "**not met**" in text
    assert "Pipeline level not run: FER() failed" in text and "CascadeClassifier" in text
