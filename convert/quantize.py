"""Keras -> TFLite in four flavours, with full-int8 calibrated on real training faces.

Full-integer (``int8``) is the deployment default: int8 input and output
tensors, every op quantised, calibrated on a class-stratified, seeded sample of
the Training split passed through the contract's preprocessing, with no
augmentation (what the model will see on the device). ``float16``,
``dynamic`` (dynamic-range) and ``float32`` exist so users can compare.
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterator

import numpy as np
from tqdm import tqdm

from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import PreprocessSpec, normalize
from fer_edge.train.data import FaceData

MODES = ("int8", "float16", "dynamic", "float32")
MIN_CALIBRATION = 10
WARN_CALIBRATION = 300


def calibration_faces(data: FaceData, samples: int, seed: int) -> np.ndarray:
    """A class-stratified, seeded sample of the train split (uint8 faces).

    Each class gets a share proportional to its frequency (at least one face),
    so rare classes such as disgust still shape the activation ranges.
    """
    train = data.split("train")
    if samples < MIN_CALIBRATION:
        raise FerEdgeError(f"calibration needs at least {MIN_CALIBRATION} faces, got {samples}")
    if len(train) == 0:
        raise FerEdgeError(f"{data.source}: empty calibration set (no training faces)")
    rng = np.random.default_rng(seed)
    counts = train.class_counts()
    share = np.maximum(1, np.round(counts / counts.sum() * samples)).astype(int)
    picked = []
    for c, n in enumerate(share):
        idx = np.flatnonzero(train.labels == c)
        if len(idx):
            picked.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    order = np.concatenate(picked)
    rng.shuffle(order)
    return train.images[order[:samples]]


def convert_model(model, mode: str, spec: PreprocessSpec, calibration: np.ndarray | None = None) -> bytes:
    """Convert a Keras model that outputs probabilities; returns the .tflite bytes."""
    import tensorflow as tf

    if mode not in MODES:
        raise FerEdgeError(f"unknown conversion mode '{mode}': use one of {', '.join(MODES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise FerEdgeError("full-int8 conversion needs a non-empty calibration set")

        def representative() -> Iterator[list[np.ndarray]]:
            for face in tqdm(calibration, desc="[int8] calibrating", leave=False, mininterval=1.0):
                yield [normalize(face[None], spec)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the temporary SavedModel's signature
        return converter.convert()
