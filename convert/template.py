"""Learn where FER2013's faces have their landmarks: the target of the aligned crop.

The emotion model learnt FER2013's framing, so the aligned crop should put a
face's eyes, nose and mouth where FER2013 typically has them. This script
finds them on FER2013 itself: each sampled Training face is upscaled
(48 -> 192 px), padded with mid-grey so the detector sees a face in a scene,
and run through a landmark detector (YuNet by default, BlazeFace for
comparison); the landmarks are mapped back to 48x48 pixels and the per-point
median over all faces found is the template::

    python -m fer_edge.convert.template --yunet ../shared/models/yunet/yunet_s_640_640.onnx

writes ``fer_edge/data/landmarks_fer2013.json``, which ``fer-convert --crop
aligned`` puts into the bundle's ``preprocess.json``. It also reports each
point's spread (interquartile range) and, per detector, how far its median
points lie from YuNet's: what "whatever the detector" costs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click
import cv2
import numpy as np
from tqdm import tqdm

import fer_edge
from fer_edge.cli_util import run_cli
from fer_edge.errors import FerEdgeError
from fer_edge.files import write_atomic
from fer_edge.preprocess import LANDMARKS, face_landmarks

UPSCALE = 4
CANVAS = 320
TEMPLATE_FILE = Path(fer_edge.__file__).resolve().parent / "data" / "landmarks_fer2013.json"


def default_template_path() -> Path:
    """The committed template the package ships (the contract's data, beside the bundles)."""
    return TEMPLATE_FILE


def load_template(path: Optional[Path] = None) -> tuple[tuple[float, float], ...]:
    """The four target points (48x48 pixels) of a template file written by this script."""
    path = Path(path or TEMPLATE_FILE)
    if not path.is_file():
        raise FerEdgeError(f"{path}: landmark template not found (python -m fer_edge.convert.template writes it)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple((float(x), float(y)) for x, y in data["landmarks"])


def _canvas(face: np.ndarray) -> tuple[np.ndarray, int]:
    """An upscaled FER2013 face centred on a mid-grey canvas; returns it and the padding."""
    big = cv2.resize(face, (face.shape[1] * UPSCALE, face.shape[0] * UPSCALE), interpolation=cv2.INTER_CUBIC)
    pad = (CANVAS - big.shape[0]) // 2
    return cv2.copyMakeBorder(big, pad, CANVAS - big.shape[0] - pad, pad, CANVAS - big.shape[1] - pad,
                              cv2.BORDER_CONSTANT, value=127), pad


def find_landmarks(faces: np.ndarray, detector, desc: str) -> np.ndarray:
    """(n_found, 4, 2) landmarks in 48x48 pixels of each face the detector finds (its best detection)."""
    found = []
    for face in tqdm(faces, desc=desc, mininterval=1.0):
        canvas, pad = _canvas(face)
        detections = detector(canvas)
        if not detections:
            continue
        points = face_landmarks(detections[0].keypoints)
        found.append((points - pad) / UPSCALE)
    return np.asarray(found, np.float64).reshape(-1, len(LANDMARKS), 2)


def summarise(points: np.ndarray, total: int) -> dict:
    median = np.median(points, axis=0)
    q1, q3 = np.percentile(points, 25, axis=0), np.percentile(points, 75, axis=0)
    return {"found": int(len(points)), "of": int(total),
            "landmarks": np.round(median, 3).tolist(), "iqr": np.round(q3 - q1, 3).tolist()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="fer2013.csv(.gz) (default: ../shared/data/fer2013/fer2013.csv.gz or the usual places).")
@click.option("--yunet", type=click.Path(path_type=Path), required=True, help="YuNet ONNX model (the template's detector).")
@click.option("--blazeface", type=click.Path(path_type=Path), default=None,
              help="BlazeFace .tflite for the comparison (default: the shipped bundle's detector).")
@click.option("--samples", type=click.IntRange(100), default=4000, show_default=True,
              help="Training faces sampled (seeded).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=TEMPLATE_FILE, show_default=True)
def cli(data: Optional[Path], yunet: Path, blazeface: Optional[Path], samples: int, seed: int, out: Path) -> None:
    """Median landmark positions of FER2013 Training faces (48x48 pixels): the aligned crop's target."""
    from fer_edge.device.detect import BlazeFaceDetector, DetectorOptions, YuNetDetector
    from fer_edge.train.data import default_data_dir, load_dataset

    dataset = load_dataset(data or default_data_dir(), labels="fer2013")
    train = dataset.split("train")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(samples, len(train)), replace=False))
    faces = train.images[pick]
    options = DetectorOptions(min_confidence=0.5, min_face=24, max_faces=1)
    result = {"command": "python -m fer_edge.convert.template " + " ".join(sys.argv[1:]),
              "source": f"FER2013 Training, {len(faces)} faces sampled with seed {seed}, upscaled x{UPSCALE} "
                        f"onto a {CANVAS}x{CANVAS} mid-grey canvas",
              "points": list(LANDMARKS), "size": int(train.images.shape[1]), "detectors": {}}
    yunet_points = find_landmarks(faces, YuNetDetector(yunet, options), "yunet")
    if len(yunet_points) < 0.5 * len(faces):
        raise FerEdgeError(f"YuNet found only {len(yunet_points)} of {len(faces)} faces: check the model file")
    result["detectors"]["yunet"] = summarise(yunet_points, len(faces))
    if blazeface is None:
        from fer_edge.bundle import load_bundle

        blazeface = load_bundle().detector_path
    if blazeface is not None:
        blaze_points = find_landmarks(faces, BlazeFaceDetector(blazeface, options), "blazeface")
        if len(blaze_points):
            row = summarise(blaze_points, len(faces))
            row["offset_from_yunet_px"] = np.round(np.hypot(*(np.median(blaze_points, 0)
                                                               - np.median(yunet_points, 0)).T), 3).tolist()
            result["detectors"]["blazeface"] = row
    result["landmarks"] = result["detectors"]["yunet"]["landmarks"]
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    for name, row in result["detectors"].items():
        click.echo(f"{name}: {row['found']}/{row['of']} faces; median " +
                   ", ".join(f"{p} ({x:.2f}, {y:.2f})" for p, (x, y) in zip(LANDMARKS, row["landmarks"])) +
                   (f"; offset from yunet {row['offset_from_yunet_px']} px" if "offset_from_yunet_px" in row else ""))
    click.echo(f"template: {out}")


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
