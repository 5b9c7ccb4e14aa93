"""fer-edge side by side with the `fer` PyPI package, in one process.

Run it with the benchmark-only venv that ``benchmarks/peer_env.sh`` builds
(``bash benchmarks/compare_fer.sh`` does both); the main venv does not have
`fer` and never will.

Model level (FER2013 PrivateTest, 3,589 faces, both through LiteRT with 1 thread):

- fer-edge: the bundle's emotion model, each 48x48 face encoded by the contract's
  `InputEncoder` (what the device does);
- fer: ``fer/data/emotion_model_quantized.tflite`` from its wheel (float32 input
  ``[1, 64, 64, 1]``, int8 weights, float32 softmax output), each face prepared as
  ``FER.detect_emotions`` prepares a crop: ``cv2.resize`` to 64x64 (OpenCV's default,
  bilinear), float32, ``/ 255``, ``(x - 0.5) * 2``.

Per face the model call (set input, invoke, read output) is timed on its own and
with its preprocessing; medians are reported. The two models take turns, pass
after pass, so a change in machine load hits both alike.

Pipeline level: the same decoded frames of one video (by default the demo clip
written at 596x336, one face) go through

- fer-edge's `Pipeline` (BlazeFace, 1 thread, no sinks: detect, crop, classify, track),
  and the same with the Haar detector, the peer's detector;
- ``FER().detect_emotions(frame)`` in a loop, with FER's defaults (Haar cascade from
  ``cv2.data``, scaleFactor 1.1, minNeighbors 5, min_face_size 50, offsets (10, 10),
  its TFLite model via ``tf.lite.Interpreter``). FER creates that interpreter without
  ``num_threads``; to pin it to 1 thread like ours, this script puts a
  ``tf.lite.Interpreter(<the same model>, num_threads=1)`` into FER's own class-level
  interpreter cache before constructing FER (``--peer-threads default`` skips that).
  OpenCV is set to 1 thread (``cv2.setNumThreads(1)``) for both, so Haar runs on one core.

Each takes turns over ``--repeats`` passes of the whole clip after a warm-up; the
median FPS of the passes is reported. Writes compare_fer.json, compare_fer.md and
compare_fer.png into ``--out`` (default benchmarks/results) and prints the table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import click
import numpy as np

#: The issue's goals: at least +5 pp top-1, at most 2x the peer's per-face latency, at least 3x its pipeline FPS.
GOALS = {"accuracy_gain_pp": 5.0, "latency_ratio_max": 2.0, "fps_ratio_min": 3.0}
VIDEO_SIZE = (596, 336)
PEER_SIZE = 64


def peer_facts() -> dict[str, Any]:
    """Versions of the peer and what it runs on."""
    import importlib.metadata as md

    facts = {}
    for dist in ("fer", "tensorflow-cpu", "tensorflow", "opencv-contrib-python", "opencv-python", "torch",
                 "facenet-pytorch", "setuptools", "ai-edge-litert"):
        try:
            facts[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return facts


def peer_model_path() -> Path:
    """The TFLite model inside the installed `fer` wheel."""
    import fer

    path = Path(fer.__file__).resolve().parent / "data" / "emotion_model_quantized.tflite"
    if not path.is_file():
        raise SystemExit(f"compare_fer: {path} not found: is the `fer` wheel installed whole?")
    return path


# --------------------------------------------------------------------------- model level


class ModelUnderTest:
    """One model through LiteRT with 1 thread: `prepare(face48)` fills its input, `run()` calls the model."""

    def __init__(self, name: str, path: Path, make_prepare: Callable[[Any], Callable[[np.ndarray, np.ndarray], None]],
                 runtime: Any) -> None:
        from fer_edge.device.runtime import TFLiteModel

        self.name = name
        self.model = TFLiteModel(path, threads=1, runtime=runtime)
        self.input = np.zeros(self.model.input.shape, self.model.input.dtype)
        self.out = self.model.outputs[0]
        self._prepare = make_prepare(self.model.input)
        self.path = path

    def facts(self) -> dict[str, Any]:
        i, o = self.model.input, self.out
        return {"file": str(self.path.name), "bytes": self.path.stat().st_size,
                "input": {"shape": list(i.shape), "dtype": str(i.dtype), "scale": i.scale, "zero_point": i.zero_point},
                "output": {"shape": list(o.shape), "dtype": str(o.dtype), "scale": o.scale, "zero_point": o.zero_point}}

    def __call__(self, face: np.ndarray) -> tuple[int, float, float]:
        """(top class, preprocess ms, model-call ms) for one 48x48 uint8 face."""
        from fer_edge.preprocess import dequantize

        t0 = time.perf_counter()
        self._prepare(face, self.input)
        t1 = time.perf_counter()
        raw = self.model.run(self.input)[0]
        t2 = time.perf_counter()
        probs = dequantize(raw, self.out.scale, self.out.zero_point).reshape(-1)
        return int(np.argmax(probs)), (t1 - t0) * 1e3, (t2 - t1) * 1e3


def ours_prepare(spec: Any, info: Any) -> Callable[[np.ndarray, np.ndarray], None]:
    from fer_edge.preprocess import InputEncoder

    encoder = InputEncoder(spec, info.dtype, info.scale, info.zero_point)
    return lambda face, out: encoder.encode(face, out=out)


def peer_prepare(face: np.ndarray, out: np.ndarray) -> None:
    """What FER.detect_emotions does to a face crop: resize to 64x64, /255, (x - 0.5) * 2, float32."""
    import cv2

    x = cv2.resize(face, (PEER_SIZE, PEER_SIZE)).astype("float32")
    x = x / 255.0
    x = (x - 0.5) * 2.0
    out[0, :, :, 0] = x


def model_level(models: list[ModelUnderTest], faces: np.ndarray, labels: np.ndarray, passes: int,
                warmup: int) -> dict[str, Any]:
    from tqdm import tqdm

    preds = {m.name: np.zeros(len(faces), np.int64) for m in models}
    pre = {m.name: [] for m in models}
    call = {m.name: [] for m in models}
    with tqdm(total=passes * len(models) * len(faces), desc="model level", unit="face", file=sys.stderr,
              mininterval=1.0, leave=False) as bar:
        for m in models:
            for face in faces[:warmup]:
                m(face)
        for _ in range(passes):
            for m in models:  # take turns, whole pass each
                p, c = pre[m.name], call[m.name]
                for i, face in enumerate(faces):
                    preds[m.name][i], a, b = m(face)
                    p.append(a)
                    c.append(b)
                bar.update(len(faces))
    out = {}
    for m in models:
        c, p = np.asarray(call[m.name]), np.asarray(pre[m.name])
        out[m.name] = {
            **m.facts(),
            "top1": round(float((preds[m.name] == labels).mean()), 5),
            "per_class_top1": [round(float((preds[m.name][labels == k] == k).mean()), 4)
                               if (labels == k).any() else None for k in range(7)],
            "model_ms": {"p50": round(float(np.median(c)), 4), "p90": round(float(np.percentile(c, 90)), 4),
                         "mean": round(float(c.mean()), 4)},
            "preprocess_plus_model_ms": {"p50": round(float(np.median(p + c)), 4),
                                         "p90": round(float(np.percentile(p + c, 90)), 4)},
        }
    return out


def crosscheck(peer: Any, peer_model: ModelUnderTest, faces: np.ndarray) -> dict[str, Any]:
    """The peer model through LiteRT (as timed here) vs through fer's own ``_classify_emotions`` (tf.lite)."""
    from fer_edge.preprocess import dequantize

    x = np.zeros((len(faces), PEER_SIZE, PEER_SIZE, 1), np.float32)
    ours = np.zeros((len(faces), 7), np.float32)
    for i, face in enumerate(faces):
        peer_prepare(face, x[i:i + 1])
        raw = peer_model.model.run(x[i:i + 1])[0]
        ours[i] = dequantize(raw, peer_model.out.scale, peer_model.out.zero_point).reshape(-1)
    theirs = np.asarray(peer._classify_emotions(x[..., 0]), np.float32)
    return {"faces": int(len(faces)), "top1_agreement": round(float((ours.argmax(1) == theirs.argmax(1)).mean()), 4),
            "max_abs_prob_diff": round(float(np.abs(ours - theirs).max()), 6)}


# --------------------------------------------------------------------------- pipeline level


def make_peer(threads: str) -> Any:
    """FER() with its defaults; its TFLite interpreter pinned to 1 thread via FER's own cache, unless 'default'."""
    import tensorflow as tf
    from fer.fer import FER

    if threads == "1":
        interpreter = tf.lite.Interpreter(model_path=str(peer_model_path()), num_threads=1)
        interpreter.allocate_tensors()
        FER._tflite_interpreter_cache = interpreter
    return FER()


def run_ours(pipeline: Any, frames: list[np.ndarray]) -> tuple[float, list[int]]:
    """One pass of fer-edge's pipeline over `frames` (no sinks): (FPS, faces found in each frame)."""
    from fer_edge.benchmarks.workload import FrameListSource

    found = []
    with FrameListSource(frames, name="clip") as source:
        t0 = time.perf_counter()
        for result in pipeline.frames(source, sinks=()):
            found.append(len(result.faces))
        elapsed = time.perf_counter() - t0
    return len(frames) / elapsed, found


def run_peer(peer: Any, frames: list[np.ndarray]) -> tuple[float, list[int]]:
    """One pass of ``peer.detect_emotions`` over `frames`: (FPS, faces found in each frame)."""
    found = []
    t0 = time.perf_counter()
    for image in frames:
        found.append(len(peer.detect_emotions(image)))
    elapsed = time.perf_counter() - t0
    return len(frames) / elapsed, found


def pipeline_level(contenders: dict[str, Callable[[list[np.ndarray]], tuple[float, list[int]]]],
                   frames: list[np.ndarray], repeats: int, warmup: int) -> dict[str, Any]:
    from tqdm import tqdm

    fps: dict[str, list[float]] = {name: [] for name in contenders}
    faces: dict[str, list[int]] = {}
    for run in contenders.values():
        run(frames[:warmup])
    with tqdm(total=repeats * len(contenders), desc="pipeline level", unit="pass", file=sys.stderr, leave=False) as bar:
        for _ in range(repeats):
            for name, run in contenders.items():  # take turns, whole clip each
                rate, found = run(frames)
                fps[name].append(rate)
                faces[name] = found
                bar.update(1)
    return {name: {"fps": round(float(np.median(v)), 3), "fps_passes": [round(x, 3) for x in v],
                   "faces_per_frame": round(float(np.mean(faces[name])), 3),
                   "frames_with_a_face": round(float(np.mean(np.asarray(faces[name]) > 0)), 3)}
            for name, v in fps.items()}


# --------------------------------------------------------------------------- report


def verdicts(model: dict[str, Any], pipe: Optional[dict[str, Any]]) -> dict[str, Any]:
    ours, peer = model["fer-edge"], model["fer"]
    gain = (ours["top1"] - peer["top1"]) * 100
    lat = ours["model_ms"]["p50"] / peer["model_ms"]["p50"]
    out = {"accuracy_gain_pp": round(gain, 2), "latency_ratio": round(lat, 3),
           "accuracy_goal_met": gain >= GOALS["accuracy_gain_pp"] and lat <= GOALS["latency_ratio_max"]}
    if pipe is not None:
        fps_ratio = pipe["fer-edge"]["fps"] / pipe["fer"]["fps"]
        out.update(fps_ratio=round(fps_ratio, 3), fps_goal_met=fps_ratio >= GOALS["fps_ratio_min"])
    return out


def to_markdown(report: dict[str, Any]) -> str:
    m, p, v = report["model_level"], report.get("pipeline_level"), report["verdicts"]
    ours, peer = m["fer-edge"], m["fer"]
    ok = lambda flag: "**met**" if flag else "**not met**"  # noqa: E731
    lines = [
        "# fer-edge vs the `fer` package",
        "",
        f"- machine: {report['machine_line']}",
        f"- fer-edge bundle sha256 `{report['bundle']['sha256'][:16]}…` (model {report['bundle']['model_mode']}); "
        f"peer: " + ", ".join(f"{k} {val}" for k, val in report["peer"].items()),
        f"- model level: {report['data']['split']} ({report['data']['samples']} faces), "
        f"{report['runtime']}, 1 thread, {report['settings']['model_passes']} pass(es) each, taking turns; "
        "fer's faces resized to 64x64 and scaled to [-1, 1] as FER.detect_emotions does",
    ]
    from fer_edge.benchmarks.report import busy_note

    busy = busy_note({"machine": report.get("machine") or {"cores": 1}, "load_average": report.get("load_average")})
    if busy:
        lines.append(f"- **note**: {busy}")
    check = report.get("model_level_crosscheck")
    if check:
        lines.append(f"- cross-check: fer's model through LiteRT vs through fer's own `_classify_emotions` (tf.lite) "
                     f"on {check['faces']} faces: top-1 agreement {check['top1_agreement']:.2%}, "
                     f"max |Δp| {check['max_abs_prob_diff']:.2g}")
    if p is not None:
        video = report["video"]
        lines.append(f"- pipeline level: {video['name']} ({video['size'][0]}x{video['size'][1]}, "
                     f"{video['frames']} frames), median of {report['settings']['repeats']} passes each, "
                     f"taking turns; peer TFLite threads: {report['settings']['peer_threads']}; OpenCV threads: "
                     f"{report['settings']['cv_threads']}")
    lines += [
        "",
        "| | fer-edge | fer | fer-edge vs fer | goal |",
        "|---|---|---|---|---|",
        f"| top-1 accuracy | {ours['top1']:.2%} | {peer['top1']:.2%} | {v['accuracy_gain_pp']:+.2f} pp | ≥ +5 pp: "
        f"{ok(v['accuracy_gain_pp'] >= GOALS['accuracy_gain_pp'])} |",
        f"| per-face latency, model call (p50) | {ours['model_ms']['p50']:.3f} ms | {peer['model_ms']['p50']:.3f} ms | "
        f"{v['latency_ratio']:.2f}x | ≤ 2x: {ok(v['latency_ratio'] <= GOALS['latency_ratio_max'])} |",
        f"| per-face latency, preprocess + model (p50) | {ours['preprocess_plus_model_ms']['p50']:.3f} ms | "
        f"{peer['preprocess_plus_model_ms']['p50']:.3f} ms | "
        f"{ours['preprocess_plus_model_ms']['p50'] / peer['preprocess_plus_model_ms']['p50']:.2f}x | |",
        f"| model input | {ours['input']['dtype']} {ours['input']['shape']} | "
        f"{peer['input']['dtype']} {peer['input']['shape']} | | |",
        f"| model file | {ours['bytes'] / 1024:.0f} KB | {peer['bytes'] / 1024:.0f} KB | | |",
    ]
    if p is not None:
        lines.append(f"| pipeline FPS (one face, {report['video']['size'][0]}x{report['video']['size'][1]}) | "
                     f"{p['fer-edge']['fps']:.1f} | {p['fer']['fps']:.1f} | {v['fps_ratio']:.2f}x | ≥ 3x: "
                     f"{ok(v['fps_goal_met'])} |")
        lines += ["", "Pipeline detail (the same decoded frames for each; detectors differ in what they find):", "",
                  "| pipeline | detector | FPS (median) | passes | frames with a face | faces/frame |",
                  "|---|---|---|---|---|---|"]
        detectors = {"fer-edge": "BlazeFace (bundle)", "fer": "Haar (fer defaults)",
                     "fer-edge (haar)": "Haar (OpenCV's)"}
        for name, row in p.items():
            lines.append(f"| {name} | {detectors.get(name, '')} | {row['fps']:.1f} | "
                         f"{', '.join(f'{x:.1f}' for x in row['fps_passes'])} | {row['frames_with_a_face']:.0%} | "
                         f"{row['faces_per_frame']:.2f} |")
    else:
        lines += ["", f"Pipeline level not run: {report.get('pipeline_error')}"]
    lines += ["", f"Load average at start / end: {report['load_average']['start']} / {report['load_average']['end']}",
              "", f"![comparison]({report['plot']})" if report.get("plot") else ""]
    return "\n".join(lines).rstrip() + "\n"


def plot(report: dict[str, Any], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from fer_edge.files import save_figure
    except ImportError:
        return None
    m, p = report["model_level"], report.get("pipeline_level")
    panels = [("top-1 accuracy (%)", [m[k]["top1"] * 100 for k in ("fer-edge", "fer")], "{:.1f}"),
              ("per-face model latency p50 (ms)", [m[k]["model_ms"]["p50"] for k in ("fer-edge", "fer")], "{:.2f}")]
    if p is not None:
        panels.append((f"pipeline FPS ({report['video']['size'][0]}x{report['video']['size'][1]}, 1 face)",
                       [row["fps"] for row in p.values()], "{:.1f}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.8))
    for ax, (title, values, fmt) in zip(np.atleast_1d(axes), panels):
        names = ["fer-edge", "fer", *[k for k in (p or {}) if k not in ("fer-edge", "fer")]][:len(values)]
        colors = {"fer-edge": "#2a9d8f", "fer": "#aaaaaa"}
        bars = ax.bar(names, values, color=[colors.get(n, "#8ecae6") for n in names])
        for bar, value in zip(bars, values):
            ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                        fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, max(values) * 1.2)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"fer-edge vs fer {report['peer'].get('fer', '')} - {report['machine']['cpu_model']}, 1 thread",
                 fontsize=10)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="FER2013 folder or CSV (default: $FER_EDGE_DATA or ../shared/data/fer2013).")
@click.option("--split", default="PrivateTest", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N faces (quick checks).")
@click.option("--model-passes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Passes over the faces per model, taking turns.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="fer-edge bundle: a path or a shipped name (default: ferplus).")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Video for the pipeline level (default: the demo clip written at 596x336).")
@click.option("--video-frames", type=click.IntRange(min=10), default=150, show_default=True,
              help="Frames of the demo clip to write, or the most frames read from --video.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Passes over the clip per pipeline, taking turns; the median FPS is reported.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Warm-up frames per pipeline.")
@click.option("--peer-threads", type=click.Choice(["1", "default"]), default="1", show_default=True,
              help="1: pin fer's TFLite interpreter to one thread (through its interpreter cache); default: leave it.")
@click.option("--cv-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="cv2.setNumThreads for the whole process (both sides).")
@click.option("--skip-pipeline", is_flag=True, help="Model level only.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results"), show_default=True)
@click.option("--name", default="compare_fer", show_default=True)
def cli(data: Optional[Path], split: str, limit: Optional[int], model_passes: int, bundle: Optional[Path],
        video: Optional[Path], video_frames: int, repeats: int, warmup: int, peer_threads: str, cv_threads: int,
        skip_pipeline: bool, out: Path, name: str) -> None:
    """fer-edge vs the `fer` package: model-level accuracy and latency, pipeline-level FPS."""
    import cv2

    cv2.setNumThreads(cv_threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fer_edge.benchmarks.bench import display_path, load_average, machine_facts
    from fer_edge.benchmarks.report import machine_line
    from fer_edge.bundle import load_bundle
    from fer_edge.device.runtime import find_runtime
    from fer_edge.train.data import default_data_dir, load_dataset

    try:
        import fer.fer  # noqa: F401  (TensorFlow and pkg_resources load here, as for any fer user)
    except ImportError as exc:
        raise click.ClickException(f"the `fer` package does not import ({exc}): run this with the venv that "
                                   "benchmarks/peer_env.sh builds (bash benchmarks/compare_fer.sh does)") from None
    runtime = find_runtime("litert")
    verified = load_bundle(bundle)
    load_start = load_average()
    report: dict[str, Any] = {
        "schema": "fer-edge-vs-fer/1", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["python -m fer_edge.benchmarks.compare_fer", *sys.argv[1:]],
        "machine": machine_facts(runtime), "runtime": str(runtime), "peer": peer_facts(),
        "bundle": {"path": display_path(verified.root), "sha256": verified.checksum,
                   "model_mode": verified.manifest["model"].get("mode"), "accuracy": verified.manifest.get("accuracy")},
        "settings": {"model_passes": model_passes, "repeats": repeats, "warmup": warmup, "peer_threads": peer_threads,
                     "cv_threads": cv_threads, "goals": GOALS},
    }
    report["machine_line"] = machine_line({"machine": report["machine"], "load_average": {"start": load_start}})

    # Model level.
    dataset = load_dataset(data or default_data_dir()).split(split)
    faces, labels = dataset.images, dataset.labels
    if limit:
        faces, labels = faces[:limit], labels[:limit]
    report["data"] = {"source": Path(dataset.source).name, "split": split, "samples": int(len(labels)),
                      "checksum": dataset.checksum}
    if tuple(verified.classes) != tuple(dataset.classes):
        raise click.ClickException(f"the bundle's classes {verified.classes} are not FER2013's {dataset.classes}")
    ours_model = ModelUnderTest("fer-edge", verified.model_path, lambda info: ours_prepare(verified.spec, info),
                                runtime)
    peer_model = ModelUnderTest("fer", peer_model_path(), lambda info: peer_prepare, runtime)
    peer_input = peer_model.model.input
    if tuple(peer_input.shape) != (1, PEER_SIZE, PEER_SIZE, 1) or peer_input.dtype != np.float32:
        raise click.ClickException(f"fer's model input is {peer_model.facts()['input']}, not float32 [1, 64, 64, 1]")
    click.echo(f"compare_fer: model level on {len(labels)} faces ({split}), {runtime}, 1 thread", err=True)
    report["model_level"] = model_level([ours_model, peer_model], faces, labels, model_passes,
                                        warmup=min(50, len(faces)))

    # The peer as its users run it; if it cannot even be constructed, that is the finding.
    report["pipeline_level"] = None
    peer = None
    try:
        peer = make_peer(peer_threads)
    except Exception as exc:  # e.g. OpenCV 5 (no CascadeClassifier), setuptools>=81 (no pkg_resources)
        report["pipeline_error"] = f"FER() failed: {exc.__class__.__name__}: {exc}"
    if peer is not None:
        report["model_level_crosscheck"] = crosscheck(peer, peer_model, faces[:200])
    if peer is not None and not skip_pipeline:
        try:
            report.update(pipeline_report(verified, runtime, video, video_frames, repeats, warmup, peer))
        except Exception as exc:  # the peer's own failures are a finding, not a crash
            report["pipeline_error"] = f"{exc.__class__.__name__}: {exc}"
    elif skip_pipeline:
        report["pipeline_error"] = "skipped (--skip-pipeline)"
    if report.get("pipeline_error"):
        click.echo(f"compare_fer: pipeline level not run: {report['pipeline_error']}", err=True)
    report["load_average"] = {"start": load_start, "end": load_average()}
    report["verdicts"] = verdicts(report["model_level"], report["pipeline_level"])

    out.mkdir(parents=True, exist_ok=True)
    png = plot(report, out / f"{name}.png")
    report["plot"] = png.name if png else None
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(report)
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    click.echo(markdown)
    click.echo(f"compare_fer: wrote {out / name}.json, .md" + (", .png" if png else ""), err=True)


def pipeline_report(verified: Any, runtime: Any, video: Optional[Path], video_frames: int, repeats: int, warmup: int,
                    peer: Any) -> dict[str, Any]:
    from fer_edge.benchmarks.workload import read_video
    from fer_edge.device.demo import write_demo_video
    from fer_edge.device.pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="compare-fer-") as tmp:
        if video is None:
            path = write_demo_video(Path(tmp) / "demo_596x336.mp4", frames=video_frames, resolution=VIDEO_SIZE)
            name = f"demo clip written by write_demo_video at {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} (mp4v)"
        else:
            path, name = video, str(video)
        frames, fps = read_video(path, max_frames=video_frames)
    h, w = frames[0].shape[:2]
    ours = Pipeline.from_bundle(verified, "blazeface", threads=1, runtime=runtime)
    ours_haar = Pipeline.from_bundle(verified, "haar", threads=1, runtime=runtime)
    contenders = {
        "fer-edge": lambda f: run_ours(ours, f),
        "fer": lambda f: run_peer(peer, f),
        "fer-edge (haar)": lambda f: run_ours(ours_haar, f),
    }
    click.echo(f"compare_fer: pipeline level on {len(frames)} frames of {w}x{h}", err=True)
    return {"video": {"name": name, "size": [w, h], "frames": len(frames), "fps": fps},
            "pipeline_level": pipeline_level(contenders, frames, repeats, warmup)}


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
