"""Sources that need no camera: the synthetic workload and in-memory frame lists.

The synthetic workload composes 1..N copies of a real face into frames of any
resolution, so ``fer-bench`` measures detection and classification on faces
the detector actually finds, on any machine. The face is the one the
preprocessing and device tests use: the public-domain astronaut portrait
(Eileen Collins, NASA) that the scikit-image wheel ships (found without
importing scikit-image, see `fer_edge.device.demo.astronaut_path`), or any
face photo given with ``--face-image``.

Frames are rendered once (`distinct` of them, the faces mirrored, brightened or
darkened and nudged a little from frame to frame so the tracker has work) and
then played in a loop. Reading a frame copies it into a reused buffer and
converts it to grayscale, the work an OpenCV capture does per frame, so the
``capture`` stage is small but not zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from fer_edge.device.sources import Frame, Source
from fer_edge.errors import FerEdgeError

#: The astronaut's face in astronaut.png (x0, y0, x1, y1), as BlazeFace boxes it (tests/device/device_fakes.py).
ASTRONAUT_FACE = (176.0, 75.0, 274.0, 173.0)
#: Side of the square tile cut around a face, in face sides: forehead, chin and a little hair.
TILE_CONTEXT = 1.6


def face_tile(image: Optional[np.ndarray] = None, box: Optional[Sequence[float]] = None) -> np.ndarray:
    """A square BGR tile with one face in its middle.

    With no arguments: the astronaut's face. `image` alone is taken to be a
    face photo already (used whole, cut square); with `box` the tile is cut
    around that face box.
    """
    if image is None:
        from fer_edge.device.demo import load_astronaut

        try:
            image, box = load_astronaut(), ASTRONAUT_FACE
        except FerEdgeError as exc:  # e.g. a device install without scikit-image's photo
            raise FerEdgeError(f"{exc}; or give a photo of one face with --face-image") from None
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        return np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * TILE_CONTEXT / 2
    sx0, sy0, sx1, sy1 = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    pad = max(0, -sx0, -sy0, sx1 - w, sy1 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(image[sy0 + pad:sy1 + pad, sx0 + pad:sx1 + pad])


def load_face_image(path: Path | str) -> np.ndarray:
    """A face photo for ``--face-image``: a clear error if it is not a readable image."""
    if not Path(path).is_file():  # checked first: OpenCV would also print its own warning
        raise FerEdgeError(f"{path}: face image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FerEdgeError(f"{path}: not a readable image (--face-image wants a photo of one face)")
    return image


def grid(faces: int, size: tuple[int, int]) -> tuple[int, int, int]:
    """(columns, rows, cell side in pixels) fitting `faces` square cells into a `size` frame, cells as big as can be."""
    if faces < 1:
        raise FerEdgeError(f"faces per frame must be at least 1, got {faces}")
    width, height = size
    best = (1, faces, 0)
    for cols in range(1, faces + 1):
        rows = math.ceil(faces / cols)
        side = int(min(width / cols, height / rows))
        if side > best[2]:
            best = (cols, rows, side)
    return best


def compose_frames(
    size: tuple[int, int],
    faces: int,
    tile: Optional[np.ndarray] = None,
    distinct: int = 24,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[list[tuple[int, int, int, int]]]]:
    """`distinct` BGR frames of `size` with `faces` faces each, and where each tile went.

    Faces sit on a grid of square cells (as large as the frame allows), each
    tile filling 90% of its cell, on a grey gradient with a little noise. From
    frame to frame every tile is nudged by up to 3% of its cell, and mirrored or
    re-lit at random. Returns (frames, tile boxes per frame as x0, y0, x1, y1).
    """
    width, height = size
    if width < 32 or height < 32:
        raise FerEdgeError(f"resolution {width}x{height} is too small for the synthetic workload (at least 32x32)")
    tile = face_tile() if tile is None else tile
    cols, rows, cell = grid(faces, size)
    side = int(cell * 0.9)
    if side < 24:
        raise FerEdgeError(f"{faces} faces do not fit a {width}x{height} frame (each would be {side} pixels)")
    rng = np.random.default_rng(seed)
    base = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA if side < tile.shape[0] else cv2.INTER_LINEAR)
    ramp = np.linspace(70, 150, width, dtype=np.float32)[None, :, None]
    off_x, off_y = (width - cols * cell) // 2, (height - rows * cell) // 2
    frames, boxes = [], []
    for _ in range(distinct):
        canvas = np.clip(ramp + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
        placed = []
        for k in range(faces):
            r, c = divmod(k, cols)
            face = base[:, ::-1] if rng.random() < 0.5 else base
            gain = rng.uniform(0.85, 1.15)
            face = cv2.convertScaleAbs(face, alpha=gain)
            slack = cell - side
            jitter = int(cell * 0.03)
            x = off_x + c * cell + slack // 2 + int(rng.integers(-jitter, jitter + 1))
            y = off_y + r * cell + slack // 2 + int(rng.integers(-jitter, jitter + 1))
            x, y = min(max(x, 0), width - side), min(max(y, 0), height - side)
            canvas[y:y + side, x:x + side] = face
            placed.append((x, y, x + side, y + side))
        frames.append(canvas)
        boxes.append(placed)
    return frames, boxes


class FrameListSource(Source):
    """Frames from memory: `images` (BGR) in a loop, `count` frames in all (once through if None).

    Each read copies the next image into a reused buffer and converts it to
    grayscale, as an OpenCV capture would. Used for the synthetic workload and
    for replaying one decoded video to several pipelines.
    """

    def __init__(self, images: Sequence[np.ndarray], count: Optional[int] = None, name: str = "frames",
                 fps: Optional[float] = None) -> None:
        super().__init__()
        if not images:
            raise FerEdgeError(f"{name}: no frames")
        self.images = list(images)
        self.count = len(self.images) if count is None else count
        self.name = name
        self.fps = fps
        self._image = np.empty_like(self.images[0])
        self._gray = np.empty(self.images[0].shape[:2], np.uint8)
        self._position = 0

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.images[0].shape[:2]
        return w, h

    def read(self) -> Optional[Frame]:
        if self._position >= self.count:
            return None
        src = self.images[self._position % len(self.images)]
        self._position += 1
        if src.shape != self._image.shape:
            self._image = np.empty_like(src)
            self._gray = np.empty(src.shape[:2], np.uint8)
        np.copyto(self._image, src)
        cv2.cvtColor(self._image, cv2.COLOR_BGR2GRAY, dst=self._gray)
        return self._frame(self._gray, self._image)


class SyntheticSource(FrameListSource):
    """The synthetic workload: `faces` faces per frame at `resolution`, `count` frames (endless if None)."""

    def __init__(self, resolution: tuple[int, int], faces: int = 1, count: Optional[int] = None,
                 tile: Optional[np.ndarray] = None, distinct: int = 24, seed: int = 0) -> None:
        frames, self.boxes = compose_frames(resolution, faces, tile, distinct, seed)
        super().__init__(frames, count=count if count is not None else 2**62,
                         name=f"synthetic {resolution[0]}x{resolution[1]}, {faces} face{'s' if faces > 1 else ''}")
        self.faces = faces
        self.resolution = resolution


def read_video(path: Path | str, max_frames: Optional[int] = None) -> tuple[list[np.ndarray], Optional[float]]:
    """Decode a video file into memory (BGR frames) and its frame rate; a clear error if it yields nothing."""
    from fer_edge.device.sources import open_source

    frames = []
    with open_source(str(path)) as source:
        while max_frames is None or len(frames) < max_frames:
            frame = source.read()
            if frame is None:
                break
            frames.append(frame.image.copy())
        fps = source.fps
    if not frames:
        raise FerEdgeError(f"{path}: no frames could be decoded")
    return frames, fps
