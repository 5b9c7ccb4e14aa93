"""Per-face tracking by box overlap, with exponential smoothing of the emotion.

A single frame's emotion is noisy: a blink or a half-formed smile flips the
top class. The tracker matches this frame's faces to last frame's by IoU
(greedy, best overlap first), keeps an id per face, and blends each face's
probabilities with its history::

    smoothed = alpha * current + (1 - alpha) * smoothed_before

With ``alpha = 0.5`` a new expression takes over within two or three frames
while a one-frame glitch moves the label by only half. ``alpha = 1`` (the
``--no-smooth`` flag) reports each frame as it is. A face missing for more
than `max_missed` frames is forgotten; one that comes back gets a new id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from fer_edge.device.boxes import Box, Detection
from fer_edge.labels import UNCERTAIN


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame: what the sinks draw and log.

    `probs` are smoothed (equal to `raw_probs` when smoothing is off); `label`
    and `confidence` are the top smoothed class and its probability, except
    that a face whose top probability is below the tracker's
    `min_confidence` is labelled ``uncertain`` (its probabilities unchanged). Boxes are
    in the detection frame's pixels until the pipeline scales them to the
    display frame.
    """

    track_id: int
    box: Box
    score: float
    label: str
    confidence: float
    probs: tuple[float, ...]
    raw_probs: tuple[float, ...]

    def scale(self, sx: float, sy: float) -> "TrackedFace":
        if sx == 1.0 and sy == 1.0:
            return self
        return TrackedFace(self.track_id, self.box.scale(sx, sy), self.score, self.label, self.confidence,
                           self.probs, self.raw_probs)


class _Track:
    """Mutable state of one live track (private: results are `TrackedFace`)."""

    __slots__ = ("track_id", "box", "probs", "missed")

    def __init__(self, track_id: int, box: Box, probs: np.ndarray) -> None:
        self.track_id = track_id
        self.box = box
        self.probs = probs.astype(np.float32, copy=True)
        self.missed = 0


class Tracker:
    """Assigns stable ids to faces across frames and smooths their probabilities (EMA)."""

    def __init__(
        self,
        classes: Sequence[str],
        alpha: float = 0.5,
        iou_threshold: float = 0.3,
        max_missed: int = 5,
        min_confidence: float = 0.0,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)
        self.classes = tuple(classes)
        self.alpha = float(alpha)
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def smoothing(self) -> bool:
        return self.alpha < 1.0

    def reset(self) -> None:
        """Forget every face, e.g. between unrelated still images."""
        self._tracks.clear()

    def _match(self, boxes: Sequence[Box]) -> list[Optional[_Track]]:
        """For each box, the live track it continues (greedy by IoU), or None for a new face."""
        pairs = sorted(
            ((box.iou(track.box), d, t) for d, box in enumerate(boxes) for t, track in enumerate(self._tracks)),
            key=lambda p: p[0], reverse=True,
        )
        matched: list[Optional[_Track]] = [None] * len(boxes)
        used_tracks: set[int] = set()
        for iou, d, t in pairs:
            if iou < self.iou_threshold:
                break
            if matched[d] is None and t not in used_tracks:
                matched[d] = self._tracks[t]
                used_tracks.add(t)
        return matched

    def __call__(self, detections: Sequence[Detection], probs: np.ndarray) -> tuple[TrackedFace, ...]:
        """Update tracks with this frame's faces (`probs[i]` belongs to `detections[i]`)."""
        boxes = [d.box for d in detections[: len(probs)]]
        matched = self._match(boxes)
        faces = []
        seen: set[int] = set()
        for i, box in enumerate(boxes):
            track = matched[i]
            if track is None:
                track = _Track(self._next_id, box, probs[i])
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.probs *= 1.0 - self.alpha
                track.probs += self.alpha * probs[i]
                track.box = box
                track.missed = 0
            seen.add(track.track_id)
            top = int(np.argmax(track.probs))
            confidence = float(track.probs[top])
            faces.append(TrackedFace(
                track_id=track.track_id, box=box, score=detections[i].score,
                label=self.classes[top] if confidence >= self.min_confidence else UNCERTAIN, confidence=confidence,
                probs=tuple(track.probs.tolist()), raw_probs=tuple(probs[i].tolist()),
            ))
        for track in self._tracks:
            if track.track_id not in seen:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return tuple(faces)
