"""The deployment bundle: one folder that holds everything the device needs.

Layout (every file but the manifest is listed in it with its SHA-256)::

    manifest.json        format, version, files + checksums, model facts, versions, accuracy
    emotion.tflite       the emotion model (int8 by default)
    labels.txt           class names, one per line, in output order
    preprocess.json      the contract's PreprocessSpec (size, crop margin, normalisation)
    detector-yunet.onnx  YuNet-n face detector (libfacedetection.train, Apache-2.0)
    LICENSE-detector-yunet.txt  its licence
    detector.tflite      BlazeFace short-range (MediaPipe, Apache-2.0)
    LICENSE-detector.txt its licence
    accuracy.json/.md    the conversion's accuracy report

The manifest lists the face detectors under ``detectors``, the default first;
each entry records its ``kind`` (the ``fer-device run --detector`` name),
``file``, ``license``, ``license_file``, ``sha256`` and where it came from.
Bundles written before that list existed carry one BlazeFace entry under
``detector``; `Bundle.detectors` reads both, so they keep working.

`load_bundle` refuses a bundle with a missing file, a checksum mismatch or an
unknown format version, naming the file, so a half-copied or edited bundle
never runs silently. A ``.tar.gz`` of the folder loads the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from fer_edge.errors import FerEdgeError
from fer_edge.labels import validate_classes
from fer_edge.preprocess import PreprocessSpec

BUNDLE_FORMAT = "fer-edge-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "emotion.tflite"
LABELS_FILE = "labels.txt"
SPEC_FILE = "preprocess.json"
DETECTOR_FILE = "detector.tflite"


@dataclass(frozen=True)
class DetectorEntry:
    """One face detector a bundle ships: what to build it with and under which licence.

    `kind` is the detector's name in ``fer-device run --detector`` (``yunet``,
    ``blazeface``); `model` names the variant (``yunet-s``,
    ``blazeface-short-range``).
    """

    kind: str
    file: str
    model: str = ""
    license: str = ""
    license_file: str = ""
    source: str = ""
    extra: tuple[tuple[str, Any], ...] = ()

    def to_manifest(self, sha256: str) -> dict[str, Any]:
        entry = {"kind": self.kind, "model": self.model, "file": self.file, "sha256": sha256,
                 "license": self.license, "license_file": self.license_file, "source": self.source}
        entry.update(self.extra)
        return {k: v for k, v in entry.items() if v != ""}


def _detector_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's detectors, default first; a pre-list bundle's single BlazeFace read as a one-item list."""
    listed = manifest.get("detectors")
    if isinstance(listed, list):
        return [dict(d) for d in listed if isinstance(d, dict) and d.get("file") and d.get("kind")]
    legacy = manifest.get("detector")
    if isinstance(legacy, dict) and legacy.get("file"):
        old_kind = str(legacy.get("kind") or "blazeface-short-range")
        return [{**legacy, "kind": "blazeface", "model": old_kind,
                 "license_file": legacy.get("license_file", "LICENSE-detector.txt")}]
    return []


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: paths to its models plus the contract it was built with."""

    root: Path
    manifest: dict[str, Any]
    classes: tuple[str, ...]
    spec: PreprocessSpec

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest["model"]["file"]

    @property
    def detectors(self) -> list[dict[str, Any]]:
        """Manifest entries of the shipped face detectors, the default first (see the module docstring)."""
        return _detector_entries(self.manifest)

    @property
    def default_detector(self) -> Optional[str]:
        """The kind of the bundle's default detector (its first), or None if it ships none."""
        entries = self.detectors
        return entries[0]["kind"] if entries else None

    def detector_file(self, kind: str) -> Optional[Path]:
        """The model file of the shipped detector of `kind`, or None if the bundle has none."""
        for entry in self.detectors:
            if entry["kind"] == kind:
                return self.root / entry["file"]
        return None

    @property
    def detector_path(self) -> Optional[Path]:
        """The BlazeFace model file (kept for callers written before bundles held several detectors)."""
        return self.detector_file("blazeface")

    @property
    def checksum(self) -> str:
        """SHA-256 of the manifest, which pins every file's checksum: one id for the whole bundle."""
        return sha256_of(self.root / MANIFEST)


#: The bundles shipped inside the package, by name (``--bundle fer2013``): each holds a model trained
#: on that label set. The default is the one more accurate through the device path on real photos
#: (docs/models-and-crops.md).
SHIPPED_BUNDLES: tuple[str, ...] = ("ferplus", "fer2013")
DEFAULT_BUNDLE = "ferplus"


def package_data_dir() -> Path:
    """The package's data folder: the shipped bundles (``bundles/NAME``), licence texts, the landmark template."""
    return Path(__file__).resolve().parent / "data"


def shipped_bundle_path(name: str) -> Path:
    """The folder of the shipped bundle `name` (one of `SHIPPED_BUNDLES`)."""
    return package_data_dir() / "bundles" / name


def default_bundle_path() -> Path:
    """The default bundle shipped inside the package, so `fer-device` works right after install."""
    return shipped_bundle_path(DEFAULT_BUNDLE)


def resolve_bundle(path: Path | str | None) -> Path:
    """A ``--bundle`` value as a path: None is the default, a shipped name its folder, anything else a path.

    An existing file or folder of that name wins over a shipped name, so a
    user's own ``./ferplus`` bundle is never shadowed.
    """
    if path is None:
        return default_bundle_path()
    if str(path) in SHIPPED_BUNDLES and not Path(path).exists():
        return shipped_bundle_path(str(path))
    return Path(path)


def write_bundle(
    out_dir: Path,
    model: Path,
    classes: tuple[str, ...] | list[str],
    spec: PreprocessSpec,
    model_info: dict[str, Any],
    detector: Optional[Path] = None,
    detector_info: Optional[dict[str, Any]] = None,
    detectors: Sequence[tuple[Path, DetectorEntry]] = (),
    extra_files: Optional[dict[str, Path | str | bytes]] = None,
    extra_manifest: Optional[dict[str, Any]] = None,
    archive: bool = False,
) -> Path:
    """Write a bundle folder atomically (built beside `out_dir`, then renamed into place).

    `detectors` are (source file, entry) pairs, the default first; each file
    is copied in as ``entry.file`` and listed under ``detectors`` with its
    SHA-256. `detector`/`detector_info` write the older single-BlazeFace
    ``detector`` entry instead. `extra_files` maps a bundle file name to a
    source path, text or bytes (licences, reports). Returns the folder, or the
    ``.tar.gz`` when `archive`.
    """
    classes = validate_classes(classes)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        shutil.copyfile(model, tmp / MODEL_FILE)
        (tmp / LABELS_FILE).write_text("\n".join(classes) + "\n", encoding="utf-8")
        (tmp / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "classes": list(classes),
            "labels": LABELS_FILE,
            "preprocess": SPEC_FILE,
            "model": {"file": MODEL_FILE, **model_info},
        }
        if detector is not None:
            shutil.copyfile(detector, tmp / DETECTOR_FILE)
            manifest["detector"] = {"file": DETECTOR_FILE, **(detector_info or {})}
        if detectors:
            entries = []
            for source, entry in detectors:
                if Path(entry.file).name != entry.file:
                    raise FerEdgeError(f"detector file name {entry.file!r} must be a plain file name")
                shutil.copyfile(source, tmp / entry.file)
                entries.append(entry.to_manifest(sha256_of(tmp / entry.file)))
            manifest["detectors"] = entries
        for name, content in (extra_files or {}).items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            elif isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                target.write_text(content, encoding="utf-8")
        manifest.update(extra_manifest or {})
        manifest["files"] = {p.name: sha256_of(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not archive:
        return out_dir
    tar_path = out_dir.with_name(out_dir.name + ".tar.gz")
    tmp_tar = tar_path.with_name("." + tar_path.name + ".tmp")
    with tarfile.open(tmp_tar, "w:gz") as tar:
        tar.add(out_dir, arcname=out_dir.name)
    os.replace(tmp_tar, tar_path)
    return tar_path


def _extract_archive(path: Path) -> Path:
    """Unpack a bundle archive into a private temporary folder, refusing unsafe member paths."""
    target = Path(tempfile.mkdtemp(prefix="fer-edge-bundle-"))
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                if member.issym() or member.islnk() or Path(member.name).is_absolute() or ".." in Path(member.name).parts:
                    raise FerEdgeError(f"{path}: unsafe archive member {member.name}")
            tar.extractall(target)
    except (tarfile.TarError, OSError) as exc:
        # tarfile's "r:*" lists one reason per compression it tried; the first line says enough.
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        raise FerEdgeError(f"{path}: not a readable bundle archive ({reason})") from None
    manifests = list(target.rglob(MANIFEST))
    if len(manifests) != 1:
        raise FerEdgeError(f"{path}: archive must hold exactly one {MANIFEST}")
    return manifests[0].parent


def load_bundle(path: Path | str | None = None, verify: bool = True) -> Bundle:
    """Open and verify a bundle folder, archive or shipped name (default: the package's default bundle)."""
    root = resolve_bundle(path)
    if not root.exists():
        raise FerEdgeError(f"{root}: bundle not found")
    if root.is_file():
        root = _extract_archive(root)
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise FerEdgeError(f"{manifest_path}: missing, not a fer-edge bundle")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FerEdgeError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise FerEdgeError(f"{manifest_path}: not a {BUNDLE_FORMAT} manifest")
    if manifest.get("version") != BUNDLE_VERSION:
        raise FerEdgeError(f"{manifest_path}: unknown bundle version {manifest.get('version')!r} "
                           f"(this fer-edge reads version {BUNDLE_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise FerEdgeError(f"{manifest_path}: no file list")
    for name in (manifest["model"]["file"], manifest.get("labels", LABELS_FILE), manifest.get("preprocess", SPEC_FILE)):
        if name not in files:
            raise FerEdgeError(f"{manifest_path}: {name} is not listed in files")
    for entry in _detector_entries(manifest):
        if entry["file"] not in files:
            raise FerEdgeError(f"{manifest_path}: detector file {entry['file']} is not listed in files")
    if verify:
        for name, expected in files.items():
            file_path = root / name
            if Path(name).name != name:
                raise FerEdgeError(f"{manifest_path}: bad file name {name!r}")
            if not file_path.is_file():
                raise FerEdgeError(f"{file_path}: missing from the bundle")
            if sha256_of(file_path) != expected:
                raise FerEdgeError(f"{file_path}: checksum mismatch (file changed since the bundle was built)")
    label_lines = (root / manifest.get("labels", LABELS_FILE)).read_text(encoding="utf-8").splitlines()
    try:
        classes = validate_classes(label_lines)
    except ValueError as exc:
        raise FerEdgeError(f"{root / LABELS_FILE}: {exc}") from None
    if list(classes) != list(manifest.get("classes", classes)):
        raise FerEdgeError(f"{root / LABELS_FILE}: class names disagree with {MANIFEST}")
    spec = PreprocessSpec.from_dict(json.loads((root / manifest.get("preprocess", SPEC_FILE)).read_text(encoding="utf-8")))
    return Bundle(root=root, manifest=manifest, classes=classes, spec=spec)
