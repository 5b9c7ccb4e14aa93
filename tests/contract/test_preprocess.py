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
