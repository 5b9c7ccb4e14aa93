"""The shared preprocessing: what training feeds the model is what the device feeds it."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.preprocess import (
    DEFAULT_SPEC, InputEncoder, PreprocessSpec, crop_face, dequantize, normalize, prepare_face, square_box, to_gray,
)


def test_to_gray_accepts_gray_bgr_bgra_and_floats():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    assert to_gray(bgr).shape == (10, 12)
    assert to_gray(np.dstack([bgr, np.full((10, 12), 255, np.uint8)])).shape == (10, 12)
    assert to_gray(bgr[:, :, :1]).shape == (10, 12)
    assert to_gray(np.full((4, 4), 0.5)).max() == 127
    with pytest.raises(ValueError):
        to_gray(np.zeros((2, 2, 2), np.uint8))


def test_square_box_grows_around_centre():
    assert square_box((10, 20, 30, 60), 0.0) == (0, 20, 40, 60)
    assert square_box((0, 0, 100, 100), 0.5) == (-25, -25, 125, 125)


def test_crop_inside_is_exact_resize_and_writes_into_buffer():
    frame = np.tile(np.arange(200, dtype=np.uint8), (200, 1))
    out = np.zeros((48, 48), np.uint8)
    result = crop_face(frame, (52, 52, 148, 148), PreprocessSpec(crop_margin=0.0), out=out)
    assert result is out
    expected = prepare_face(frame[52:148, 52:148])
    assert np.array_equal(out, expected)


def test_crop_at_the_edge_pads_by_replication():
    frame = np.full((100, 100), 50, np.uint8)
    face = crop_face(frame, (-20, -20, 40, 40), PreprocessSpec(crop_margin=0.0))
    assert face.shape == (48, 48) and (face == 50).all()
    with pytest.raises(ValueError, match="outside"):
        crop_face(frame, (200, 200, 260, 260), DEFAULT_SPEC)


def test_normalize_adds_channel_and_scales():
    faces = np.array([[[0, 255]]], np.uint8)
    x = normalize(faces)
    assert x.shape == (1, 1, 2, 1) and x.dtype == np.float32
    assert x.ravel().tolist() == [0.0, 1.0]


def test_int8_encoder_matches_the_quantisation_formula():
    spec = DEFAULT_SPEC
    scale, zero = 1 / 255, -128
    enc = InputEncoder(spec, np.int8, scale, zero)
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = np.empty((1, 16, 16, 1), np.int8)
    enc.encode(pixels, out=out)
    expected = np.clip(np.round(normalize(pixels, spec) / scale) + zero, -128, 127).astype(np.int8)
    assert np.array_equal(out[0], expected)
    assert out.min() == -128 and out.max() == 127


def test_float_encoder_equals_normalize():
    enc = InputEncoder(DEFAULT_SPEC, np.float32)
    faces = np.random.default_rng(2).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(enc.encode(faces)[..., None], normalize(faces))


def test_encoder_refuses_unsupported_dtypes():
    with pytest.raises(ValueError, match="unsupported"):
        InputEncoder(DEFAULT_SPEC, np.int16, 0.1, 0)
    with pytest.raises(ValueError, match="positive scale"):
        InputEncoder(DEFAULT_SPEC, np.int8, 0.0, 0)


def test_dequantize():
    q = np.array([-128, 0, 127], np.int8)
    np.testing.assert_allclose(dequantize(q, 1 / 256, -128), [0.0, 0.5, 255 / 256])
    f = np.array([0.25], np.float32)
    assert dequantize(f, 0.0, 0) is f


# --------------------------------------------------------------------------- the aligned crop (issue 42)

import cv2  # noqa: E402

from fer_edge.preprocess import LANDMARKS, FaceAligner, face_landmarks, similarity_transform  # noqa: E402

TEMPLATE = ((14.5, 18.2), (32.6, 18.4), (23.3, 28.4), (23.7, 36.6))  # about FER2013's medians


def _apply(m: np.ndarray, points) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def _placed(scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """The template scaled, rotated about its centre and moved: where a detector would see the points."""
    t = np.asarray(TEMPLATE)
    c = t.mean(axis=0)
    a = np.deg2rad(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (t - c) @ r.T * scale + c * scale + np.asarray(shift)


def _yunet_points(four: np.ndarray) -> list[tuple[float, float]]:
    """Four canonical points as YuNet's five (the mouth centre split into two corners)."""
    re, le, nose, mouth = four
    half = (le - re) * 0.3
    return [tuple(re), tuple(le), tuple(nose), tuple(mouth - half), tuple(mouth + half)]


def test_similarity_transform_identity_rotation_and_scale() -> None:
    t = np.asarray(TEMPLATE)
    assert np.allclose(similarity_transform(t, t), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    src = _placed(3.0, 25.0, (100.0, 40.0))
    m = similarity_transform(src, t)
    assert np.allclose(_apply(m, src), t, atol=1e-6)
    assert np.hypot(m[0, 0], m[1, 0]) == pytest.approx(1 / 3.0)
    assert np.degrees(np.arctan2(m[1, 0], m[0, 0])) == pytest.approx(-25.0)
    level = similarity_transform(src, t, rotate=False)  # scale and shift only: the roll stays
    assert level[0, 1] == 0 and level[1, 0] == 0 and level[0, 0] == pytest.approx(1 / 3.0)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.zeros((4, 2)), t)


def test_face_landmarks_take_yunet_and_blazeface_layouts() -> None:
    yunet = [(10, 20), (30, 20), (20, 30), (14, 40), (26, 42)]
    blaze = [(10, 20), (30, 20), (20, 30), (20, 41), (0, 25), (40, 25)]
    assert face_landmarks(yunet).tolist() == [[10, 20], [30, 20], [20, 30], [20, 41]]
    assert face_landmarks(blaze).tolist() == [[10, 20], [30, 20], [20, 30], [20, 41]]
    with pytest.raises(ValueError, match="5 .YuNet. or 6"):
        face_landmarks([(0, 0)] * 4)


def _dots(shape: tuple[int, int], points, radius: int) -> np.ndarray:
    frame = np.full(shape, 40, np.uint8)
    for x, y in points:
        cv2.circle(frame, (int(round(x * 16)), int(round(y * 16))), radius * 16, 255, -1, cv2.LINE_AA, shift=4)
    return frame


def _bright_spots(face: np.ndarray) -> np.ndarray:
    """Centroid of the bright blob nearest each template point."""
    found = []
    ys, xs = np.nonzero(face > 150)
    for tx, ty in TEMPLATE:
        near = np.hypot(xs - tx, ys - ty) < 4
        found.append((xs[near].mean(), ys[near].mean()))
    return np.asarray(found)


@pytest.mark.parametrize("scale, angle", [(1.0, 0.0), (2.5, 0.0), (6.0, -20.0), (0.8, 30.0)])
def test_aligner_puts_the_landmarks_on_the_template(scale, angle) -> None:
    spec = DEFAULT_SPEC.aligned(TEMPLATE)
    placed = _placed(scale, angle, (60.0, 50.0))
    frame = _dots((480, 640), placed, max(1, round(1.5 * scale)))
    out = np.zeros((48, 48), np.uint8)
    aligner = FaceAligner(spec)
    face = aligner(frame, _yunet_points(placed), out=out)
    assert face is out and face.shape == (48, 48)
    assert np.abs(_bright_spots(face) - np.asarray(TEMPLATE)).max() < 1.0


def test_aligner_keeps_the_roll_when_not_levelling() -> None:
    placed = _placed(3.0, 20.0, (60.0, 50.0))
    frame = _dots((480, 640), placed, 4)
    face = FaceAligner(DEFAULT_SPEC.aligned(TEMPLATE, level_eyes=False))(frame, _yunet_points(placed))
    ys, xs = np.nonzero(face > 150)
    right = xs < 24
    left_eye_y = ys[(~right) & (ys < 26)].mean()
    right_eye_y = ys[right & (ys < 24)].mean()
    assert left_eye_y - right_eye_y > 3  # still tilted by about 20 degrees


def test_aligner_at_the_frame_edge_replicates_the_border() -> None:
    placed = _placed(4.0, 0.0, (-40.0, -50.0))  # part of the face is off the top-left corner
    frame = np.tile(np.arange(200, dtype=np.uint8)[None, :], (150, 1))
    face = FaceAligner(DEFAULT_SPEC.aligned(TEMPLATE))(frame, _yunet_points(placed))
    assert face.shape == (48, 48) and face.dtype == np.uint8
    # Off the left edge the frame's first column (value 0) is replicated.
    assert face[:, 0].max() <= 1


def test_aligned_spec_round_trips_and_box_spec_keeps_its_keys() -> None:
    spec = DEFAULT_SPEC.aligned(TEMPLATE, level_eyes=False)
    data = spec.to_dict()
    assert data["crop"] == "aligned" and data["landmarks"] == [list(p) for p in TEMPLATE]
    assert PreprocessSpec.from_dict(data) == spec
    assert set(DEFAULT_SPEC.to_dict()) == {"size", "crop_margin", "scale", "offset"}
    assert PreprocessSpec.from_dict(DEFAULT_SPEC.to_dict()) == DEFAULT_SPEC
    with pytest.raises(ValueError, match="needs 4 target landmarks"):
        PreprocessSpec.from_dict({**data, "landmarks": data["landmarks"][:3]})
    with pytest.raises(ValueError, match="unknown crop"):
        PreprocessSpec.from_dict({**data, "crop": "oval"})
    assert len(LANDMARKS) == 4
