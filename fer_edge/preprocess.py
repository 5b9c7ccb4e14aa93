"""Face preprocessing shared by training and the device: crop, grayscale, resize, normalise, quantise.

Both sides call these functions, so a face reaches the model the same way in
`fer-train`, in `fer-convert`'s accuracy check and in `fer-device run`.
Only numpy and OpenCV are used: the device has no TensorFlow.

Two ways to cut a face out of a frame, chosen by the spec's `crop`:

``box`` (`crop_face`)
    the detector's box, squared and widened by `crop_margin`. Each detector
    boxes a face its own way, so the framing follows the detector.
``aligned`` (`FaceAligner`)
    a similarity transform (scale, rotation, shift) that puts four landmarks
    (right eye, left eye, nose tip, mouth centre) where FER2013's faces have
    them on average (`landmarks`, learnt from FER2013 by
    ``python -m fer_edge.convert.template``), so every detector yields
    FER2013's framing. A face without landmarks falls back to the box crop.

The normalisation is affine (``x = pixel * scale + offset``). Because pixels are
uint8, any affine normalisation followed by the model's input quantisation is a
function of 256 values, so `InputEncoder` precomputes it once as a lookup table
and the per-frame path is a single ``np.take`` into the interpreter's buffer.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

INPUT_SIZE = 48
CROPS: tuple[str, ...] = ("box", "aligned")
#: The landmarks an aligned crop matches, in this order: the ones both BlazeFace and YuNet give.
LANDMARKS: tuple[str, ...] = ("right_eye", "left_eye", "nose_tip", "mouth_centre")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a face becomes a model input; stored in the bundle next to the model.

    `crop_margin` widens the detector's box (by that fraction of its larger
    side) because FER2013 faces include forehead and chin, while face detectors
    box the face tightly.

    `crop` is ``box`` or ``aligned``; an aligned spec carries `landmarks`,
    the target (x, y) of the right eye, left eye, nose tip and mouth centre in
    `size` x `size` pixels, and `level_eyes` (rotate so the eyes lie as in the
    target; off = scale and shift only, keeping the head's roll).
    """

    size: int = INPUT_SIZE
    crop_margin: float = 0.25
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    crop: str = "box"
    landmarks: tuple[tuple[float, float], ...] = ()
    level_eyes: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a box-crop spec keeps the four keys it always had."""
        data = asdict(self)
        if self.crop == "box":
            for key in ("crop", "landmarks", "level_eyes"):
                data.pop(key)
        else:
            data["landmarks"] = [list(p) for p in self.landmarks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        known = {k: data[k] for k in ("size", "crop_margin", "scale", "offset", "crop", "level_eyes") if k in data}
        try:
            landmarks = tuple((float(x), float(y)) for x, y in data.get("landmarks", ()))
        except (TypeError, ValueError):
            raise ValueError(f"unusable preprocessing spec (landmarks must be [x, y] pairs): {data}") from None
        spec = cls(**known, landmarks=landmarks)
        if spec.size < 8 or spec.scale <= 0:
            raise ValueError(f"unusable preprocessing spec: {data}")
        if spec.crop not in CROPS:
            raise ValueError(f"unknown crop {spec.crop!r} in preprocessing spec (expected one of {', '.join(CROPS)})")
        if spec.crop == "aligned" and len(spec.landmarks) != len(LANDMARKS):
            raise ValueError(f"an aligned crop needs {len(LANDMARKS)} target landmarks ({', '.join(LANDMARKS)}), "
                             f"got {len(spec.landmarks)}")
        return spec

    def aligned(self, landmarks: Sequence[Sequence[float]], level_eyes: bool = True) -> "PreprocessSpec":
        """This spec with the aligned crop towards `landmarks` (in `size` x `size` pixels)."""
        return replace(self, crop="aligned", landmarks=tuple((float(x), float(y)) for x, y in landmarks),
                       level_eyes=level_eyes)


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
    return _crop_square(gray, square_box(box, spec.crop_margin), spec.size, out, box)


def _crop_square(gray: np.ndarray, square: tuple[int, int, int, int], size: int, out: Optional[np.ndarray],
                 box: Any) -> np.ndarray:
    """Resize the square (x0, y0, x1, y1) of `gray` to `size`, replicating the border outside the frame."""
    sx0, sy0, sx1, sy1 = square
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
    return resize_face(region, size, out)


def face_landmarks(points: Sequence[Sequence[float]], out: Optional[np.ndarray] = None) -> np.ndarray:
    """A detector's landmarks as the four `LANDMARKS`, (4, 2) float64.

    YuNet gives five points (right eye, left eye, nose tip, right and left
    mouth corner): the mouth centre is the corners' mean. BlazeFace gives six
    (right eye, left eye, nose tip, mouth centre, right and left ear): the
    first four are used. "Right" is the person's right, the left of the image.
    """
    n = len(points)
    if n not in (5, 6):
        raise ValueError(f"expected 5 (YuNet) or 6 (BlazeFace) landmarks, got {n}")
    out = np.empty((len(LANDMARKS), 2), np.float64) if out is None else out
    for i in range(3):
        out[i, 0], out[i, 1] = points[i]
    if n == 5:
        out[3, 0] = (points[3][0] + points[4][0]) / 2.0
        out[3, 1] = (points[3][1] + points[4][1]) / 2.0
    else:
        out[3, 0], out[3, 1] = points[3]
    return out


def similarity_transform(src: np.ndarray, dst: np.ndarray, rotate: bool = True,
                         out: Optional[np.ndarray] = None) -> np.ndarray:
    """The least-squares similarity (2x3 matrix) taking points `src` onto `dst` (Umeyama, no reflection).

    With `rotate` off the fit is scale and shift only. Closed form on a
    handful of points: deterministic, unlike a RANSAC estimate.
    """
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    sx, sy = src[:, 0] - ms[0], src[:, 1] - ms[1]
    dx, dy = dst[:, 0] - md[0], dst[:, 1] - md[1]
    norm = float(sx @ sx + sy @ sy)
    if norm <= 1e-9:
        raise ValueError("landmarks coincide: no transform fits them")
    a = float(sx @ dx + sy @ dy) / norm
    b = float(sx @ dy - sy @ dx) / norm if rotate else 0.0
    if not rotate:
        a = float(np.hypot(a, float(sx @ dy - sy @ dx) / norm))
    out = np.empty((2, 3), np.float64) if out is None else out
    out[0, 0], out[0, 1], out[1, 0], out[1, 1] = a, -b, b, a
    out[0, 2] = md[0] - (a * ms[0] - b * ms[1])
    out[1, 2] = md[1] - (b * ms[0] + a * ms[1])
    return out


class FaceAligner:
    """Warps a face into the spec's landmark frame, with the buffers it needs allocated once.

    A large face is first shrunk by area averaging (as `resize_face` does) to
    twice the output size, then warped: a bilinear warp alone would alias
    a big face the way the 48x48 training faces never were. Outside the frame
    the border is replicated, as the box crop does.
    """

    def __init__(self, spec: PreprocessSpec) -> None:
        if spec.crop != "aligned":
            raise ValueError("FaceAligner needs an aligned-crop spec")
        self.spec = spec
        self.target = np.asarray(spec.landmarks, np.float64)
        self._points = np.empty((len(LANDMARKS), 2), np.float64)
        self._matrix = np.empty((2, 3), np.float64)
        self._work = np.empty((2 * spec.size, 2 * spec.size), np.uint8)
        size = float(spec.size)
        self._corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)

    def __call__(self, gray: np.ndarray, points: Sequence[Sequence[float]],
                 out: Optional[np.ndarray] = None) -> np.ndarray:
        """The aligned `size` x `size` face for a detector's landmarks (frame pixels) in `gray`."""
        size = self.spec.size
        if out is None:
            out = np.empty((size, size), np.uint8)
        m = similarity_transform(face_landmarks(points, self._points), self.target, self.spec.level_eyes,
                                 self._matrix)
        zoom = float(np.hypot(m[0, 0], m[1, 0]))  # output pixels per frame pixel
        if zoom < 0.5:
            # Output square back in the frame: its bounding square, area-shrunk into the work buffer.
            inv = cv2.invertAffineTransform(m)
            corners = self._corners @ inv.T
            x0, y0 = np.floor(corners.min(axis=0))
            x1, y1 = np.ceil(corners.max(axis=0))
            side = max(x1 - x0, y1 - y0)
            square = (int(x0), int(y0), int(x0 + side), int(y0 + side))
            _crop_square(gray, square, self._work.shape[0], self._work, points)
            f = self._work.shape[0] / side  # work pixels per frame pixel
            m[0, 2] += m[0, 0] * x0 + m[0, 1] * y0
            m[1, 2] += m[1, 0] * x0 + m[1, 1] * y0
            m[:, :2] /= f
            source = self._work
        else:
            source = gray
        cv2.warpAffine(source, m, (size, size), dst=out, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        return out


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
