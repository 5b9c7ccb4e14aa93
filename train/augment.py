"""Training-time augmentation on uint8 face batches, in numpy and OpenCV.

It runs in the input pipeline (a Keras `PyDataset` feeding `fit`), not inside
the model: the exported model stays the bare inference graph, and OpenCV's
`warpAffine` on a 48x48 face costs microseconds, so augmentation never becomes
the bottleneck on a 2-core workstation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges for each random transform; `enabled=False` passes faces through."""

    enabled: bool = True
    flip: bool = True
    rotate_deg: float = 12.0
    shift: float = 0.10  # fraction of the side
    zoom: float = 0.12  # scale in [1 - zoom, 1 + zoom]
    brightness: float = 0.25  # additive, fraction of 255
    contrast: float = 0.3  # multiplicative around the mean, in [1 - c, 1 + c]
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.15)

    def scaled(self, strength: float) -> "AugmentConfig":
        """The same transforms with every geometric and photometric range times ``strength``.

        Augmentation is the student's main regulariser, and its strength is
        the dial: milder copies look more like the clean faces it is scored on
        (the FixRes argument, Touvron et al., 2019), harder ones show it more
        of what a face can look like. Which way helps is an experiment, not a
        rule (README: fer2013-mild16, where milder views scored lower). The
        erasing probability has its own knob and is left alone; flips keep
        their meaning, a mirrored face shows the same emotion.
        """
        if strength < 0:
            raise ValueError(f"augmentation strength must be >= 0, not {strength}")
        return replace(self, rotate_deg=self.rotate_deg * strength, shift=self.shift * strength,
                       zoom=self.zoom * strength, brightness=self.brightness * strength,
                       contrast=self.contrast * strength)


def _warp(face: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Resample one face through the 2x3 affine map ``m``: bilinear, with a reflected border.

    Both the random training warps and the fixed test-time ones go through
    here, so a TTA copy is resampled exactly as the training copies were.
    """
    h, w = face.shape
    return cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def augment_batch(faces: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Return a randomly transformed float32 copy of a (N, H, W) uint8 batch, still in 0-255."""
    n, h, w = faces.shape
    out = np.empty((n, h, w), np.float32)
    if not cfg.enabled:
        out[...] = faces
        return out
    centre = (w / 2.0, h / 2.0)
    angles = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, n)
    scales = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom, n)
    shifts = rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * (w, h)
    flips = rng.random(n) < 0.5 if cfg.flip else np.zeros(n, bool)
    for i in range(n):
        m = cv2.getRotationMatrix2D(centre, angles[i], scales[i])
        m[:, 2] += shifts[i]
        if flips[i]:  # mirror x: x' = w - 1 - x, folded into the affine map
            m[0] = -m[0]
            m[0, 2] += w - 1
        out[i] = _warp(faces[i], m)
    means = out.mean(axis=(1, 2), keepdims=True)
    contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, (n, 1, 1)).astype(np.float32)
    bright = rng.uniform(-cfg.brightness, cfg.brightness, (n, 1, 1)).astype(np.float32) * 255
    out = (out - means) * contrast + means + bright
    np.clip(out, 0, 255, out=out)
    if cfg.erase_prob > 0:
        for i in np.flatnonzero(rng.random(n) < cfg.erase_prob):
            area = rng.uniform(*cfg.erase_area) * h * w
            aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
            eh = int(min(h, max(1, round(np.sqrt(area * aspect)))))
            ew = int(min(w, max(1, round(np.sqrt(area / aspect)))))
            y, x = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
            out[i, y:y + eh, x:x + ew] = rng.uniform(0, 255, (eh, ew))
    return out


def mixup_batch(faces: np.ndarray, rng: np.random.Generator,
                alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend each face of a float (N, H, W) batch with another face of the batch (mixup).

    Returns the blends, each blend's partner index and its weight ``lam`` on
    its own face, drawn from Beta(alpha, alpha) and folded into [0.5, 1] so
    the face keeps the larger share. A teacher labels these blends for the
    student: images it never saw in training, where its reply is graded
    rather than the memorised label it gives a training face.
    """
    n = len(faces)
    partner = rng.permutation(n)
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    lam = np.maximum(lam, 1 - lam)
    w = lam[:, None, None]
    return w * faces + (1 - w) * faces[partner], partner, lam


#: The fixed transforms a teacher or ``fer-train evaluate --tta`` averages over, as
#: (dx, dy, scale): the face as it is, shifted 2 px each way, zoomed by 1.08 and 0.93.
#: These stay inside the training augmentation's ranges, so each copy is
#: a face the models learned to read.
TTA_TRANSFORMS: tuple[tuple[int, int, float], ...] = (
    (0, 0, 1.0), (2, 0, 1.0), (-2, 0, 1.0), (0, 2, 1.0), (0, -2, 1.0), (0, 0, 1.08), (0, 0, 0.93))


def warp_batch(faces: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    """A (N, H, W) uint8 batch shifted by (dx, dy) pixels and scaled about the centre, still uint8."""
    n, h, w = faces.shape
    if (dx, dy, scale) == (0, 0, 1.0):
        return faces
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 0.0, scale)
    m[:, 2] += (dx, dy)
    out = np.empty_like(faces)
    for i in range(n):
        out[i] = _warp(faces[i], m)
    return out
