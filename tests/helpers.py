"""Fixture makers shared by the test folders: generated datasets, CLI runners.

Everything here is generated on the fly, so the suite runs on a fresh machine
without the real data.
"""

from __future__ import annotations

import csv
import gzip
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from fer_edge.labels import FER2013_CLASSES

SPLITS = ("Training", "PublicTest", "PrivateTest")


def pattern_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A learnable synthetic face: noise plus a bright square whose position encodes the class."""
    img = rng.integers(40, 90, (size, size)).astype(np.uint8)
    row, col = divmod(label, 3)
    y, x = 4 + row * 14, 4 + col * 14
    img[y:y + 12, x:x + 12] = 230
    return img


def fer_rows(per_split: int = 14, seed: int = 0, classes: int = 7) -> list[list[str]]:
    """Rows of a tiny FER2013 CSV: every class in every split, `per_split` faces each split."""
    rng = np.random.default_rng(seed)
    rows = []
    for usage in SPLITS:
        for i in range(per_split):
            label = i % classes
            rows.append([str(label), " ".join(map(str, pattern_face(label, rng).ravel())), usage])
    return rows


def write_fer_csv(path: Path, rows: Optional[Iterable[list[str]]] = None,
                  header: tuple[str, ...] = ("emotion", "pixels", "Usage")) -> Path:
    rows = fer_rows() if rows is None else rows
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


FERPLUS_HEADER = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                  "fear", "contempt", "unknown", "NF"]


def write_ferplus_csv(path: Path, votes: list[Optional[list[int]]], usages: list[str]) -> Path:
    """A fer2013new.csv: `None` votes make a dropped (empty image name) row."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FERPLUS_HEADER)
        for i, (v, usage) in enumerate(zip(votes, usages)):
            if v is None:
                writer.writerow([usage, ""] + ["0"] * 10)
            else:
                writer.writerow([usage, f"fer{i:07d}.png"] + [str(x) for x in v])
    return path


def write_image_folders(root: Path, classes: Iterable[str] = ("happy", "sad", "surprise"), per_class: int = 4,
                        size: int = 48, splits: Iterable[str] = ("train", "test"), color: bool = False) -> Path:
    """A Kaggle-style image-folder dataset (PNG files) with learnable faces."""
    import cv2

    rng = np.random.default_rng(1)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                face = cv2.resize(pattern_face(c, rng), (size, size))
                if color:
                    face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
                cv2.imwrite(str(folder / f"{i}.png"), face)
    return root


def run_main(main: Callable[[], None], args: list[str], monkeypatch) -> int:
    """Run a console-script `main()` in-process with argv; returns its exit code."""
    monkeypatch.setattr(sys, "argv", ["prog", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def real_data_dir() -> Path:
    from fer_edge.train.data import default_data_dir

    return default_data_dir()


def have_tensorflow() -> bool:
    try:
        import tensorflow  # noqa: F401
    except Exception:
        return False
    return True


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
