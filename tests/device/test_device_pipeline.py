"""The pipeline on a short clip, and the outputs: JSONL/CSV log format, minute summaries, video, errors."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os

import cv2
import numpy as np
import pytest
from device_fakes import FakeCapture, FakeCaptureFactory, FakePicamera2

from fer_edge.device.boxes import Box
from fer_edge.device.demo import DemoSource
from fer_edge.device.pipeline import INFERENCE_STAGES, STAGES, FrameResult, Pipeline, RunSummary, close_sinks
from fer_edge.device.sinks import CsvLog, JsonlLog, StillPrinter, VideoSink, open_log
from fer_edge.device.sources import ImageSource, OpenCVSource, PiCameraSource, StopFlag
from fer_edge.device.track import TrackedFace
from fer_edge.errors import FerEdgeError


class Collect:
    """A sink that keeps copies of what it saw."""

    needs_image = False

    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.closed_with = None

    def __call__(self, result: FrameResult) -> None:
        self.results.append(result)

    def close(self, summary) -> None:
        self.closed_with = summary


@pytest.mark.arm64
def test_pipeline_on_a_short_clip_writes_the_log(bundle, tmp_path, astronaut_bgr) -> None:
    pipeline = Pipeline.from_bundle(bundle, threads=1)
    log_path = tmp_path / "run.jsonl"
    log = open_log(log_path, bundle.classes, meta={"source": "demo"})
    collect = Collect()
    # A three-frame clip: zoomed out, zoomed in, mirrored; short enough for emulated runs.
    with DemoSource((320, 240), frames=3, photo=astronaut_bgr) as source:
        results = list(pipeline.frames(source, [log, collect]))
    summary = pipeline.summary()
    close_sinks([log, collect], summary)
    assert all(len(r.faces) >= 1 for r in results)
    for r in results:
        assert set(r.timings) == set(STAGES)
        assert all(ms >= 0 for ms in r.timings.values())
        face = r.faces[0]
        assert face.label in bundle.classes and sum(face.probs) == pytest.approx(1.0, abs=1e-4)
    assert collect.closed_with is summary and summary.frames == 3 and len(collect.results) == 3

    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "end" and lines[-1]["frames"] == 3
    assert sum(rec["faces"] for rec in lines if rec["type"] == "minute") == summary.faces
    faces = [rec for rec in lines if rec["type"] == "face"]
    assert len(faces) == sum(len(r.faces) for r in results)
    rec = faces[0]
    assert set(rec) >= {"time", "ts", "frame", "face", "box", "label", "confidence", "probs", "raw", "ms"}
    assert list(rec["probs"]) == list(bundle.classes)
    assert list(rec["ms"]) == list(INFERENCE_STAGES) == ["capture", "detect", "preprocess", "classify", "track", "draw"]
    assert len(rec["box"]) == 4 and rec["label"] == max(rec["probs"], key=rec["probs"].get)


def test_run_summary_and_tracking_over_a_clip(bundle) -> None:
    pipeline = Pipeline.from_bundle(bundle)
    with DemoSource((320, 240), frames=8) as source:
        summary = pipeline.run(source, [Collect()])
    assert summary.frames == 8 and summary.faces >= 8
    assert summary.end_reason == "end of source"
    assert set(summary.median_ms) == set(STAGES)
    assert sum(summary.label_counts.values()) == summary.faces
    assert "8 frames" in summary.format()


def test_pipeline_stops_on_max_frames_duration_and_stop_flag(bundle) -> None:
    pipeline = Pipeline.from_bundle(bundle)
    with DemoSource((160, 120), frames=50, loop=True) as source:
        assert pipeline.run(source, max_frames=3).frames == 3
        stop = StopFlag()

        class StopAfterTwo(Collect):
            def __call__(self, result: FrameResult) -> None:
                super().__call__(result)
                if len(self.results) == 2:
                    stop.set("stopped by SIGTERM")

        summary = pipeline.run(source, [StopAfterTwo()], stop=stop)
        assert summary.frames == 2 and summary.end_reason == "stopped by SIGTERM"  # the frame in hand finished
        assert pipeline.run(source, duration=1e-9).frames <= 1


def test_draw_runs_only_for_sinks_that_need_pictures(bundle, tmp_path) -> None:
    pipeline = Pipeline.from_bundle(bundle)
    with DemoSource((320, 240), frames=2) as source:
        (plain,) = list(pipeline.frames(source, [Collect()], max_frames=1))
        video = VideoSink(tmp_path / "out.mp4", fps=5)
        (drawn,) = list(pipeline.frames(source, [video], max_frames=1))
        video.close()
    assert plain.timings["draw"] == 0.0 and drawn.timings["draw"] > 0.0
    assert plain.timings["video"] == 0.0 and drawn.timings["video"] > 0.0 and drawn.timings["log"] == 0.0
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape == (240, 320, 3)
    assert not list(tmp_path.glob(".*"))  # the .part file became out.mp4


def test_a_video_that_cannot_be_read_back_is_not_kept(tmp_path, monkeypatch) -> None:
    """OpenCV's writer reports no failed writes (a full disk): close reads the file back before naming it."""
    import fer_edge.device.sinks as sinks

    video = VideoSink(tmp_path / "out.mp4", fps=5)
    video(dataclasses.replace(_result(0, 1000.0), image=np.zeros((48, 64, 3), np.uint8)))
    monkeypatch.setattr(sinks.cv2, "VideoCapture", lambda path: FakeCapture([]))
    with pytest.raises(FerEdgeError, match="could not be written"):
        video.close()
    assert not list(tmp_path.iterdir())


def test_lost_camera_ends_the_run_with_a_reason(bundle) -> None:
    frames = [DemoSource((320, 240), frames=1).render(0).copy() for _ in range(2)]
    source = OpenCVSource(0, "camera", capture_factory=FakeCaptureFactory([FakeCapture(frames + ["fail"])]),
                          reconnect_timeout=0.05, backoff=(0.01, 0.01))
    pipeline = Pipeline.from_bundle(bundle)
    summary = pipeline.run(source)
    assert summary.frames == 2 and summary.source_lost and "lost" in summary.end_reason


def test_picamera2_boxes_come_back_in_main_stream_pixels(bundle, astronaut_bgr) -> None:
    FakePicamera2.image = cv2.resize(astronaut_bgr, (640, 640))[80:560]  # 640x480 with the face in view
    source = PiCameraSource(resolution=(640, 480), lores=(320, 240), picamera2_class=FakePicamera2)
    (result,) = list(Pipeline.from_bundle(bundle).frames(source, max_frames=1))
    (detection,) = result.detections
    (face,) = result.faces
    assert result.size == (640, 480)
    assert face.box == detection.box.scale(2.0, 2.0)  # lores (320x240) -> main (640x480)


def test_still_images_are_classified_independently(bundle, tmp_path, astronaut_bgr) -> None:
    paths = []
    for name in ("a.png", "b.png"):
        paths.append(tmp_path / name)
        cv2.imwrite(str(paths[-1]), astronaut_bgr)
    out = io.StringIO()
    pipeline = Pipeline.from_bundle(bundle)
    results = list(pipeline.frames(ImageSource(paths), [StillPrinter(bundle.classes, as_json=True, stream=out)]))
    # Same photo twice: same answer (no smoothing or track ids carried across photos' results).
    assert results[0].faces[0].probs == results[1].faces[0].probs
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in paths]
    assert records[0]["faces"][0]["label"] in bundle.classes and len(records[0]["faces"][0]["box"]) == 4


# --------------------------------------------------------------------------- log format, without models

CLASSES = ("happy", "sad")


def _result(index: int, ts: float, labels: tuple[str, ...] = ("happy",)) -> FrameResult:
    faces = tuple(
        TrackedFace(i + 1, Box(10, 20, 110, 120), 0.9, label, 0.8,
                    (0.8, 0.2) if label == "happy" else (0.2, 0.8), (0.7, 0.3))
        for i, label in enumerate(labels))
    return FrameResult(index, ts, "camera 0", (640, 480), faces, (), None, dict.fromkeys(STAGES, 1.5))


@pytest.mark.arm64
def test_jsonl_log_lines_and_minute_summaries(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path, CLASSES, meta={"runtime": "litert"})
    log(_result(0, 60 * 1000 + 58.0))
    log(_result(1, 60 * 1000 + 59.5, ("happy", "sad")))
    log(_result(2, 60 * 1001 + 0.5, ("sad",)))  # a new minute: the last one is summarised
    log(_result(3, 60 * 1001 + 1.0, ()))
    log.close(None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "face", "face", "face", "minute", "face", "minute"]
    assert records[0]["runtime"] == "litert" and records[0]["classes"] == list(CLASSES)
    face = records[1]
    assert face == {
        "type": "face", "time": "1970-01-01T16:40:58.000+00:00", "ts": 60058.0, "frame": 0, "face": 1,
        "box": [10, 20, 110, 120], "score": 0.9, "label": "happy", "confidence": 0.8,
        "probs": {"happy": 0.8, "sad": 0.2}, "raw": {"happy": 0.7, "sad": 0.3},
        "ms": {s: 1.5 for s in INFERENCE_STAGES},
    }
    assert records[4] == {"type": "minute", "minute": "1970-01-01T16:40+00:00", "frames": 2, "faces": 3,
                          "counts": {"happy": 2, "sad": 1}}
    assert records[6]["frames"] == 2 and records[6]["counts"] == {"sad": 1}


def test_csv_log_has_one_header_across_appends(tmp_path) -> None:
    path = tmp_path / "log.csv"
    for run in range(2):
        log = open_log(path, CLASSES)
        assert isinstance(log, CsvLog)
        log(_result(run, 1000.0))
        log.close(None)
    rows = list(csv.DictReader(path.open()))
    faces = [r for r in rows if r["type"] == "face"]
    minutes = [r for r in rows if r["type"] == "minute"]
    assert len(faces) == 2 and rows[0]["p_happy"] == "0.8000" and rows[0]["ms_detect"] == "1.500"
    assert [(m["label"], m["count"]) for m in minutes] == [("happy", "1"), ("happy", "1")]
    assert path.read_text().count("type,time") == 1


def test_csv_log_ends_each_run_with_an_end_row(tmp_path) -> None:
    """Like the JSON log's end record: frames, faces, end reason, median stage times and the whole summary."""
    path = tmp_path / "log.csv"
    summary = RunSummary(frames=2, elapsed_s=0.5, fps=4.0, faces=3, skipped_frames=0, reconnects=0,
                         label_counts={"happy": 2, "sad": 1}, median_ms=dict.fromkeys(STAGES, 1.25),
                         end_reason="end of source")
    log = open_log(path, CLASSES)
    log(_result(0, 1000.0))
    log(_result(1, 1000.5, ("happy", "sad")))
    log.close(summary)
    rows = list(csv.DictReader(path.open()))
    assert [r["type"] for r in rows] == ["face", "face", "face", "minute", "minute", "end"]
    end = rows[-1]
    assert (end["frame"], end["count"], end["label"], end["ms_detect"]) == ("2", "3", "end of source", "1.250")
    assert json.loads(end["summary"]) == summary.to_dict()


def test_log_errors_are_clear(tmp_path) -> None:
    with pytest.raises(FerEdgeError, match="does not exist"):
        open_log(tmp_path / "no" / "such" / "log.jsonl", CLASSES)
    with pytest.raises(FerEdgeError, match="it is a folder"):
        open_log(tmp_path, CLASSES)
    with pytest.raises(FerEdgeError, match="unknown log format"):
        open_log(tmp_path / "x.log", CLASSES, fmt="xml")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_a_clear_error() -> None:
    with pytest.raises(FerEdgeError, match="disk full"):
        JsonlLog("/dev/full", CLASSES)
    with pytest.raises(FerEdgeError, match="disk full"):
        CsvLog("/dev/full", CLASSES)


def test_video_sink_errors(tmp_path) -> None:
    with pytest.raises(FerEdgeError, match="unsupported video type"):
        VideoSink(tmp_path / "out.gif")
    with pytest.raises(FerEdgeError, match="does not exist"):
        VideoSink(tmp_path / "missing" / "out.mp4")


def test_still_printer_text() -> None:
    out = io.StringIO()
    StillPrinter(CLASSES, stream=out)(_result(0, 0.0, ("happy", "sad")))
    assert out.getvalue().splitlines() == [
        "camera 0: 2 faces", "  #1 box [10, 20, 110, 120] happy 0.80", "  #2 box [10, 20, 110, 120] sad 0.80"]


def test_frame_results_are_immutable() -> None:
    result = _result(0, 0.0)
    with pytest.raises(AttributeError):
        result.faces = ()  # type: ignore[misc]
    assert isinstance(result.faces[0].probs, tuple)
    assert np.isclose(sum(result.faces[0].probs), 1.0)
