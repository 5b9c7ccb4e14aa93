"""The device's first steps: verify the bundle, pick a runtime without TensorFlow, load both models."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fer_edge.bundle import default_bundle_path, load_bundle
from fer_edge.device.runtime import TFLiteModel, find_runtime
from fer_edge.errors import FerEdgeError


@pytest.mark.arm64
def test_bundle_verifies_and_a_tflite_only_runtime_is_chosen(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FER_EDGE_RUNTIME", raising=False)
    bundle = load_bundle()
    assert bundle.detector_path is not None and bundle.detector_path.is_file()
    runtime = find_runtime()
    # ai-edge-litert (or tflite-runtime) wins whenever installed; tf.lite is only the last resort.
    assert runtime.name in ("litert", "tflite-runtime")
    model = TFLiteModel(bundle.model_path, threads=1, runtime=runtime)
    assert model.input.shape == (1, bundle.spec.size, bundle.spec.size, 1)
    assert model.input.dtype in (np.int8, np.uint8, np.float32)
    assert model.outputs[0].shape[-1] == len(bundle.classes)

    tampered = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), tampered)
    (tampered / "labels.txt").write_text("\n".join(reversed(bundle.classes)) + "\n")
    with pytest.raises(FerEdgeError, match="checksum mismatch"):
        load_bundle(tampered)


def test_unknown_runtime_is_a_clear_error() -> None:
    with pytest.raises(FerEdgeError, match="unknown TFLite runtime"):
        find_runtime("onnx")
