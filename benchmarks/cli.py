"""``fer-bench``: per-stage latency and frames per second on the machine it runs on.

    fer-bench                                       # synthetic faces, threads 1,2,4 (capped at the cores)
    fer-bench --model int8=bundle/emotion.tflite --model float32=export/emotion_float32.tflite --threads 1
    fer-bench --source clip.mp4 --detector blazeface,haar
    fer-bench --source 0 --resolution 640x480,1280x720    # a camera
    fer-bench --faces 1,2,4 --resolution 320x240,640x480   # synthetic workload sweep
    fer-bench --compare before/bench.json after/bench.json
    fer-bench detect --wild-faces ../shared/data/wild-faces   # detector recall by face height (issue 41)
    fer-bench faces --bundle fer2013 --bundle ferplus        # photo-folder accuracy per model x detector x crop

Writes NAME.json (machine-readable), NAME.md and PNG plots into ``--out``
(default ``runs/bench/NAME[N]``) and prints the summary. The click layer only
parses; `fer_edge.benchmarks.bench` measures and `fer_edge.benchmarks.report`
writes. User errors print one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import click

from fer_edge import __version__
from fer_edge.cli_util import DefaultGroup, quiet_native_logs, run_cli, unique_run_dir
from fer_edge.device.detect import DETECTORS, resolve_detector
from fer_edge.device.runtime import RUNTIMES
from fer_edge.errors import FerEdgeError
from fer_edge.benchmarks.faces import cli as faces_command


def _say(message: str) -> None:
    click.echo(f"fer-bench: {message}", err=True)


def parse_list(text: str, what: str, convert: Any = str) -> list[Any]:
    """``"1,2,4"`` -> [1, 2, 4]; an error names the option and the bad item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FerEdgeError(f"{what}: empty list")
    out = []
    for item in items:
        try:
            out.append(convert(item))
        except (ValueError, FerEdgeError) as exc:
            raise FerEdgeError(f"{what}: '{item}' is not valid ({exc})") from None
    return list(dict.fromkeys(out))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def parse_detector_models(values: tuple[str, ...], detectors: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs, or one bare PATH when a single detector is chosen."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            if len(detectors) != 1:
                raise FerEdgeError(f"--detector-model {value}: with several detectors write DETECTOR=PATH")
            name, path = detectors[0], value
        if name not in DETECTORS:
            raise FerEdgeError(f"--detector-model {value}: unknown detector '{name}' ({', '.join(DETECTORS)})")
        out[name] = Path(path)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fer-bench")
@click.option("--compare", nargs=2, type=click.Path(path_type=Path), default=None, metavar="A.json B.json",
              help="Print the ratios B/A between two reports and exit (nothing is measured).")
@click.option("--source", default="synthetic", show_default=True,
              help="synthetic (faces composed into frames) | demo | video file | camera index or /dev/videoN | "
                   "picamera2 | stream URL.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle: a path or a shipped name, ferplus (default) or fer2013.")
@click.option("--model", "models", multiple=True, metavar="[NAME=]PATH",
              help="Emotion model to benchmark: a .tflite file or a bundle; repeat to compare "
                   "(default: the bundle's model, named by its mode, e.g. int8).")
@click.option("--threads", default=None,
              help="Comma list of interpreter thread counts (default 1,2,4 capped at the cores).")
@click.option("--detector", "detectors", default="auto", show_default=True,
              help=f"Comma list of detectors ({', '.join(DETECTORS)}; auto = the bundle's default).")
@click.option("--detector-model", "detector_models", multiple=True, metavar="[DETECTOR=]PATH",
              help="Model file for a detector (YuNet's .onnx, a Haar .xml, another BlazeFace).")
@click.option("--resolution", "resolutions", default=None,
              help="Comma list of WIDTHxHEIGHT for synthetic, demo and cameras (default 640x480; files keep theirs).")
@click.option("--faces", default="1", show_default=True, help="Comma list of faces per frame (synthetic input only).")
@click.option("--frames", type=click.IntRange(min=2), default=200, show_default=True, help="Timed frames per variant.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Frames run first and not timed, per variant.")
@click.option("--sinks", default="draw,log", show_default=True,
              help="What runs after tracking: draw (annotate the frame), log (JSON Lines to a scratch file), or none.")
@click.option("--max-faces", type=click.IntRange(min=1), default=None,
              help="Most faces classified per frame (default: the detector's own, see fer-device run --help).")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help="Face detection score threshold (default: the detector's own).")
@click.option("--face-image", type=click.Path(path_type=Path), default=None,
              help="Photo of one face for the synthetic input (default: the astronaut photo from scikit-image).")
@click.option("--accuracy-data", type=click.Path(path_type=Path), default=None,
              help="FER2013 folder or CSV: also report each model's top-1 (e.g. ../shared/data/fer2013).")
@click.option("--accuracy-split", default="PrivateTest", show_default=True, help="Split for --accuracy-data.")
@click.option("--accuracy-limit", type=click.IntRange(min=1), default=None, help="Score only the first N faces.")
@click.option("--runtime", type=click.Choice([r[0] for r in RUNTIMES]), default=None, help="Force a TFLite runtime.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the report (default: runs/bench/NAME, numbered if taken).")
@click.option("--name", default="bench", show_default=True, help="Report file name stem.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def cli(**opts: Any) -> None:
    """Measure per-stage latency (p50/p90/p99/mean) and FPS of the device pipeline, sweeping models,
    detectors, resolutions, faces per frame and threads; or compare two reports."""
    if opts["compare"]:
        compare(*opts["compare"])
    else:
        bench(**{k: v for k, v in opts.items() if k != "compare"})


def compare(a: Path, b: Path) -> None:
    """The ``--compare`` verb."""
    from fer_edge.benchmarks.report import compare_reports, load_report

    click.echo(compare_reports(load_report(a), load_report(b), str(a), str(b)))


def bench(
    source: str, bundle: Optional[Path], models: tuple[str, ...], threads: Optional[str], detectors: str,
    detector_models: tuple[str, ...], resolutions: Optional[str], faces: str, frames: int, warmup: int, sinks: str,
    max_faces: Optional[int], min_confidence: Optional[float], face_image: Optional[Path], accuracy_data: Optional[Path],
    accuracy_split: str, accuracy_limit: Optional[int], runtime: Optional[str], out: Optional[Path], name: str,
    no_plots: bool, no_progress: bool,
) -> None:
    """The measuring verb: validate everything cheap first, then run the sweep and write the report."""
    from fer_edge.bundle import load_bundle
    from fer_edge.device.runtime import find_runtime
    from fer_edge.device.sources import describe_source, parse_resolution
    from fer_edge.benchmarks import bench as b
    from fer_edge.benchmarks.report import console_summary, write_report
    from fer_edge.benchmarks.workload import face_tile, load_face_image

    detector_list = parse_list(detectors, "--detector")
    sink_list = [] if sinks.strip().lower() == "none" else parse_list(sinks, "--sinks")
    synthetic = source == "synthetic"
    kind = "synthetic" if synthetic else describe_source(source)
    if resolutions and kind in ("video", "stream"):
        raise FerEdgeError(f"--resolution applies to synthetic, demo and camera input; {source} keeps its own size")
    res_list: list[Optional[tuple[int, int]]] = (
        parse_list(resolutions, "--resolution", parse_resolution) if resolutions
        else ([b.DEFAULT_RESOLUTION] if kind in ("synthetic", "demo") else [None]))
    face_list: list[Optional[int]] = parse_list(faces, "--faces", _positive_int) if synthetic else [None]
    if not synthetic and faces != "1":
        _say("--faces applies to the synthetic input only; ignored")
    cores = b.usable_cores()
    if threads:
        thread_list = parse_list(threads, "--threads", _positive_int)
        if max(thread_list) > cores:
            _say(f"more threads than the {cores} usable cores: expect no gain past {cores}")
    else:
        thread_list = b.default_thread_counts(cores)
    if synthetic and max_faces is not None and max(face_list) > max_faces:  # type: ignore[type-var]
        _say(f"--faces {max(face_list)} is more than --max-faces {max_faces}: only {max_faces} are classified")
    if out is not None and out.exists() and not out.is_dir():
        raise FerEdgeError(f"--out {out}: not a folder")

    rt = find_runtime(runtime)
    verified = load_bundle(bundle)
    detector_list = list(dict.fromkeys(resolve_detector(d, verified) for d in detector_list))
    model_list = [b.ModelChoice.parse(m) for m in models] or [b.ModelChoice.from_bundle(verified)]
    tile = None
    if face_image is not None:
        tile = face_tile(load_face_image(face_image))
    config = b.BenchConfig(
        source=source, frames=frames, warmup=warmup, sinks=tuple(sink_list),
        detector_models=parse_detector_models(detector_models, detector_list),
        option_overrides={"min_confidence": min_confidence, "max_faces": max_faces}, face_tile=tile,
        accuracy_data=accuracy_data, accuracy_split=accuracy_split, accuracy_limit=accuracy_limit,
    )
    variants = b.make_variants(model_list, detector_list, res_list, face_list, thread_list)
    _say(f"{len(variants)} variant{'s' if len(variants) > 1 else ''} x ({warmup} warm-up + {frames} timed frames) | "
         f"runtime {rt} | bundle {verified.root} (sha256 {verified.checksum[:12]}) | input {source}")
    report = b.run_benchmark(verified, variants, config, rt, progress=not no_progress,
                             argv=["fer-bench", *sys.argv[1:]])
    folder = out if out is not None else unique_run_dir(Path("runs") / "bench", name)
    written = write_report(report, folder, name, plots=not no_plots)
    click.echo(console_summary(report))
    failed = [r for r in report["variants"] if r["status"] != "ok"]
    for row in failed:
        _say(f"{row['key']}: {row['status']}")
    from fer_edge.benchmarks.report import busy_note

    if busy_note(report):
        _say(f"note: {busy_note(report)}")
    if written["note"]:
        _say(written["note"])
    _say(f"report: {written['json']}, {written['markdown']}" +
         "".join(f", {p}" for p in written["plots"]))
    if len(failed) == len(report["variants"]):
        raise FerEdgeError("every variant failed (see above)")


# Detection benchmark (issue 41): ``fer-bench detect``; plain ``fer-bench ...`` stays the pipeline benchmark.
class _BenchGroup(DefaultGroup):
    default_command = "pipeline"


@click.group(cls=_BenchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fer-bench")
def group() -> None:
    """Benchmarks of the device pipeline: ``fer-bench [pipeline] ...`` (the default) or ``fer-bench detect``."""


@click.command("detect", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--wild-faces", type=click.Path(path_type=Path), default=None,
              help="The wild-faces folder (labels.csv + images/), e.g. ../shared/data/wild-faces; without it only "
                   "the photos scikit-image and matplotlib ship are used.")
@click.option("--faces", type=click.IntRange(min=1), default=50, show_default=True,
              help="wild-faces photos to use (walked in a fixed-seed order), each pasted once per height; 50 keeps "
                   "the run under ~10 minutes on 2 busy cores.")
@click.option("--empty-frames", type=click.IntRange(min=1), default=300, show_default=True,
              help="Frames without faces for the false-face count.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle: a path or a shipped name, ferplus (default) or fer2013.")
@click.option("--detector", "extra_detectors", multiple=True, metavar="NAME=KIND[@SCALE][:MODEL]",
              help="Add a detector to the comparison, e.g. yunet-s=yunet:../shared/models/yunet/yunet_s_640_640.onnx "
                   "or yunet-x1.5=yunet@1.5 (YuNet on the frame enlarged 1.5 times).")
@click.option("--reference-model", type=click.Path(path_type=Path), default=None,
              help="YuNet .onnx that sets the known face boxes (default: the bundle's YuNet).")
@click.option("--cut-faces", is_flag=True,
              help="Also paste wild-faces close-ups whose face is cut by the photo's edge (a harder, less natural test).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timing-frames", type=click.IntRange(min=5), default=40, show_default=True,
              help="Detect calls timed per frame size.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for detect.json/.md/.png (default: runs/bench/detect, numbered if taken).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plot.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def detect_command(wild_faces: Optional[Path], faces: int, empty_frames: int, bundle: Optional[Path],
                   extra_detectors: tuple[str, ...], reference_model: Optional[Path], cut_faces: bool, seed: int,
                   timing_frames: int,
                   out: Optional[Path], no_plots: bool, no_progress: bool) -> None:
    """Recall by face height (16-160 px and frame-filling) in 640x480 frames, false faces per empty frame,
    emotion accuracy per height and the detect stage's ms, for every detector side by side."""
    from fer_edge.bundle import load_bundle
    from fer_edge.device.runtime import find_runtime
    from fer_edge.benchmarks.detect_bench import (
        DetectConfig, DetectorSpec, default_specs, run_detect_benchmark, to_markdown, write_detect_report,
    )

    if wild_faces is not None and not wild_faces.is_dir():
        raise FerEdgeError(f"--wild-faces {wild_faces}: not a folder")
    rt = find_runtime()
    verified = load_bundle(bundle)
    specs = default_specs(verified)
    for text in extra_detectors:
        name, sep, rest = text.partition("=")
        kind_scale, _, model = rest.partition(":")
        kind, at, scale = kind_scale.partition("@")
        if not sep or kind not in DETECTORS:
            raise FerEdgeError(f"--detector {text}: write NAME=KIND[@SCALE][:MODEL] with KIND one of "
                               f"{', '.join(DETECTORS)}")
        try:
            factor = float(scale) if at else None
        except ValueError:
            raise FerEdgeError(f"--detector {text}: SCALE '{scale}' is not a number") from None
        specs.append(DetectorSpec(name, kind, Path(model) if model else None, scale=factor))
    config = DetectConfig(faces=faces, empty_frames=empty_frames, seed=seed, timing_frames=timing_frames,
                          wild_faces=wild_faces, reference_model=reference_model, cut_faces=cut_faces)
    _say(f"{len(specs)} detectors: {', '.join(s.name for s in specs)} | runtime {rt} | 1 thread")
    report = run_detect_benchmark(verified, specs, config, rt, progress=not no_progress,
                                  argv=["fer-bench", *sys.argv[1:]])
    folder = out if out is not None else unique_run_dir(Path("runs") / "bench", "detect")
    written = write_detect_report(report, folder, plots=not no_plots)
    click.echo(to_markdown(report))
    _say(f"report: {written['json']}, {written['markdown']}" + (f", {written['plot']}" if written["plot"] else ""))


group.add_command(cli, "pipeline")
group.add_command(detect_command, "detect")
# End-to-end emotion accuracy on a labelled photo folder, per model, detector and crop (issue 42).
group.add_command(faces_command, "faces")


def main() -> None:
    """Console-script entry point (``fer-bench``)."""
    quiet_native_logs()
    logging.basicConfig(level=logging.WARNING, format="fer-bench: %(message)s", stream=sys.stderr)
    run_cli(group)


if __name__ == "__main__":
    main()
