"""The built-in demo clip: a real face, moving, with no camera and no video file.

``fer-device run --source demo`` plays a short clip made on the fly from the
public-domain astronaut portrait (Eileen Collins, NASA) that the scikit-image
wheel ships as ``skimage/data/astronaut.png``. The camera pans across the
photo, zooms in and out, and the second half is mirrored, so detection,
tracking and smoothing all have something to do. Nothing is stored in this
repository; the photo is found through `importlib` without importing
scikit-image (which would take seconds on a Pi), so only its wheel is needed:
``pip install fer-edge[demo]``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from fer_edge.device.sources import DEFAULT_RESOLUTION, Frame, Source, _GrayBuffer
from fer_edge.errors import FerEdgeError

DEMO_FRAMES = 150
DEMO_FPS = 15.0
#: Where the face is in astronaut.png (512x512): its centre and a view height around it.
_FACE_CENTRE = (225.0, 125.0)


def astronaut_path() -> Path:
    """Path of scikit-image's ``astronaut.png``, found without importing scikit-image."""
    try:
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "astronaut.png"
        if path.is_file():
            return path
    raise FerEdgeError("the demo clip needs the sample photo from scikit-image: pip install fer-edge[demo] "
                       "(or pip install scikit-image)")


def load_astronaut() -> np.ndarray:
    """The astronaut photo as a BGR uint8 array (512x512x3)."""
    path = astronaut_path()
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FerEdgeError(f"{path}: not a readable image")
    return image


def demo_transform(t: float, size: tuple[int, int], photo_side: int = 512) -> np.ndarray:
    """The 2x3 affine matrix (photo -> frame) at time `t` in [0, 1) of the clip.

    The view height goes from the whole photo (zoom 1) to about a third of it
    and back, its centre drifts from the photo's centre to the face and sways
    sideways, and the second half is mirrored left-right.
    """
    width, height = size
    zoom = 1.0 + 1.6 * math.sin(math.pi * t) ** 2  # 1 -> 2.6 -> 1
    pull = (zoom - 1.0) / 1.6  # 0 at zoom 1, 1 at the closest
    cx = (1 - pull) * photo_side / 2 + pull * _FACE_CENTRE[0] + 40.0 * math.sin(4 * math.pi * t)
    cy = (1 - pull) * photo_side / 2 + pull * _FACE_CENTRE[1]
    scale = zoom * height / photo_side
    flip = -1.0 if t >= 0.5 else 1.0
    return np.array([[flip * scale, 0.0, width / 2 - flip * scale * cx],
                     [0.0, scale, height / 2 - scale * cy]], np.float64)


class DemoSource(Source):
    """The demo clip as a source: `frames` frames at `fps`, rendered into one reused buffer.

    With `loop` the clip repeats until stopped (``--loop``, for kiosks and tests).
    """

    def __init__(
        self,
        resolution: tuple[int, int] = DEFAULT_RESOLUTION,
        frames: int = DEMO_FRAMES,
        fps: float = DEMO_FPS,
        loop: bool = False,
        photo: Optional[np.ndarray] = None,
    ) -> None:
        super().__init__()
        self.name = "demo"
        self.photo = load_astronaut() if photo is None else photo
        self.resolution = resolution
        self.frames = frames
        self.fps = fps
        self.loop = loop
        self._image = np.zeros((resolution[1], resolution[0], 3), np.uint8)
        self._gray = _GrayBuffer()
        self._position = 0

    def render(self, position: int) -> np.ndarray:
        """Frame `position` of the clip as BGR (into the reused buffer)."""
        matrix = demo_transform(position / self.frames, self.resolution, self.photo.shape[0])
        return cv2.warpAffine(self.photo, matrix, self.resolution, dst=self._image, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def read(self) -> Optional[Frame]:
        if self._position >= self.frames:
            if not self.loop:
                return None
            self._position = 0
        image = self.render(self._position)
        self._position += 1
        return self._frame(self._gray(image), image)


def write_demo_video(path: Path | str, frames: int = DEMO_FRAMES, resolution: tuple[int, int] = DEFAULT_RESOLUTION,
                     fps: float = DEMO_FPS) -> Path:
    """Write the demo clip (or its first `frames` frames) as a video file, for tests and benchmarks."""
    path = Path(path)
    source = DemoSource(resolution, frames=frames, fps=fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, resolution)
    if not writer.isOpened():
        raise FerEdgeError(f"{path}: cannot write video")
    try:
        while (frame := source.read()) is not None:
            writer.write(frame.image)
    finally:
        writer.release()
    return path
