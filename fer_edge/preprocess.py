"""Face preprocessing shared by training and the device: crop, grayscale, resize, normalise, quantise.

Both sides call these functions, so a face reaches the model the same way in
`fer-train`, in `fer-convert`'s accuracy check and in `fer-device run`.
Only numpy and OpenCV are used: the device has no TensorFlow.

The normalisation is affine (``x = pixel * scale + offset``). Because pixels are
uint8, any affine normalisation followed by the model's input quantisation is a
function of 256 values, so `InputEncoder` precomputes it once as a lookup table
and the per-frame path is a single ``np.take`` into the interpreter's buffer.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

INPUT_SIZE = 48


@dataclass(frozen=True)
class PreprocessSpec:
    """How a face becomes a model input; stored in the bundle next to the model.

    `crop_margin` widens the detector's box (by that fraction of its larger
    side) because FER2013 faces include forehead and chin, while face detectors
    box the face tightly.
    """

    size: int = INPUT_SIZE
    crop_margin: float = 0.25
    scale: float = 1.0 / 255.0
    offset: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        known = {k: data[k] for k in ("size", "crop_margin", "scale", "offset") if k in data}
        spec = cls(**known)
        if spec.size < 8 or spec.scale <= 0:
            raise ValueError(f"unusable preprocessing spec: {data}")
        return spec


DEFAULT_SPEC = PreprocessSpec()


def spec_beside(model_path: Path) -> PreprocessSpec:
    """The spec fer-train recorded next to a model (its run's preprocess.json), else the default.

    A model must be fed as it was trained, so every tool that scores a model
    from a run folder reads the spec from there rather than assuming one.
    """
    spec_path = Path(model_path).parent / "preprocess.json"
    if not spec_path.exists():
        return DEFAULT_SPEC
    return PreprocessSpec.from_dict(json.loads(spec_path.read_text(encoding="utf-8")))


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grayscale view or copy of `image` (gray, BGR or BGRA)."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")
    if gray.dtype != np.uint8:
        if np.issubdtype(gray.dtype, np.floating) and gray.max(initial=0) <= 1.0:
            gray = gray * 255.0
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return gray


def resize_face(gray: np.ndarray, size: int = INPUT_SIZE, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Resize a grayscale face to `size` x `size`, area-averaging when shrinking.

    Area interpolation avoids the aliasing a bilinear shrink of a large face
    would add, which the 48x48 training faces never had.
    """
    h, w = gray.shape[:2]
    if (h, w) == (size, size):
        if out is None:
            return np.ascontiguousarray(gray)
        out[...] = gray
        return out
    # INTER_LINEAR_EXACT, not INTER_LINEAR: OpenCV's fast bilinear path for uint8
    # rounds differently on x86-64 and aarch64; the exact one agrees bit for bit.
    interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR_EXACT
    if out is None:
        return cv2.resize(gray, (size, size), interpolation=interp)
    cv2.resize(gray, (size, size), dst=out, interpolation=interp)
    return out


def square_box(box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int, int]:
    """Grow an (x0, y0, x1, y1) box into a square around its centre, widened by `margin`.

    A square crop keeps the face's aspect ratio through the resize to 48x48.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half = side / 2.0
    return (int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))


def crop_face(
    gray: np.ndarray,
    box: tuple[float, float, float, float],
    spec: PreprocessSpec = DEFAULT_SPEC,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Cut the face in `box` out of a grayscale frame and resize it to the model's size.

    Inside the frame the crop is a view, so the only work is the resize into
    `out`. A box that leaves the frame is padded by replicating the border, as
    a face at the image edge still has to produce a square input.
    """
    sx0, sy0, sx1, sy1 = square_box(box, spec.crop_margin)
    h, w = gray.shape[:2]
    if sx1 <= sx0 or sy1 <= sy0:
        raise ValueError(f"empty face box {box}")
    if sx0 >= 0 and sy0 >= 0 and sx1 <= w and sy1 <= h:
        region = gray[sy0:sy1, sx0:sx1]
    else:
        cx0, cy0, cx1, cy1 = max(sx0, 0), max(sy0, 0), min(sx1, w), min(sy1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            raise ValueError(f"face box {box} lies outside the {w}x{h} frame")
        region = cv2.copyMakeBorder(
            gray[cy0:cy1, cx0:cx1],
            cy0 - sy0, sy1 - cy1, cx0 - sx0, sx1 - cx1,
            cv2.BORDER_REPLICATE,
        )
    return resize_face(region, spec.size, out)


def prepare_face(image: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> np.ndarray:
    """A whole image that *is* a face (a dataset sample) as a `size` x `size` uint8 array."""
    return resize_face(to_gray(image), spec.size)


def normalize(faces: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> np.ndarray:
    """uint8 faces -> float32 model input (``pixel * scale + offset``), adding a channel axis.

    Accepts (H, W), (N, H, W) or already channelled arrays and returns
    (..., H, W, 1) float32, the layout the Keras model and TFLite take. It reads
    the same lookup table as `InputEncoder`, so training and the device agree
    to the last bit.
    """
    x = np.take(_float_table(spec), faces)
    if x.shape[-1] != 1:
        x = x[..., None]
    return x


@functools.lru_cache(maxsize=8)
def _float_table(spec: PreprocessSpec) -> np.ndarray:
    return (np.arange(256, dtype=np.float64) * spec.scale + spec.offset).astype(np.float32)


class InputEncoder:
    """Maps uint8 faces straight to a model's input dtype with a 256-entry lookup table.

    For a float model the table holds the normalised values; for an int8/uint8
    model it holds ``round(normalised / q_scale) + q_zero`` clipped to the dtype,
    exactly what a quantising calibration expects. Built once per model; per
    face only ``np.take`` runs, writing into a caller-owned buffer.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        dtype: np.dtype | type,
        quant_scale: float = 0.0,
        quant_zero_point: int = 0,
    ) -> None:
        self.spec = spec
        self.dtype = np.dtype(dtype)
        values = np.arange(256, dtype=np.float64) * spec.scale + spec.offset
        if self.dtype == np.float32:
            table = _float_table(spec)
        elif self.dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            if quant_scale <= 0:
                raise ValueError(f"a quantised {self.dtype} input needs a positive scale, got {quant_scale}")
            info = np.iinfo(self.dtype)
            q = np.round(values / quant_scale) + quant_zero_point
            table = np.clip(q, info.min, info.max).astype(self.dtype)
        else:
            raise ValueError(f"unsupported model input dtype {self.dtype} (expected float32, int8 or uint8)")
        self.table = table

    def encode(self, faces: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Encode uint8 faces of any shape; `out` (same element count) is filled in place."""
        if faces.dtype != np.uint8:
            raise ValueError(f"faces must be uint8, got {faces.dtype}")
        if out is None:
            return np.take(self.table, faces)
        np.take(self.table, faces.reshape(out.shape), out=out)
        return out


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer model outputs back to real numbers; float outputs pass through."""
    if np.issubdtype(values.dtype, np.floating) or scale == 0:
        return values.astype(np.float32, copy=False)
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
