"""The uncertain label (--min-emotion-confidence): tracker, logs, summaries, the CLI; the aligned crop on a real face."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fer_edge.bundle import SHIPPED_BUNDLES, load_bundle
from fer_edge.device.boxes import Box, Detection
from fer_edge.device.cli import cli
from fer_edge.device.pipeline import STAGES, FrameResult, Pipeline
from fer_edge.device.sinks import CsvLog, JsonlLog
from fer_edge.device.track import Tracker
from fer_edge.labels import UNCERTAIN

CLASSES = ("happy", "sad")


def _faces(tracker: Tracker, probs: list[list[float]]):
    dets = [Detection(Box(10 + 200 * i, 10, 110 + 200 * i, 110), 0.9) for i in range(len(probs))]
    return tracker(dets, np.asarray(probs, np.float32))


def test_tracker_labels_low_confidence_faces_uncertain_and_keeps_their_probabilities() -> None:
    tracker = Tracker(CLASSES, alpha=1.0, min_confidence=0.7)
    sure, unsure = _faces(tracker, [[0.9, 0.1], [0.4, 0.6]])
    assert sure.label == "happy" and sure.confidence == pytest.approx(0.9)
    assert unsure.label == UNCERTAIN and unsure.confidence == pytest.approx(0.6)
    assert unsure.probs == pytest.approx((0.4, 0.6))
    assert _faces(Tracker(CLASSES, alpha=1.0), [[0.4, 0.6]])[0].label == "sad"  # off by default
    with pytest.raises(ValueError, match="min_confidence"):
        Tracker(CLASSES, min_confidence=1.5)


def _result(index: int, ts: float, faces) -> FrameResult:
    return FrameResult(index, ts, "camera 0", (640, 480), tuple(faces), (), None, dict.fromkeys(STAGES, 1.0))


def test_uncertain_faces_in_jsonl_and_csv_logs_and_minute_counts(tmp_path) -> None:
    tracker = Tracker(CLASSES, alpha=1.0, min_confidence=0.7)
    jsonl, csv_path = tmp_path / "log.jsonl", tmp_path / "log.csv"
    logs = [JsonlLog(jsonl, CLASSES), CsvLog(csv_path, CLASSES)]
    for i, ts in enumerate((60.0, 61.0, 125.0)):
        faces = _faces(tracker, [[0.9, 0.1], [0.45, 0.55]])
        for log in logs:
            log(_result(i, ts, faces))
    for log in logs:
        log.close(None)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    face = [r for r in records if r["type"] == "face"][1]
    assert face["label"] == UNCERTAIN and face["probs"] == {"happy": 0.45, "sad": 0.55}
    minute = next(r for r in records if r["type"] == "minute")
    assert minute["counts"] == {"happy": 2, UNCERTAIN: 2}
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["label"] for r in rows if r["type"] == "face"][:2] == ["happy", UNCERTAIN]
    minutes = [(r["label"], r["count"]) for r in rows if r["type"] == "minute"]
    assert minutes == [("happy", "2"), (UNCERTAIN, "2"), ("happy", "1"), (UNCERTAIN, "1")]
    assert rows[1]["p_sad"] == "0.5500"


def test_pipeline_summary_counts_uncertain_faces(bundle, astronaut_gray) -> None:
    from fer_edge.device.sources import Frame

    # Blurred, so that the calibrated model is not fully sure (the sharp smile reads happy at 1.0).
    gray = cv2.GaussianBlur(astronaut_gray, (0, 0), 3)
    frame = Frame(index=0, timestamp=0.0, gray=gray, image=None, scale=(1.0, 1.0), origin="astronaut")
    sure = Pipeline.from_bundle(bundle, threads=1).process(frame)
    assert sure.faces and all(f.label in bundle.classes and f.confidence < 1.0 for f in sure.faces)
    pipeline = Pipeline.from_bundle(bundle, threads=1, min_emotion_confidence=1.0)
    result = pipeline.process(frame)
    pipeline._stats.add(result)
    assert result.faces and all(f.label == UNCERTAIN for f in result.faces)
    assert pipeline.summary().label_counts == {UNCERTAIN: len(result.faces)}


def test_cli_min_emotion_confidence_reaches_the_json_and_the_log(tmp_path, astronaut_bgr) -> None:
    log, photo = tmp_path / "run.jsonl", tmp_path / "blurred.png"
    cv2.imwrite(str(photo), cv2.GaussianBlur(astronaut_bgr, (0, 0), 3))  # not a fully sure smile
    done = CliRunner().invoke(cli, ["run", "--source", str(photo), "--json", "--threads", "1",
                                    "--min-emotion-confidence", "1.0", "--log", str(log)])
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout.splitlines()[0])
    assert record["faces"] and record["faces"][0]["label"] == UNCERTAIN
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0]["min_emotion_confidence"] == 1.0
    assert records[-1]["type"] == "end" and set(records[-1]["label_counts"]) == {UNCERTAIN}


@pytest.mark.parametrize("name", SHIPPED_BUNDLES)
def test_shipped_bundles_load_by_name_and_say_their_label_set(name) -> None:
    bundle = load_bundle(name)
    assert bundle.root.name == name
    assert bundle.manifest["model"]["label_set"].startswith(name)
    assert 0 < bundle.manifest["model"]["temperature"] < 5


def test_aligned_crop_uses_the_landmarks_through_the_preprocessor(bundle, astronaut_gray) -> None:
    """The same face through FacePreprocessor: aligned on the detector's landmarks vs its box crop."""
    from fer_edge.device.classify import FacePreprocessor
    from fer_edge.preprocess import FaceAligner, crop_face

    det = Pipeline.from_bundle(bundle, threads=1).detector
    face = max(det(astronaut_gray), key=lambda d: d.box.area)
    assert len(face.keypoints) >= 5
    spec = bundle.spec if bundle.spec.crop == "aligned" else None
    if spec is None:
        from fer_edge.convert.template import load_template

        spec = bundle.spec.aligned(load_template())
    info = Pipeline.from_bundle(bundle, threads=1).classifier.input
    pre = FacePreprocessor(spec, info, max_faces=2)
    pre(astronaut_gray, [face, face.box])
    assert np.array_equal(pre.crops[0], FaceAligner(spec)(astronaut_gray, face.keypoints))
    assert np.array_equal(pre.crops[1], crop_face(astronaut_gray, face.box.as_tuple(), spec))  # a bare box: box crop
    assert not np.array_equal(pre.crops[0], pre.crops[1])
