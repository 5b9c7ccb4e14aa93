"""Small immutable geometry types shared by every per-frame stage.

A `Box` is four floats in pixels, ``(x0, y0)`` top-left inclusive and
``(x1, y1)`` bottom-right exclusive, so ``width = x1 - x0``. Stages pass boxes
around instead of raw tuples so that nothing ever has to remember whether a
tuple meant ``(x, y, w, h)`` (OpenCV) or ``(x0, y0, x1, y1)`` (everything here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: ``x0 <= x1``, ``y0 <= y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> "Box":
        """Build from OpenCV's ``(x, y, width, height)`` convention."""
        return cls(float(x), float(y), float(x + w), float(y + h))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def iou(self, other: "Box") -> float:
        """Intersection over union, 0.0 for disjoint boxes; used by NMS and the tracker."""
        ix = min(self.x1, other.x1) - max(self.x0, other.x0)
        iy = min(self.y1, other.y1) - max(self.y0, other.y0)
        if ix <= 0 or iy <= 0:
            return 0.0
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scale(self, sx: float, sy: Optional[float] = None) -> "Box":
        """The same box in a resized image (e.g. lores detection frame -> main display frame)."""
        sy = sx if sy is None else sy
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    def translate(self, dx: float, dy: float) -> "Box":
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def clip(self, width: float, height: float) -> "Box":
        """Clamp to an image of `width` x `height`; detectors can overshoot the border."""
        return Box(
            min(max(self.x0, 0.0), width), min(max(self.y0, 0.0), height),
            min(max(self.x1, 0.0), width), min(max(self.y1, 0.0), height),
        )

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``, the form the contract's `crop_face` takes."""
        return (self.x0, self.y0, self.x1, self.y1)

    def as_ints(self) -> tuple[int, int, int, int]:
        """Rounded ``(x0, y0, x1, y1)`` for drawing and logging."""
        return (int(round(self.x0)), int(round(self.y0)), int(round(self.x1)), int(round(self.y1)))


@dataclass(frozen=True)
class Detection:
    """One face found by a detector: its box, a confidence in [0, 1] and optional landmarks.

    `keypoints` are ``(x, y)`` pixel pairs (BlazeFace and YuNet give six and five); Haar gives none.
    """

    box: Box
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()

    def scale(self, sx: float, sy: Optional[float] = None) -> "Detection":
        sy = sx if sy is None else sy
        return Detection(self.box.scale(sx, sy), self.score, tuple((x * sx, y * sy) for x, y in self.keypoints))
