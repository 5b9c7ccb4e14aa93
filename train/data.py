"""Dataset loaders: FER2013 CSV (plain or gzip), FER+ labels, and image-folder datasets.

Every loader returns a `FaceData`: 48x48 uint8 faces that went through the
contract's preprocessing, integer labels, optional soft labels, a split name per
sample and the class list. Bad input raises `FerEdgeError` with a message that
names the file and line (or image) at fault; `skip_bad=True` drops bad rows and
counts them instead.

Splits are named ``train`` / ``val`` / ``test``. FER2013's Usage column maps
Training -> train, PublicTest -> val, PrivateTest -> test, so selection happens
on PublicTest and reporting on PrivateTest, as the literature does.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from fer_edge.errors import FerEdgeError
from fer_edge.labels import FER2013_CLASSES, FERPLUS8_CLASSES, FERPLUS_COLUMNS, validate_classes
from fer_edge.preprocess import DEFAULT_SPEC, PreprocessSpec, prepare_face

USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLIT_ALIASES = {**USAGE_TO_SPLIT, "train": "train", "val": "val", "test": "test",
                 "validation": "val", "training": "train"}
FER2013_HEADER = ["emotion", "pixels", "Usage"]
FERPLUS_HEADER = ["Usage", "Image name", *FERPLUS_COLUMNS, "unknown", "NF"]
PIXELS = 48 * 48
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
DATA_ENV = "FER_EDGE_DATA"


@dataclass
class FaceData:
    """Faces ready for the model, with labels and the split each belongs to."""

    images: np.ndarray  # (N, size, size) uint8
    labels: np.ndarray  # (N,) int64 index into classes
    splits: np.ndarray  # (N,) str: train / val / test
    classes: tuple[str, ...]
    source: str
    checksum: str
    soft: Optional[np.ndarray] = None  # (N, C) float32 label distributions
    # The other labelling's votes per face (--teacher-votes): FER+'s 10 vote counts beside FER2013
    # labels, FER2013's one label (one-hot, 7) beside FER+ labels.
    votes: Optional[np.ndarray] = None
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def split(self, name: str) -> "FaceData":
        """The subset for one split (``train``/``val``/``test`` or a FER2013 Usage name)."""
        key = resolve_split(name)
        mask = self.splits == key
        if not mask.any():
            raise FerEdgeError(f"{self.source}: no samples in split '{name}' (have: {sorted(set(self.splits))})")
        return self.subset(mask)

    def subset(self, keep: np.ndarray) -> "FaceData":
        """The faces that ``keep`` (a boolean mask or an index array) selects, every per-face array alike."""
        return replace(
            self,
            images=self.images[keep],
            labels=self.labels[keep],
            splits=self.splits[keep],
            soft=None if self.soft is None else self.soft[keep],
            votes=None if self.votes is None else self.votes[keep],
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


def resolve_split(name: str) -> str:
    """Accept our split names and FER2013's Usage names alike."""
    try:
        return SPLIT_ALIASES[name]
    except KeyError:
        raise FerEdgeError(
            f"unknown split '{name}': use train/val/test or Training/PublicTest/PrivateTest"
        ) from None


def default_data_dir() -> Path:
    """Where the real data lives: $FER_EDGE_DATA, else ../shared/data/fer2013 from the project root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise FerEdgeError(f"{path}: file not found")
    if path.is_dir():
        raise FerEdgeError(f"{path}: is a folder, expected a CSV file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def _rows(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) after checking the header; wraps I/O and gzip errors."""
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            first = next(reader, None)
            if first is None:
                raise FerEdgeError(f"{path}: empty file, expected header {','.join(header)}")
            if [c.strip() for c in first] != header:
                raise FerEdgeError(
                    f"{path}:1: wrong header {','.join(first)!r}, expected {','.join(header)!r}"
                )
            for row in reader:
                yield reader.line_num, row
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise FerEdgeError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None


def _parse_fer_row(row: list[str], line: int, path: Path) -> tuple[int, np.ndarray, str]:
    if len(row) != 3:
        raise FerEdgeError(f"{path}:{line}: expected 3 fields (emotion,pixels,Usage), got {len(row)}")
    emotion_s, pixels_s, usage = row[0].strip(), row[1], row[2].strip()
    try:
        emotion = int(emotion_s)
    except ValueError:
        raise FerEdgeError(f"{path}:{line}: emotion {emotion_s!r} is not an integer") from None
    if not 0 <= emotion < len(FER2013_CLASSES):
        raise FerEdgeError(f"{path}:{line}: emotion {emotion} out of range 0-{len(FER2013_CLASSES) - 1}")
    if usage not in USAGE_TO_SPLIT:
        raise FerEdgeError(
            f"{path}:{line}: unknown Usage {usage!r} (expected Training, PublicTest or PrivateTest)"
        )
    parts = pixels_s.split()
    if len(parts) != PIXELS:
        raise FerEdgeError(f"{path}:{line}: {len(parts)} pixel values, expected {PIXELS} (48x48)")
    try:
        pixels = np.array(parts, dtype=np.int32)
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise FerEdgeError(f"{path}:{line}: non-numeric pixel value {bad!r}") from None
    if pixels.min() < 0 or pixels.max() > 255:
        raise FerEdgeError(f"{path}:{line}: pixel values must be 0-255, got {pixels.min()}..{pixels.max()}")
    return emotion, pixels.astype(np.uint8).reshape(48, 48), usage


@dataclass
class _BadInput:
    """What an opt-in ``skip_bad`` load dropped; without it the first bad row or file is the error."""

    skip_bad: bool
    skipped: int = 0
    notes: list[str] = field(default_factory=list)  # the first few errors, for the summary line

    def absorb(self, exc: FerEdgeError) -> None:
        """Count `exc` and go on, or re-raise it when skipping was not asked for."""
        if not self.skip_bad:
            raise exc
        self.skipped += 1
        if len(self.notes) < 5:
            self.notes.append(str(exc))


def _read_fer2013(path: Path, bad: _BadInput):
    """Parse the CSV; returns arrays plus the file row index of each sample and the row count."""
    images, labels, usages, rows = [], [], [], []
    n_rows = 0
    for index, (line, row) in enumerate(_rows(path, FER2013_HEADER)):
        n_rows += 1
        try:
            emotion, pixels, usage = _parse_fer_row(row, line, path)
        except FerEdgeError as exc:
            bad.absorb(exc)
            continue
        images.append(pixels)
        labels.append(emotion)
        usages.append(USAGE_TO_SPLIT[usage])
        rows.append(index)
    if not images:
        raise FerEdgeError(f"{path}: no usable rows")
    return (np.stack(images), np.asarray(labels, np.int64), np.asarray(usages),
            np.asarray(rows, np.int64), n_rows)


def load_fer2013(path: Path | str, skip_bad: bool = False, ferplus: Optional[Path | str] = None) -> FaceData:
    """Load ``fer2013.csv`` or ``fer2013.csv.gz`` (header ``emotion,pixels,Usage``).

    With ``ferplus`` (``fer2013new.csv``), each face also carries its row's
    FER+ vote counts in ``votes`` while keeping its FER2013 label: ten people's
    reading of the face, which ``fer-train --teacher-votes`` adds to what the
    teachers say. A row FER+ dropped as not a face gets no votes (zeros).
    """
    path = Path(path)
    bad = _BadInput(skip_bad)
    images, labels, splits, row_index, n_rows = _read_fer2013(path, bad)
    votes = None
    if ferplus is not None:
        per_row = read_ferplus_votes(Path(ferplus), n_rows, path)
        empty = np.zeros(len(FERPLUS_HEADER) - 2, np.float32)
        votes = np.stack([empty if per_row[r] is None else per_row[r] for r in row_index])
    return FaceData(images, labels, splits, FER2013_CLASSES, str(path), sha256_file(path),
                    skipped=bad.skipped, notes=bad.notes, votes=votes)


def read_ferplus_votes(ferplus_path: Path, n_rows: int, fer_path: Path) -> list[Optional[np.ndarray]]:
    """The vote counts of every row of ``fer2013new.csv``, None where FER+ left the image name empty.

    The file must have one row per row of ``fer_path`` (``n_rows``), since
    the two are joined by position.
    """
    votes_rows: list[Optional[np.ndarray]] = []
    for line, row in _rows(ferplus_path, FERPLUS_HEADER):
        if len(row) != len(FERPLUS_HEADER):
            raise FerEdgeError(f"{ferplus_path}:{line}: expected {len(FERPLUS_HEADER)} fields, got {len(row)}")
        if not row[1].strip():
            votes_rows.append(None)
            continue
        try:
            votes = np.array([int(v) for v in row[2:]], dtype=np.float32)
        except ValueError:
            raise FerEdgeError(f"{ferplus_path}:{line}: vote counts must be integers") from None
        if (votes < 0).any():
            raise FerEdgeError(f"{ferplus_path}:{line}: negative vote count")
        votes_rows.append(votes)
    if len(votes_rows) != n_rows:
        raise FerEdgeError(
            f"{ferplus_path}: {len(votes_rows)} rows but {fer_path} has {n_rows}; FER+ must match row by row"
        )
    return votes_rows


def load_ferplus(
    fer_path: Path | str,
    ferplus_path: Path | str,
    soft: bool = False,
    eight_classes: bool = False,
    skip_bad: bool = False,
    votes: bool = False,
) -> FaceData:
    """Join FER+ votes (``fer2013new.csv``) row by row with ``fer2013.csv``.

    Drop rules, as FER+ defines them: rows with an empty image name (not a
    face), and rows whose top vote is ``unknown`` or ``NF``. With 7 classes
    (the default) contempt is dropped: its votes leave the soft labels, and
    rows whose majority is contempt are removed. `labels` always holds the
    majority class; with `soft` the vote distribution is kept in `soft`.
    With `votes`, each face also carries its FER2013 label, one-hot, as the
    one vote of the other labelling (``fer-train --teacher-votes``).
    """
    fer_path, ferplus_path = Path(fer_path), Path(ferplus_path)
    bad = _BadInput(skip_bad)
    images, fer_labels, splits, row_index, n_rows = _read_fer2013(fer_path, bad)
    classes = FERPLUS8_CLASSES if eight_classes else FER2013_CLASSES
    # Column order in the file -> our class index (-1 for contempt in 7-class mode).
    col_to_class = np.array([classes.index(FERPLUS_COLUMNS[c]) if FERPLUS_COLUMNS[c] in classes else -1
                             for c in FERPLUS_COLUMNS])
    votes_rows = read_ferplus_votes(ferplus_path, n_rows, fer_path)
    keep, labels, dists = [], [], []
    dropped = 0
    for i, r in enumerate(row_index):
        row_votes = votes_rows[r]
        if row_votes is None:
            dropped += 1
            continue
        emotion_votes, other = row_votes[:8], row_votes[8:]
        top = int(np.argmax(row_votes))
        if top >= 8:  # unknown or NF won the vote
            dropped += 1
            continue
        cls = int(col_to_class[top])
        if cls < 0:  # contempt in 7-class mode
            dropped += 1
            continue
        dist = np.zeros(len(classes), np.float32)
        np.add.at(dist, col_to_class[col_to_class >= 0], emotion_votes[col_to_class >= 0])
        dist /= dist.sum()
        keep.append(i)
        labels.append(cls)
        dists.append(dist)
    if not keep:
        raise FerEdgeError(f"{ferplus_path}: no rows left after the FER+ drop rules")
    keep_arr = np.asarray(keep)
    reasons = "not a face, unknown or NF" if eight_classes else "not a face, unknown, NF or contempt"
    notes = bad.notes + [f"FER+ dropped {dropped} rows ({reasons})"]
    checksum = hashlib.sha256((sha256_file(fer_path) + sha256_file(ferplus_path)).encode()).hexdigest()
    return FaceData(
        images[keep_arr], np.asarray(labels, np.int64), splits[keep_arr], classes,
        f"{fer_path}+{ferplus_path}", checksum,
        soft=np.stack(dists) if soft else None, skipped=bad.skipped, notes=notes,
        votes=np.eye(len(FER2013_CLASSES), dtype=np.float32)[fer_labels[keep_arr]] if votes else None,
    )


def _read_image(path: Path, spec: PreprocessSpec) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise FerEdgeError(f"{path}: unreadable image")
    return prepare_face(image, spec)


def _folder_split(root: Path, name: str, classes: Optional[tuple[str, ...]], spec: PreprocessSpec,
                  bad: _BadInput, digest) -> tuple[list, list, tuple[str, ...]]:
    folder = root / name
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise FerEdgeError(f"{folder}: no class folders")
    names = tuple(p.name for p in class_dirs)
    if classes is None:
        classes = validate_classes(names)
    images, labels = [], []
    for class_dir in class_dirs:
        if class_dir.name not in classes:
            raise FerEdgeError(f"{class_dir}: class '{class_dir.name}' is not in the train classes {list(classes)}")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FerEdgeError(f"{class_dir}: empty class folder (no images)")
        for path in files:
            try:
                face = _read_image(path, spec)
            except FerEdgeError as exc:
                bad.absorb(exc)
                continue
            digest.update(str(path.relative_to(root)).encode())
            digest.update(face.tobytes())
            images.append(face)
            labels.append(classes.index(class_dir.name))
    return images, labels, classes


def load_image_folders(
    root: Path | str,
    spec: PreprocessSpec = DEFAULT_SPEC,
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad: bool = False,
) -> FaceData:
    """Load the Kaggle layout ``root/train/<class>/*.png`` and ``root/test/<class>/...``.

    Class names come from the train folders (sorted), so any dataset laid out
    this way works, e.g. eINTERFACE's six classes at 128x128; images go through
    the contract's preprocessing. A ``val/`` (or ``validation/``) folder is used
    when present, otherwise `val_fraction` of train is held out per class.
    """
    root = Path(root)
    if not root.is_dir():
        raise FerEdgeError(f"{root}: folder not found")
    if not (root / "train").is_dir():
        raise FerEdgeError(f"{root}: expected a train/ folder with one subfolder per class")
    digest = hashlib.sha256()
    bad = _BadInput(skip_bad)
    images, labels, classes = _folder_split(root, "train", None, spec, bad, digest)
    splits = ["train"] * len(images)
    for folder, split in (("val", "val"), ("validation", "val"), ("test", "test")):
        if (root / folder).is_dir():
            im, lb, _ = _folder_split(root, folder, classes, spec, bad, digest)
            images += im
            labels += lb
            splits += [split] * len(im)
    if not images:
        raise FerEdgeError(f"{root}: no usable images")
    labels_arr = np.asarray(labels, np.int64)
    splits_arr = np.asarray(splits)
    if "val" not in splits and val_fraction > 0:
        rng = np.random.default_rng(seed)
        for c in range(len(classes)):
            idx = np.flatnonzero((labels_arr == c) & (splits_arr == "train"))
            n_val = int(round(len(idx) * val_fraction))
            if len(idx) > 1 and n_val > 0:
                splits_arr[rng.choice(idx, size=min(n_val, len(idx) - 1), replace=False)] = "val"
    return FaceData(np.stack(images), labels_arr, splits_arr, classes, str(root), digest.hexdigest(),
                    skipped=bad.skipped, notes=bad.notes)


def load_dataset(
    path: Path | str,
    labels: str = "fer2013",
    ferplus: Optional[Path | str] = None,
    eight_classes: bool = False,
    skip_bad: bool = False,
    seed: int = 0,
    votes: bool = False,
) -> FaceData:
    """Pick the loader from what `path` is.

    `path` may be a FER2013 CSV (``.csv`` / ``.csv.gz``), a folder holding one
    (and, for FER+, ``fer2013new.csv``), or an image-folder dataset root.
    `labels` is ``fer2013``, ``ferplus`` (majority vote) or ``ferplus-soft``.
    `votes` attaches the other labelling's votes to each face (``load_fer2013``, ``load_ferplus``).
    """
    path = Path(path)
    if labels not in ("fer2013", "ferplus", "ferplus-soft"):
        raise FerEdgeError(f"unknown label set '{labels}': use fer2013, ferplus or ferplus-soft")
    if not path.exists():
        raise FerEdgeError(f"{path}: dataset not found")
    csv_path = path
    if path.is_dir():
        if (path / "train").is_dir():
            if labels != "fer2013" or votes:
                raise FerEdgeError(f"{path}: FER+ labels and votes need fer2013.csv, not an image-folder dataset")
            return load_image_folders(path, seed=seed, skip_bad=skip_bad)
        found = [path / n for n in ("fer2013.csv", "fer2013.csv.gz") if (path / n).exists()]
        if not found:
            raise FerEdgeError(f"{path}: no fer2013.csv(.gz) and no train/ image folders")
        csv_path = found[0]
    ferplus_path = Path(ferplus) if ferplus else csv_path.parent / "fer2013new.csv"
    if labels == "fer2013":
        return load_fer2013(csv_path, skip_bad=skip_bad, ferplus=ferplus_path if votes else None)
    return load_ferplus(csv_path, ferplus_path, soft=labels == "ferplus-soft",
                        eight_classes=eight_classes, skip_bad=skip_bad, votes=votes)
