"""End-to-end emotion accuracy on a labelled photo folder, through the device path, side by side.

For every photo, every bundle (model) and every crop method, one answer:

``whole``
    the whole photo classified as the face (the contract's `prepare_face`, no
    detector): the reference a close-up photo set allows.
``box``
    the detector's largest face, cut with today's box crop (`crop_face`,
    the bundle's margin).
``aligned``
    the same face, aligned on its landmarks to FER2013's template
    (`FaceAligner`, eyes levelled).
``aligned-roll``
    aligned with scale and shift only, keeping the head's roll: whether
    levelling the eyes helps, measured.

Detectors run once per photo, set up as ``fer-device run`` sets them up for
photos (each detector's default filters, `StillDetector`'s padded retry), and
their faces are shared by every model and crop; faces go through the device's own `FacePreprocessor` and
`EmotionClassifier` (the TFLite runtime, the int8 model), so a figure here is
what ``fer-device run --source FOLDER`` would answer on the same face. A
photo where the detector finds no face counts as wrong, as in
../shared/data/wild-faces/README.md. It also writes the coverage/accuracy
trade-off of ``--min-emotion-confidence`` for each bundle's device answer.

    fer-bench faces --bundle fer2013 --bundle ferplus
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import click
import cv2
import numpy as np
from tqdm import tqdm

from fer_edge.bundle import Bundle, load_bundle
from fer_edge.cli_util import run_cli
from fer_edge.device.boxes import Detection
from fer_edge.device.classify import EmotionClassifier, FacePreprocessor
from fer_edge.device.detect import StillDetector, make_detector
from fer_edge.device.info import cpu_facts
from fer_edge.device.runtime import find_runtime
from fer_edge.errors import FerEdgeError
from fer_edge.files import write_atomic
from fer_edge.preprocess import InputEncoder, PreprocessSpec, prepare_face, to_gray

CROPS: tuple[str, ...] = ("whole", "box", "aligned", "aligned-roll")
THRESHOLDS: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wild-faces"


def read_labels(folder: Path, labels_csv: Optional[Path]) -> list[tuple[Path, str]]:
    """(photo, label) pairs from ``labels.csv`` (``path,label[,...]``, paths relative to `folder`)."""
    labels_csv = labels_csv or folder / "labels.csv"
    if not labels_csv.is_file():
        raise FerEdgeError(f"{labels_csv}: labels file not found (expected path,label rows)")
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise FerEdgeError(f"{labels_csv}: needs a header with 'path' and 'label' columns")
    return [(folder / r["path"], r["label"].strip().lower()) for r in rows]


def crop_specs(spec: PreprocessSpec, landmarks: Sequence[Sequence[float]]) -> dict[str, PreprocessSpec]:
    """The spec each face crop uses: the bundle's normalisation, the crop varied."""
    box = replace(spec, crop="box", landmarks=(), level_eyes=True)
    return {"box": box, "aligned": box.aligned(landmarks, level_eyes=True),
            "aligned-roll": box.aligned(landmarks, level_eyes=False)}


class ModelPath:
    """One bundle's model with a preprocessor per crop, as the device builds them."""

    def __init__(self, name: str, bundle: Bundle, landmarks: Sequence[Sequence[float]], runtime) -> None:
        self.name, self.bundle = name, bundle
        self.classifier = EmotionClassifier(bundle.model_path, bundle.classes, threads=1, runtime=runtime, max_faces=1)
        info = self.classifier.input
        self.pre = {crop: FacePreprocessor(spec, info, max_faces=1)
                    for crop, spec in crop_specs(bundle.spec, landmarks).items()}
        self.encoder = InputEncoder(bundle.spec, info.dtype, info.scale, info.zero_point)
        self._whole = np.zeros((1, *info.shape), info.dtype)

    def whole(self, gray: np.ndarray) -> np.ndarray:
        self.encoder.encode(prepare_face(gray, self.bundle.spec), out=self._whole[0])
        return self.classifier(self._whole)[0]

    def face(self, crop: str, gray: np.ndarray, detection: Detection) -> np.ndarray:
        return self.classifier(self.pre[crop](gray, [detection]))[0]


def bundle_name(arg: str) -> str:
    """A short name for a --bundle value: a shipped name as is, a path by its folder (``run/export/bundle`` -> run)."""
    path = Path(arg)
    if not path.exists():
        return arg
    parts = [p for p in path.resolve().parts if p not in ("bundle", "export")]
    return parts[-1] if parts else arg


def largest(detections: Sequence[Detection]) -> Optional[Detection]:
    return max(detections, key=lambda d: d.box.area) if detections else None


def score(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, mean per-class recall and per-class recall; a row of NaN probabilities (no face) is wrong."""
    found = ~np.isnan(probs).any(axis=1)
    pred = np.where(found, np.nan_to_num(probs, nan=0.0).argmax(axis=1), -1)
    correct = pred == labels
    recall = {}
    for i, name in enumerate(classes):
        mask = labels == i
        if mask.any():
            recall[name] = [int(correct[mask].sum()), int(mask.sum())]
    return {"accuracy": float(correct.mean()), "mean_recall": float(np.mean([c / n for c, n in recall.values()])),
            "no_face": float(1 - found.mean()), "recall": recall}


def tradeoff(labels: np.ndarray, probs: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, float]]:
    """Coverage (faces given an emotion) and accuracy on those, per --min-emotion-confidence."""
    found = ~np.isnan(probs).any(axis=1)
    p = np.nan_to_num(probs, nan=0.0)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    rows = []
    for t in thresholds:
        kept = found & (conf >= t)
        rows.append({"threshold": t, "coverage": float(kept.mean()),
                     "accuracy": float((pred[kept] == labels[kept]).mean()) if kept.any() else float("nan")})
    return rows


def test_split_tradeoff(bundle: Bundle, data_dir: Path, runtime) -> dict[str, Any]:
    """PrivateTest (48x48 faces as given) under both label sets; the trade-off on the bundle's own one.

    Top-1, mean per-class recall and ECE under FER2013's labels and FER+'s
    majority labels, so both models are compared on both; the
    ``--min-emotion-confidence`` table uses the labels the model was trained on.
    """
    from fer_edge.convert.calibrate import calibration_metrics
    from fer_edge.convert.check import tflite_probabilities
    from fer_edge.train.data import load_dataset

    own = "ferplus" if bundle.manifest["model"].get("label_set", "fer2013").startswith("ferplus") else "fer2013"
    result: dict[str, Any] = {"label_set": own}
    for labels in ("fer2013", "ferplus"):
        test = load_dataset(data_dir, labels=labels).split("test")
        probs = tflite_probabilities(bundle.model_path, test.images, bundle.spec, runtime=runtime,
                                     desc=f"PrivateTest ({labels})")
        probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-6)  # as the device renormalises
        metrics = calibration_metrics(probs, test.labels)
        result[labels] = {"faces": int(len(test)), "top1": metrics["top1"], "ece": metrics["ece"],
                          "mean_recall": score(test.labels, probs, bundle.classes)["mean_recall"]}
        if labels == own:
            result.update(faces=int(len(test)), top1=metrics["top1"], ece=metrics["ece"],
                          table=tradeoff(test.labels, probs))
    return result


def run(photos: list[tuple[Path, str]], models: list[ModelPath], detectors: dict[str, Any],
        crops: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, list[float]]]:
    """Probabilities per (model, detector, crop) key for every photo (NaN rows where no face was found)."""
    classes = models[0].bundle.classes
    labels = np.array([classes.index(label) if label in classes else -1 for _, label in photos])
    keys = [f"{m.name}|-|whole" for m in models if "whole" in crops]
    keys += [f"{m.name}|{d}|{c}" for m in models for d in detectors for c in crops if c != "whole"]
    probs = {k: np.full((len(photos), len(classes)), np.nan, np.float32) for k in keys}
    heights: dict[str, list[float]] = {d: [] for d in detectors}
    for i, (path, _) in enumerate(tqdm(photos, desc="photos", mininterval=1.0)):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FerEdgeError(f"{path}: not a readable image")
        gray = to_gray(image)
        for m in models:
            if "whole" in crops:
                probs[f"{m.name}|-|whole"][i] = m.whole(gray)
        for d, detector in detectors.items():
            face = largest(detector(gray))
            if face is None:
                continue
            heights[d].append(face.box.height)
            for m in models:
                for c in crops:
                    if c != "whole":
                        probs[f"{m.name}|{d}|{c}"][i] = m.face(c, gray, face)
    return probs, labels, heights


def markdown(result: dict[str, Any]) -> str:
    classes = result["classes"]
    lines = [f"# End-to-end emotion accuracy: {result['folder']}", "",
             f"{result['photos']} photos; device path (TFLite {result['runtime']}, int8 models, 1 thread) on "
             f"{result['machine']}; largest face per photo, a photo with no face found counts as wrong.", "",
             f"Command: `{result['command']}`", "",
             "| model | detector | crop | accuracy | mean recall | no face | " + " | ".join(classes) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(classes)]
    for row in result["rows"]:
        recall = row["recall"]
        cells = [f"{recall[c][0]}/{recall[c][1]}" if c in recall else "-" for c in classes]
        lines.append(f"| {row['model']} | {row['detector']} | {row['crop']} | {row['accuracy']:.1%} | "
                     f"{row['mean_recall']:.1%} | {row['no_face']:.1%} | " + " | ".join(cells) + " |")
    if result.get("privatetest"):
        lines += ["", "PrivateTest, 48x48 faces as given (no detector), under each label set:", "",
                  "| model | FER2013 labels: top-1 | mean recall | ECE | FER+ labels: top-1 | mean recall | ECE |",
                  "|---|---|---|---|---|---|---|"]
        for name, test in result["privatetest"].items():
            a, b = test["fer2013"], test["ferplus"]
            lines.append(f"| {name} | {a['top1']:.1%} | {a['mean_recall']:.1%} | {a['ece']:.3f} | {b['top1']:.1%} | "
                         f"{b['mean_recall']:.1%} | {b['ece']:.3f} |")
    for name, test in result.get("privatetest", {}).items():
        lines += ["", f"Uncertain threshold on PrivateTest ({test['faces']} faces, {test['label_set']} labels), {name}: "
                      f"top-1 {test['top1']:.1%}, ECE {test['ece']:.3f}", "",
                  "| threshold | coverage | accuracy on covered |", "|---|---|---|"]
        lines += [f"| {r['threshold']:.1f} | {r['coverage']:.1%} | {r['accuracy']:.1%} |" for r in test["table"]]
    for name, table in result["tradeoff"].items():
        lines += ["", f"Uncertain threshold (`--min-emotion-confidence`), {name}:", "",
                  "| threshold | coverage | accuracy on covered |", "|---|---|---|"]
        lines += [f"| {r['threshold']:.1f} | {r['coverage']:.1%} | {r['accuracy']:.1%} |" for r in table]
    return "\n".join(lines) + "\n"


@click.command("faces", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--folder", type=click.Path(path_type=Path), default=DEFAULT_FOLDER, show_default=True,
              help="Photo folder with labels.csv (path,label).")
@click.option("--labels", "labels_csv", type=click.Path(path_type=Path), default=None,
              help="Labels CSV (default: FOLDER/labels.csv).")
@click.option("--bundle", "bundles", multiple=True, default=("fer2013", "ferplus"), show_default=True,
              help="Bundles to compare (names of shipped bundles or paths); repeat.")
@click.option("--detector", "detectors", multiple=True, default=("yunet", "blazeface"), show_default=True,
              help="Detectors to compare; repeat.")
@click.option("--crop", "crops", multiple=True, type=click.Choice(CROPS), default=CROPS, show_default=True)
@click.option("--detector-model", type=click.Path(path_type=Path), default=None,
              help="YuNet .onnx when the first bundle ships none.")
@click.option("--limit", type=click.IntRange(1), default=None, help="First N photos only (a quick look).")
@click.option("--fer2013", "fer2013_dir", type=click.Path(path_type=Path), default=None,
              help="FER2013 folder for the PrivateTest trade-off (default: ../shared/data/fer2013 if present).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results/faces"), show_default=True)
def cli(folder: Path, labels_csv: Optional[Path], bundles: tuple[str, ...], detectors: tuple[str, ...],
        crops: tuple[str, ...], detector_model: Optional[Path], limit: Optional[int], fer2013_dir: Optional[Path],
        out: Path) -> None:
    """Accuracy of each model x detector x crop on a labelled photo folder, in one run."""
    import sys

    from fer_edge.convert.template import load_template

    if not folder.is_dir():
        raise FerEdgeError(f"{folder}: photo folder not found")
    photos = read_labels(folder, labels_csv)[:limit]
    runtime = find_runtime()
    loaded = [(bundle_name(b), load_bundle(b)) for b in bundles]
    classes = loaded[0][1].classes
    if any(b.classes != classes for _, b in loaded):
        raise FerEdgeError("the bundles compared must share one class list")
    landmarks = load_template()
    models = [ModelPath(name, b, landmarks, runtime) for name, b in loaded]
    # As fer-device run does for photos: each detector's own defaults, searched whole, padded once if no face.
    dets = {d: StillDetector(make_detector(d, loaded[0][1], detector_model if d == "yunet" else None, None,
                                           threads=1, runtime=runtime)) for d in detectors}
    t0 = time.perf_counter()
    probs, labels, heights = run(photos, models, dets, crops)
    rows = []
    for key, p in probs.items():
        model, det, crop = key.split("|")
        rows.append({"model": model, "detector": det, "crop": crop, **score(labels, p, classes)})
    device_crop = {m.name: m.bundle.spec.crop for m in models}
    first_det = next(iter(dets), None)
    table = {f"{m.name} ({first_det}, {device_crop[m.name]} crop)": tradeoff(labels, probs[f"{m.name}|{first_det}|"
                                                                                       f"{device_crop[m.name]}"])
             for m in models if first_det and device_crop[m.name] in crops}
    result = {"folder": str(folder), "photos": len(photos), "classes": list(classes), "runtime": str(runtime),
              "machine": cpu_facts()["model"], "seconds": round(time.perf_counter() - t0, 1),
              "command": "fer-bench " + " ".join(sys.argv[1:]),
              "face_height_px": {d: {"median": float(np.median(h)) if h else None} for d, h in heights.items()},
              "rows": rows, "tradeoff": table}
    fer2013_dir = fer2013_dir or DEFAULT_FOLDER.parent / "fer2013"
    if fer2013_dir.exists():
        result["privatetest"] = {m.name: test_split_tradeoff(m.bundle, fer2013_dir, runtime) for m in models}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "faces.json", json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    write_atomic(out / "faces.md", md)
    click.echo(md)
    click.echo(f"written: {out / 'faces.json'}, {out / 'faces.md'}")


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
