"""The per-frame loop: capture -> detect -> preprocess -> classify -> track -> draw -> log.

Each stage is an object built once (see `Pipeline.from_bundle`) and called
once per frame; this module only wires them together and times each call, so
the loop in `Pipeline.frames` reads top to bottom like the list above.

Reuse (e.g. by ``fer-bench``)::

    from fer_edge.bundle import load_bundle
    from fer_edge.device.pipeline import Pipeline
    from fer_edge.device.sources import open_source

    pipeline = Pipeline.from_bundle(load_bundle(), threads=1)
    with open_source("demo") as source:
        for result in pipeline.frames(source, max_frames=100):
            result.timings["detect"]   # milliseconds, one key per name in STAGES
    summary = pipeline.summary()       # frames, FPS, median ms per stage, label counts

`Pipeline.process` runs the stages on one `Frame` you already have.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

import numpy as np

from fer_edge.bundle import Bundle
from fer_edge.device.boxes import Detection
from fer_edge.device.classify import EmotionClassifier, FacePreprocessor
from fer_edge.device.detect import Detector, DetectorOptions, make_detector
from fer_edge.device.runtime import Runtime, find_runtime
from fer_edge.device.sources import Frame, Source, StopFlag
from fer_edge.device.track import TrackedFace, Tracker
from fer_edge.labels import UNCERTAIN

#: Stage names, in order; every `FrameResult.timings` has these keys (milliseconds).
#: The last three are the sinks, by their `stage` attribute: the log (and stdout),
#: the video writer, the window.
STAGES: tuple[str, ...] = ("capture", "detect", "preprocess", "classify", "track", "draw", "log", "video",
                           "display")
#: The stages that run before the sinks, so a log line can carry them.
INFERENCE_STAGES: tuple[str, ...] = STAGES[:6]


@dataclass(frozen=True)
class FrameResult:
    """Everything known about one processed frame.

    `faces` are in display-frame pixels (`size` is that frame's width,
    height); `detections` are the detector's own output, in the pixels of
    the frame it ran on (the lores stream for picamera2). `image` is the display frame, annotated if a sink needed
    drawing; like the source's buffers it is reused by the next frame.
    `timings` maps each name in `STAGES` to milliseconds (0 for a stage that
    did not run). The sink stages (``log``, ``video``, ``display``) are
    filled in after the sinks ran, so sinks themselves see only
    `INFERENCE_STAGES`.
    """

    index: int
    timestamp: float
    origin: str
    size: tuple[int, int]
    faces: tuple[TrackedFace, ...]
    detections: tuple[Detection, ...]
    image: Optional[np.ndarray]
    timings: dict[str, float]


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the end-of-run printout, the log's last record and benchmarks."""

    frames: int
    elapsed_s: float
    fps: float
    faces: int
    skipped_frames: int
    reconnects: int
    label_counts: dict[str, int]
    median_ms: dict[str, float]
    end_reason: str
    source_lost: bool = False
    mqtt: Optional[dict[str, Any]] = None  # what the MQTT sink did (device/mqtt.py), when --mqtt was given

    def to_dict(self) -> dict[str, Any]:
        record = {
            "frames": self.frames, "elapsed_s": round(self.elapsed_s, 3), "fps": round(self.fps, 2),
            "faces": self.faces, "skipped_frames": self.skipped_frames, "reconnects": self.reconnects,
            "label_counts": dict(self.label_counts), "median_ms": dict(self.median_ms),
            "end_reason": self.end_reason,
        }
        if self.mqtt is not None:
            record["mqtt"] = dict(self.mqtt)
        return record

    def format(self) -> str:
        """A few human-readable lines."""
        lines = [f"{self.frames} frames in {self.elapsed_s:.1f} s ({self.fps:.1f} FPS), {self.faces} face detections, "
                 f"{self.skipped_frames} frames skipped, {self.reconnects} reconnects; {self.end_reason}"]
        if self.label_counts:
            lines.append("emotions: " + ", ".join(f"{k} {v}" for k, v in
                                                  sorted(self.label_counts.items(), key=lambda kv: -kv[1])))
        ran = {k: v for k, v in self.median_ms.items() if k in INFERENCE_STAGES[:5] or v > 0}
        if ran:
            lines.append("median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in ran.items()))
        if self.mqtt is not None:
            from fer_edge.device.mqtt import format_mqtt_stats

            lines.append("mqtt: " + format_mqtt_stats(self.mqtt))
        return "\n".join(lines)


class Sink(Protocol):
    """Where results go (log, video, window, stdout).

    `needs_image` asks the pipeline to draw; `stage` names the timing the
    sink's time is added to (``log``, ``video`` or ``display``; ``log`` if
    a sink has no such attribute).
    """

    needs_image: bool
    stage: str

    def __call__(self, result: FrameResult) -> None: ...

    def close(self, summary: RunSummary) -> None: ...


class Annotator(Protocol):
    """The draw stage: paints faces onto ``result.image`` in place."""

    def __call__(self, result: FrameResult) -> None: ...


@dataclass
class _Stats:
    """Running totals; keeps the last `window` timings per stage for the medians."""

    window: int = 10_000
    frames: int = 0
    faces: int = 0
    labels: Counter = field(default_factory=Counter)
    timings: dict[str, deque] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    elapsed: float = 0.0

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.faces += len(result.faces)
        self.labels.update(face.label for face in result.faces)
        for name, ms in result.timings.items():
            self.timings.setdefault(name, deque(maxlen=self.window)).append(ms)


class _Pacer:
    """Sleeps between frames to hold `fps` (no-op without one); falls back in step if processing lags."""

    def __init__(self, fps: Optional[float], stop: Optional[StopFlag]) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.stop = stop or StopFlag()
        self.next_due = time.perf_counter()

    def __call__(self) -> None:
        if not self.period:
            return
        self.next_due += self.period
        wait = self.next_due - time.perf_counter()
        if wait > 0:
            self.stop.sleep(wait)
        else:
            self.next_due = time.perf_counter()


class Pipeline:
    """Detector, face preprocessor, classifier, tracker and (optional) annotator, wired per frame."""

    def __init__(
        self,
        detector: Detector,
        preprocessor: FacePreprocessor,
        classifier: EmotionClassifier,
        tracker: Tracker,
        annotator: Optional[Annotator] = None,
    ) -> None:
        self.detector = detector
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.tracker = tracker
        self.annotator = annotator
        self.end_reason = ""
        self._stats = _Stats()
        self._source: Optional[Source] = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        detector: str = "auto",
        detector_model: Optional[Path | str] = None,
        options: Optional[DetectorOptions] = None,
        threads: int = 1,
        runtime: Optional[Runtime] = None,
        smoothing: float = 0.5,
        annotator: Optional[Annotator] = None,
        min_emotion_confidence: float = 0.0,
    ) -> "Pipeline":
        """Build every stage from a verified bundle; the one place models are loaded.

        `smoothing` is the tracker's EMA weight of the newest frame (1.0 = off);
        a face whose top probability is below `min_emotion_confidence` is
        labelled ``uncertain``.
        """
        runtime = runtime or find_runtime()
        det = make_detector(detector, bundle, detector_model, options, threads=threads, runtime=runtime)
        options = det.options  # the detector's own defaults when none were given
        classifier = EmotionClassifier(bundle.model_path, bundle.classes, threads=threads, runtime=runtime,
                                       max_faces=options.max_faces)
        preprocessor = FacePreprocessor(bundle.spec, classifier.input, max_faces=options.max_faces)
        if annotator is None:
            from fer_edge.device.sinks import FaceAnnotator

            annotator = FaceAnnotator()
        tracker = Tracker(bundle.classes, alpha=smoothing, min_confidence=min_emotion_confidence)
        return cls(det, preprocessor, classifier, tracker, annotator)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

    def process(self, frame: Frame, capture_ms: float = 0.0, draw: bool = False) -> FrameResult:
        """Run detect -> preprocess -> classify -> track (-> draw) on one frame."""
        timings = dict.fromkeys(STAGES, 0.0)
        timings["capture"] = capture_ms
        t0 = time.perf_counter()
        detections = self.detector(frame.gray)
        t1 = time.perf_counter()
        inputs = self.preprocessor(frame.gray, detections)
        t2 = time.perf_counter()
        probs = self.classifier(inputs)
        t3 = time.perf_counter()
        faces = self.tracker(detections, probs)
        sx, sy = frame.scale
        faces = tuple(face.scale(sx, sy) for face in faces)
        t4 = time.perf_counter()
        timings.update(detect=(t1 - t0) * 1e3, preprocess=(t2 - t1) * 1e3, classify=(t3 - t2) * 1e3,
                       track=(t4 - t3) * 1e3)
        result = FrameResult(frame.index, frame.timestamp, frame.origin, frame.size, faces, detections,
                             frame.image, timings)
        if draw and self.annotator is not None and frame.image is not None:
            self.annotator(result)
            timings["draw"] = (time.perf_counter() - t4) * 1e3
        return result

    def frames(
        self,
        source: Source,
        sinks: Sequence[Sink] = (),
        max_frames: Optional[int] = None,
        duration: Optional[float] = None,
        stop: Optional[StopFlag] = None,
        fps_limit: Optional[float] = None,
    ) -> Iterator[FrameResult]:
        """Process frames from `source` until it ends, `max_frames`, `duration` seconds or `stop`.

        Each result goes to every sink, then is yielded. The loop checks
        `stop` only between frames, so a stop request always finishes the
        frame in hand (its log line included). `fps_limit` paces a file or
        the demo to real time. Sinks are not closed here: call
        ``sink.close(pipeline.summary())`` when done.
        """
        self._stats = _Stats()
        self._source = source
        self.end_reason = "end of source"
        draw = any(sink.needs_image for sink in sinks)
        pace = _Pacer(fps_limit, stop)
        try:
            while True:
                if stop is not None and stop.is_set():
                    self.end_reason = stop.reason or "stopped"
                    break
                if max_frames is not None and self._stats.frames >= max_frames:
                    self.end_reason = f"reached --max-frames {max_frames}"
                    break
                if duration is not None and time.perf_counter() - self._stats.started >= duration:
                    self.end_reason = f"reached --duration {duration:g} s"
                    break
                t0 = time.perf_counter()
                frame = source.read()
                capture_ms = (time.perf_counter() - t0) * 1e3
                if frame is None:
                    if source.end_reason:
                        self.end_reason = source.end_reason
                    elif stop is not None and stop.is_set():
                        self.end_reason = stop.reason or "stopped"
                    break
                if source.still:
                    self.tracker.reset()  # unrelated photos: nothing to track or smooth across
                result = self.process(frame, capture_ms, draw)
                for sink in sinks:
                    t_sink = time.perf_counter()
                    sink(result)
                    result.timings[getattr(sink, "stage", "log")] += (time.perf_counter() - t_sink) * 1e3
                self._stats.add(result)
                yield result
                pace()
        finally:
            self._stats.elapsed = time.perf_counter() - self._stats.started

    def run(self, source: Source, sinks: Sequence[Sink] = (), **kwargs: Any) -> RunSummary:
        """`frames` to the end; returns the summary (sinks still open)."""
        for _ in self.frames(source, sinks, **kwargs):
            pass
        return self.summary()

    def summary(self) -> RunSummary:
        """Totals of the last (or current) run."""
        stats = self._stats
        elapsed = stats.elapsed or (time.perf_counter() - stats.started)
        source_stats = self._source.stats if self._source is not None else None
        medians = {name: round(float(np.median(values)), 3) for name, values in stats.timings.items() if values}
        return RunSummary(
            frames=stats.frames,
            elapsed_s=elapsed,
            fps=stats.frames / elapsed if elapsed > 0 else 0.0,
            faces=stats.faces,
            skipped_frames=source_stats.skipped if source_stats else 0,
            reconnects=source_stats.reconnects if source_stats else 0,
            label_counts={name: stats.labels[name] for name in (*self.classes, UNCERTAIN) if stats.labels[name]},
            median_ms=medians,
            end_reason=self.end_reason,
            source_lost=bool(self._source is not None and self._source.end_reason),
        )


def close_sinks(sinks: Sequence[Sink], summary: RunSummary) -> Optional[BaseException]:
    """Close every sink even if one fails; returns the first failure (for the caller to report)."""
    first: Optional[BaseException] = None
    for sink in sinks:
        try:
            sink.close(summary)
        except Exception as exc:  # keep closing the others: each holds a file
            first = first or exc
    return first
