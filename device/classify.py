"""Emotion classification of detected faces, in two timed stages.

`FacePreprocessor` cuts each face out of the grayscale frame with the
contract's crop (the bundle's `preprocess.json` says which: `crop_face` on the
detector's box, or `FaceAligner` on its landmarks) and turns it into the model's input dtype with the
contract's `InputEncoder` (a lookup table), exactly as training and
`fer-convert`'s accuracy check did. `EmotionClassifier` runs the int8 model on
those inputs and returns dequantised class probabilities.

Both own buffers sized for `max_faces` faces, allocated once: several faces in
a frame reuse the same memory every frame. The model takes one face per call
(``[1, 48, 48, 1]``), so faces are run one after another; resizing the
interpreter to the face count would re-allocate its tensors whenever the count
changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from fer_edge.device.boxes import Box, Detection
from fer_edge.device.runtime import Runtime, TensorInfo, TFLiteModel
from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import FaceAligner, InputEncoder, PreprocessSpec, crop_face, dequantize


class FacePreprocessor:
    """Grayscale frame + detections (or bare boxes) -> model inputs, written into preallocated buffers.

    ``__call__`` returns a read-only view of the first ``n`` encoded faces
    (shape ``(n, *model_input_shape)``), valid until the next call. With an
    aligned-crop spec a detection with landmarks is aligned; a bare box or a
    detector without landmarks (Haar) gets the box crop.
    """

    def __init__(self, spec: PreprocessSpec, input_info: TensorInfo, max_faces: int = 5) -> None:
        if max_faces < 1:
            raise FerEdgeError(f"max_faces must be at least 1, got {max_faces}")
        expected = (1, spec.size, spec.size, 1)
        if tuple(input_info.shape) != expected:
            raise FerEdgeError(f"emotion model input is {list(input_info.shape)}, but the bundle's "
                               f"preprocessing makes {list(expected)}")
        self.spec = spec
        self.max_faces = max_faces
        self.encoder = InputEncoder(spec, input_info.dtype, input_info.scale, input_info.zero_point)
        self.aligner = FaceAligner(spec) if spec.crop == "aligned" else None
        self.crops = np.zeros((max_faces, spec.size, spec.size), np.uint8)
        self._inputs = np.zeros((max_faces, *input_info.shape), input_info.dtype)

    def __call__(self, gray: np.ndarray, faces: Sequence[Union[Detection, Box]]) -> np.ndarray:
        """Encode up to `max_faces` faces of `gray` (the frame the detections refer to)."""
        n = min(len(faces), self.max_faces)
        for i in range(n):
            face = faces[i]
            points = getattr(face, "keypoints", ())
            if self.aligner is not None and len(points) >= 5:
                self.aligner(gray, points, out=self.crops[i])
            else:
                box = face.box if isinstance(face, Detection) else face
                crop_face(gray, box.as_tuple(), self.spec, out=self.crops[i])
            self.encoder.encode(self.crops[i], out=self._inputs[i])
        view = self._inputs[:n]
        view.flags.writeable = False
        return view


class EmotionClassifier:
    """The bundle's emotion model: encoded faces in, ``(n, classes)`` float32 probabilities out.

    The model ends in a softmax (the conversion exports it so); int8 outputs
    are dequantised and renormalised to sum to 1, which removes the few
    thousandths that quantisation adds or loses.
    """

    def __init__(
        self,
        model_path: Path | str,
        classes: Sequence[str],
        threads: int = 1,
        runtime: Optional[Runtime] = None,
        max_faces: int = 5,
    ) -> None:
        self.model = TFLiteModel(model_path, threads=threads, runtime=runtime)
        self.classes = tuple(classes)
        self.output = self.model.outputs[0]
        if self.output.shape[-1] != len(self.classes):
            raise FerEdgeError(f"{model_path}: {self.output.shape[-1]} outputs but {len(self.classes)} class names")
        self._probs = np.zeros((max_faces, len(self.classes)), np.float32)

    @property
    def input(self) -> TensorInfo:
        """The model's input tensor, which `FacePreprocessor` needs to encode faces for it."""
        return self.model.input

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for each encoded face: a fresh ``(n, classes)`` array the caller may keep."""
        n = len(inputs)
        probs = self._probs[:n]
        for i in range(n):
            raw = self.model.run(inputs[i])[0]
            probs[i] = dequantize(raw, self.output.scale, self.output.zero_point).reshape(-1)
        np.clip(probs, 0.0, None, out=probs)
        probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-6)
        return probs.copy()
