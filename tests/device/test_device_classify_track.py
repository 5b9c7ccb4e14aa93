"""Classification through the contract's preprocessing, and tracking with EMA smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from device_fakes import ASTRONAUT_FACE

from fer_edge.device.boxes import Box, Detection
from fer_edge.device.classify import EmotionClassifier, FacePreprocessor
from fer_edge.device.track import Tracker
from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import InputEncoder, crop_face

FACE = Box(*ASTRONAUT_FACE)
CLASSES = ("angry", "happy", "neutral")


@pytest.mark.arm64
def test_classify_the_astronaut(bundle, astronaut_gray) -> None:
    classifier = EmotionClassifier(bundle.model_path, bundle.classes, threads=1)
    preprocess = FacePreprocessor(bundle.spec, classifier.input)
    inputs = preprocess(astronaut_gray, [FACE])
    # Exactly the contract's preprocessing: crop_face, then the lookup-table encoder.
    info = classifier.input
    expected = InputEncoder(bundle.spec, info.dtype, info.scale, info.zero_point).encode(
        crop_face(astronaut_gray, FACE.as_tuple(), bundle.spec))
    np.testing.assert_array_equal(inputs[0].reshape(expected.shape), expected)
    probs = classifier(inputs)
    assert probs.shape == (1, len(bundle.classes))
    assert probs.dtype == np.float32
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert (probs >= 0).all()


def test_several_faces_reuse_the_same_buffers(bundle, astronaut_gray) -> None:
    classifier = EmotionClassifier(bundle.model_path, bundle.classes, max_faces=3)
    preprocess = FacePreprocessor(bundle.spec, classifier.input, max_faces=3)
    boxes = [FACE, FACE.translate(30, 10), FACE.scale(0.5)]
    first = preprocess(astronaut_gray, boxes)
    crops_before = preprocess.crops
    second = preprocess(astronaut_gray, boxes[:2])
    assert first.shape[0] == 3 and second.shape[0] == 2
    assert np.shares_memory(first, second)  # one buffer, reused frame after frame
    assert preprocess.crops is crops_before
    assert not second.flags.writeable
    # More faces than max_faces: the extra ones are left out, not crashed on.
    assert preprocess(astronaut_gray, boxes + [FACE]).shape[0] == 3
    probs = classifier(preprocess(astronaut_gray, boxes))
    assert probs.shape == (3, len(bundle.classes))
    # The face cropped at the same place gives the same answer whatever its slot.
    again = classifier(preprocess(astronaut_gray, [boxes[2], boxes[0]]))
    np.testing.assert_allclose(again[1], probs[0], atol=1e-6)
    assert classifier(preprocess(astronaut_gray, [])).shape == (0, len(bundle.classes))


def test_preprocessor_refuses_a_mismatched_model(bundle) -> None:
    classifier = EmotionClassifier(bundle.model_path, bundle.classes)
    wrong = type(bundle.spec)(size=64)
    with pytest.raises(FerEdgeError, match="preprocessing"):
        FacePreprocessor(wrong, classifier.input)
    with pytest.raises(FerEdgeError, match="class names"):
        EmotionClassifier(bundle.model_path, bundle.classes[:3])


def _det(x: float, y: float = 0.0, side: float = 50.0) -> Detection:
    return Detection(Box(x, y, x + side, y + side), 0.9)


def _p(*values: float) -> np.ndarray:
    return np.array([values], np.float32)


def test_tracker_keeps_ids_while_faces_move() -> None:
    tracker = Tracker(CLASSES, alpha=1.0)
    a, b = tracker([_det(0), _det(200)], np.concatenate([_p(1, 0, 0), _p(0, 1, 0)]))
    assert (a.track_id, b.track_id) == (1, 2)
    # Both move a little and swap order in the detector's list: ids follow the boxes.
    b2, a2 = tracker([_det(210), _det(8)], np.concatenate([_p(0, 1, 0), _p(1, 0, 0)]))
    assert (a2.track_id, b2.track_id) == (1, 2)
    assert a2.label == "angry" and b2.label == "happy"
    # A face far away is a new face.
    (c,) = tracker([_det(400)], _p(0, 0, 1))
    assert c.track_id == 3


def test_ema_smoothing_damps_a_one_frame_glitch() -> None:
    tracker = Tracker(CLASSES, alpha=0.5)
    for _ in range(5):
        (face,) = tracker([_det(0)], _p(0.1, 0.8, 0.1))
    assert face.label == "happy"
    (glitch,) = tracker([_det(2)], _p(0.6, 0.3, 0.1))  # one frame looks angry
    assert glitch.label == "happy"  # smoothed: still happy
    assert glitch.raw_probs[0] == pytest.approx(0.6)
    assert glitch.probs == pytest.approx((0.35, 0.55, 0.1), abs=1e-6)  # 0.5 * new + 0.5 * old
    (steady,) = tracker([_det(4)], _p(0.6, 0.3, 0.1))
    assert steady.label == "angry"  # a lasting change takes over within a frame or two
    assert steady.label == "angry"  # a lasting change takes over within a few frames


def test_no_smooth_reports_each_frame() -> None:
    tracker = Tracker(CLASSES, alpha=1.0)
    tracker([_det(0)], _p(0.1, 0.8, 0.1))
    (face,) = tracker([_det(0)], _p(0.9, 0.05, 0.05))
    assert face.label == "angry"
    assert face.probs == face.raw_probs
    assert not tracker.smoothing


def test_lost_faces_are_forgotten_after_max_missed() -> None:
    tracker = Tracker(CLASSES, alpha=0.5, max_missed=2)
    (face,) = tracker([_det(0)], _p(1, 0, 0))
    tracker([], np.zeros((0, 3), np.float32))
    tracker([], np.zeros((0, 3), np.float32))
    (back,) = tracker([_det(0)], _p(0, 1, 0))  # missed 2 frames: still the same face
    assert back.track_id == face.track_id
    for _ in range(3):
        tracker([], np.zeros((0, 3), np.float32))
    (new,) = tracker([_det(0)], _p(0, 1, 0))
    assert new.track_id != face.track_id
    assert new.probs == new.raw_probs  # a new face starts from its own probabilities
    with pytest.raises(ValueError):
        Tracker(CLASSES, alpha=0.0)
