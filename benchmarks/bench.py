"""Run the device pipeline once per variant and collect one report row per variant.

A variant is one point of the sweep: emotion model x detector x input
resolution x faces per frame x interpreter threads. For each, a fresh
`Pipeline` is built (`Pipeline.from_bundle`; a model given as a file replaces
only the classify stage), a fresh source is opened, ``warmup`` frames are run
and thrown away, then ``frames`` frames are timed. Per-stage times are the
pipeline's own `FrameResult.timings` (perf_counter around each stage call);
frames per second come from the wall time between the end of the last warm-up
frame and the end of the last timed frame, so everything the loop does counts.

A variant that cannot be built (a detector without its model file, a model
whose input the bundle's preprocessing does not make) becomes a row with an
``error: ...`` status; an input that cannot be read stops the whole run with a
`FerEdgeError` before any model is loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from fer_edge import __version__
from fer_edge.bundle import Bundle, load_bundle, resolve_bundle
from fer_edge.device.classify import EmotionClassifier, FacePreprocessor
from fer_edge.device.detect import DETECTORS, DetectorOptions, default_options, resolve_detector
from fer_edge.device.info import cpu_facts
from fer_edge.device.pipeline import STAGES, Pipeline
from fer_edge.device.runtime import Runtime, TFLiteModel
from fer_edge.device.sources import Source, describe_source, open_source
from fer_edge.errors import FerEdgeError
from fer_edge.benchmarks.stats import fps_from_timestamps, summarize
from fer_edge.benchmarks.workload import SyntheticSource

SCHEMA = "fer-bench/1"
DEFAULT_THREADS: tuple[int, ...] = (1, 2, 4)
DEFAULT_RESOLUTION = (640, 480)
SINKS = ("draw", "log")


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask on Linux, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_thread_counts(cores: Optional[int] = None) -> list[int]:
    """1, 2, 4, each capped at the cores present (so 1, 2 on a 2-core machine; 1, 2, 3 on 3 cores)."""
    cores = cores or usable_cores()
    return sorted({max(1, min(t, cores)) for t in DEFAULT_THREADS})


@dataclass(frozen=True)
class ModelChoice:
    """An emotion model to benchmark: a name for the report, its file, and the bundle it came from (if any)."""

    name: str
    path: Path
    bundle: Optional[Bundle] = field(default=None, compare=False)

    @classmethod
    def parse(cls, text: str) -> "ModelChoice":
        """``NAME=PATH`` or ``PATH``; PATH is a .tflite file, a bundle folder or a bundle .tar.gz."""
        name, sep, value = text.partition("=")
        if not sep:
            name, value = "", text
        path = resolve_bundle(Path(value).expanduser())  # a shipped bundle's name (fer2013, ferplus) too
        if not path.exists():
            raise FerEdgeError(f"--model {text}: {path} not found")
        if path.is_dir() or path.name.endswith((".tar.gz", ".tgz")):
            bundle = load_bundle(path)
            return cls(name or bundle.manifest["model"].get("mode") or path.name, bundle.model_path, bundle)
        if path.suffix.lower() != ".tflite":
            raise FerEdgeError(f"--model {text}: {path} is neither a .tflite file nor a bundle")
        return cls(name or path.stem, path)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "ModelChoice":
        return cls(str(bundle.manifest["model"].get("mode") or "bundle"), bundle.model_path, bundle)


@dataclass(frozen=True)
class Variant:
    """One point of the sweep. `resolution` and `faces` are None where the source fixes them (files, cameras)."""

    model: ModelChoice
    detector: str
    resolution: Optional[tuple[int, int]]
    faces: Optional[int]
    threads: int

    @property
    def key(self) -> str:
        """A stable id for matching rows across reports (``--compare``)."""
        res = f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else "native"
        faces = f"{self.faces}face" if self.faces else "source"
        return f"{self.model.name}/{self.detector}/{res}/{faces}/{self.threads}t"


@dataclass
class BenchConfig:
    """Everything but the sweep axes: the input, frame counts, sinks and the detector's settings."""

    source: str = "synthetic"
    frames: int = 200
    warmup: int = 20
    sinks: tuple[str, ...] = SINKS
    detector_models: dict[str, Path] = field(default_factory=dict)
    options: Optional[DetectorOptions] = None  # None: each detector's own defaults (`option_overrides` applied)
    option_overrides: dict[str, Any] = field(default_factory=dict)
    face_tile: Optional[np.ndarray] = None
    accuracy_data: Optional[Path] = None
    accuracy_split: str = "PrivateTest"
    accuracy_limit: Optional[int] = None

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise FerEdgeError(f"--frames must be at least 2, got {self.frames}")
        if self.warmup < 0:
            raise FerEdgeError(f"--warmup must be 0 or more, got {self.warmup}")
        unknown = set(self.sinks) - set(SINKS)
        if unknown:
            raise FerEdgeError(f"unknown sink(s) {', '.join(sorted(unknown))}: choose from {', '.join(SINKS)} or none")

    def options_for(self, kind: str) -> DetectorOptions:
        """The filters a detector runs with: `options` if set, else its defaults with the overrides."""
        return self.options or default_options(resolve_detector(kind), **self.option_overrides)

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def make_variants(models: Sequence[ModelChoice], detectors: Sequence[str],
                  resolutions: Sequence[Optional[tuple[int, int]]], faces: Sequence[Optional[int]],
                  threads: Sequence[int]) -> list[Variant]:
    """The full sweep, models outermost and threads innermost (so a threads sweep reads as consecutive rows)."""
    for d in detectors:
        if d not in DETECTORS:
            raise FerEdgeError(f"unknown detector '{d}': choose from {', '.join(DETECTORS)}")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise FerEdgeError(f"two --model values share a name ({', '.join(names)}): name them NAME=PATH")
    axes = itertools.product(models, detectors, resolutions, faces, threads)
    return [Variant(m, d, r, f, t) for m, d, r, f, t in axes]


# --------------------------------------------------------------------------- sources and sinks


def open_bench_source(config: BenchConfig, variant: Variant) -> Source:
    """A fresh source for one variant; files loop so warm-up plus frames always fit."""
    if config.synthetic:
        return SyntheticSource(variant.resolution or DEFAULT_RESOLUTION, variant.faces or 1, tile=config.face_tile)
    return open_source(config.source, variant.resolution, loop=True, need_image=True, reconnect_timeout=5.0)


def check_source(config: BenchConfig) -> str:
    """Open the input and read one frame, so an unusable input fails before any model loads. Returns its name."""
    if config.synthetic:
        SyntheticSource(DEFAULT_RESOLUTION, 1, count=1, tile=config.face_tile)  # needs the face photo
        return "synthetic"
    kind = describe_source(config.source)
    if kind in ("image", "folder"):
        raise FerEdgeError(f"{config.source}: still images make no frame rate; give a video file, a camera, "
                           "'demo' or 'synthetic'")
    with open_source(config.source, loop=False, need_image=True, reconnect_timeout=2.0) as source:
        frame = source.read()
        if frame is None:
            raise FerEdgeError(f"{config.source}: no frames could be read" +
                               (f" ({source.end_reason})" if source.end_reason else ""))
        return source.name


class DrawSink:
    """Asks the pipeline to run its draw stage (as a window or video would) and does nothing else."""

    needs_image = True
    stage = "draw"

    def __call__(self, result: Any) -> None:
        pass

    def close(self, summary: Any) -> None:
        pass


def make_sinks(config: BenchConfig, classes: Sequence[str], folder: Path) -> list[Any]:
    """The sinks a variant runs with: the draw stage and/or a real JSON Lines log in a scratch folder."""
    from fer_edge.device.sinks import open_log

    sinks: list[Any] = []
    if "draw" in config.sinks:
        sinks.append(DrawSink())
    if "log" in config.sinks:
        sinks.append(open_log(folder / "bench.jsonl", classes, "jsonl", {"fer_bench": __version__}))
    return sinks


# --------------------------------------------------------------------------- pipeline per variant


def build_pipeline(bundle: Bundle, variant: Variant, config: BenchConfig, runtime: Runtime) -> Pipeline:
    """`Pipeline.from_bundle` for the variant; a model given as a bare file replaces the classify stage only."""
    model = variant.model
    source_bundle = model.bundle or bundle
    options = config.options_for(variant.detector)
    pipeline = Pipeline.from_bundle(source_bundle, variant.detector, config.detector_models.get(variant.detector),
                                    options, threads=variant.threads, runtime=runtime)
    if model.bundle is None:
        classifier = EmotionClassifier(model.path, source_bundle.classes, threads=variant.threads, runtime=runtime,
                                       max_faces=options.max_faces)
        pipeline.preprocessor = FacePreprocessor(source_bundle.spec, classifier.input,
                                                 max_faces=options.max_faces)
        pipeline.classifier = classifier
    return pipeline


def model_facts(model: ModelChoice, runtime: Runtime) -> dict[str, Any]:
    """Size, checksum and tensor types of a model file."""
    data = model.path.read_bytes()
    info: dict[str, Any] = {"name": model.name, "path": display_path(model.path), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "from_bundle": display_path(model.bundle.root) if model.bundle else None}
    try:
        m = TFLiteModel(model.path, threads=1, runtime=runtime)
        info.update(input_dtype=str(m.input.dtype), input_shape=list(m.input.shape),
                    output_dtype=str(m.outputs[0].dtype))
    except FerEdgeError as exc:
        info["error"] = str(exc)
    return info


def measure(pipeline: Pipeline, source: Source, sinks: Sequence[Any], frames: int, warmup: int,
            tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Run `warmup` + `frames` frames; per-stage samples (ms), per-face classify times and the frame rate."""
    samples: dict[str, list[float]] = {name: [] for name in STAGES}
    totals: list[float] = []
    per_face: list[float] = []
    faces: list[int] = []
    stamps: list[float] = [time.perf_counter()] if warmup == 0 else []
    size: Optional[tuple[int, int]] = None
    for i, result in enumerate(pipeline.frames(source, sinks, max_frames=warmup + frames)):
        tick()
        if i < warmup:
            if i == warmup - 1:
                stamps.append(time.perf_counter())
            continue
        stamps.append(time.perf_counter())
        size = size or result.size
        for name in STAGES:
            samples[name].append(result.timings[name])
        totals.append(sum(result.timings.values()))
        n = len(result.detections[: pipeline.preprocessor.max_faces])
        faces.append(n)
        if n:
            per_face.append(result.timings["classify"] / n)
    measured = len(totals)
    if measured == 0:
        raise FerEdgeError(f"{source.name}: ended during warm-up ({pipeline.end_reason}); lower --warmup")
    return {
        "frames": measured,
        "frame_size": list(size) if size else None,
        "elapsed_s": round(stamps[-1] - stamps[0], 4),
        "fps": round(fps_from_timestamps(stamps), 3),
        "faces_mean": round(float(np.mean(faces)), 3),
        "frames_with_faces": int(np.count_nonzero(faces)),
        "stages": {**{name: summarize(v) for name, v in samples.items()}, "total": summarize(totals)},
        "classify_per_face": summarize(per_face),
        "samples_ms": {**{name: [round(x, 4) for x in v] for name, v in samples.items()},
                       "total": [round(x, 4) for x in totals]},
        "end_reason": pipeline.end_reason,
    }


# --------------------------------------------------------------------------- accuracy (optional)


def model_accuracy(model: ModelChoice, spec: Any, images: np.ndarray, labels: np.ndarray, runtime: Runtime) -> float:
    """Top-1 of one model on uint8 faces, through the device runtime with 1 thread (fer-convert's check)."""
    from fer_edge.convert.check import tflite_probabilities

    probs = tflite_probabilities(model.path, images, spec, threads=1, runtime=runtime, progress=False)
    return float((probs.argmax(1) == labels).mean())


def load_accuracy_faces(config: BenchConfig) -> tuple[np.ndarray, np.ndarray, str]:
    from fer_edge.train.data import load_dataset

    data = load_dataset(config.accuracy_data).split(config.accuracy_split)
    images, labels = data.images, data.labels
    if config.accuracy_limit:
        images, labels = images[: config.accuracy_limit], labels[: config.accuracy_limit]
    return images, labels, f"{Path(data.source).name} {config.accuracy_split}"


# --------------------------------------------------------------------------- the whole run


def machine_facts(runtime: Runtime) -> dict[str, Any]:
    """Where the numbers were taken: CPU, cores, OS, Python, runtime and library versions, load."""
    import cv2

    cpu = cpu_facts()
    return {
        "cpu_model": cpu["model"], "machine": cpu["machine"], "cores": cpu["cores"], "usable_cores": usable_cores(),
        "os": platform.platform(), "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "runtime": {"name": runtime.name, "version": runtime.version},
        "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads(), "numpy": np.__version__,
        "fer_edge": __version__,
    }


def display_path(path: Path | str) -> str:
    """`path` relative to the working folder when it lies inside it (reports get committed), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_benchmark(
    bundle: Bundle,
    variants: Sequence[Variant],
    config: BenchConfig,
    runtime: Runtime,
    progress: bool = True,
    argv: Optional[Iterable[str]] = None,
) -> dict[str, Any]:
    """Run every variant and return the report (a JSON-ready dict; see `fer_edge.benchmarks.report`)."""
    from tqdm import tqdm

    source_name = check_source(config)
    accuracy: dict[str, Any] = {}
    if config.accuracy_data is not None:
        images, labels, split_name = load_accuracy_faces(config)
        for model in dict.fromkeys(v.model for v in variants):
            spec = (model.bundle or bundle).spec
            accuracy[model.name] = {"split": split_name, "samples": int(len(labels)),
                                    "top1": round(model_accuracy(model, spec, images, labels, runtime), 5)}
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(argv) if argv is not None else None,
        "machine": machine_facts(runtime),
        "load_average": {"start": load_average()},
        "bundle": {"path": display_path(bundle.root), "sha256": bundle.checksum,
                   "model_mode": bundle.manifest["model"].get("mode"), "accuracy": bundle.manifest.get("accuracy")},
        "config": {"source": config.source, "source_name": source_name, "frames": config.frames,
                   "warmup": config.warmup, "sinks": list(config.sinks),
                   "detector_options": {d: asdict(config.options_for(d)) for d in dict.fromkeys(v.detector for v in variants)},
                   "detector_models": {k: str(v) for k, v in config.detector_models.items()}},
        "models": {m.name: model_facts(m, runtime) for m in dict.fromkeys(v.model for v in variants)},
        "variants": [],
    }
    total = len(variants) * (config.warmup + config.frames)
    with tqdm(total=total, desc="fer-bench", unit="frame", disable=not progress, leave=False, mininterval=0.5,
              file=sys.stderr) as bar, tempfile.TemporaryDirectory(prefix="fer-bench-") as scratch:
        for variant in variants:
            bar.set_description(variant.key)
            row: dict[str, Any] = {
                "key": variant.key, "model": variant.model.name, "detector": variant.detector,
                "resolution": list(variant.resolution) if variant.resolution else None,
                "faces_placed": variant.faces if config.synthetic else None,
                "threads": variant.threads, "accuracy": accuracy.get(variant.model.name),
            }
            done_before = bar.n
            try:
                pipeline = build_pipeline(bundle, variant, config, runtime)
                with open_bench_source(config, variant) as source:
                    sinks = make_sinks(config, pipeline.classes, Path(scratch))
                    try:
                        row.update(measure(pipeline, source, sinks, config.frames, config.warmup,
                                           lambda: bar.update(1)))
                    finally:
                        for sink in sinks:
                            sink.close(pipeline.summary())
                row["resolution"] = row.pop("frame_size")
                row["status"] = "ok"
            except FerEdgeError as exc:
                row["status"] = f"error: {exc}"
            bar.update(done_before + config.warmup + config.frames - bar.n)
            report["variants"].append(row)
    report["load_average"]["end"] = load_average()
    return report
