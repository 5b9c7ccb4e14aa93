"""Temperature scaling: the fit recovers a known temperature, folding it changes no answer, the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from fer_edge.convert.calibrate import (
    calibration_metrics, fit_temperature, logits_from_probs, reliability, softmax,
)
from helpers import have_tensorflow


def _sampled(logits: np.ndarray, temperature: float, seed: int = 0) -> np.ndarray:
    """Labels drawn from softmax(logits / T): a model whose right temperature is exactly T."""
    rng = np.random.default_rng(seed)
    p = softmax(logits, temperature)
    return (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(true_t) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(20_000, 7))
    labels = _sampled(logits, true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_ece_is_small_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(20_000, 7))
    labels = _sampled(logits, 1.0)
    good = calibration_metrics(softmax(logits), labels)
    under = calibration_metrics(softmax(logits, 3.0), labels)  # too flat: confidence below accuracy
    assert good["ece"] < 0.02 and under["ece"] > 0.1
    assert good["nll"] < under["nll"] and good["top1"] == under["top1"]
    rel = reliability(softmax(logits), labels)
    assert sum(rel["count"]) == 20_000 and len(rel["count"]) == 10


@pytest.mark.skipif(not have_tensorflow(), reason="needs TensorFlow (pip install .[train])")
def test_folding_the_temperature_into_a_small_model(tmp_path) -> None:
    """A small Keras model (mirrored views averaged before the softmax, as fer-train builds them)."""
    import keras
    from keras import layers

    from fer_edge.convert.calibrate import fold_temperature, reliability_plot

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, layers.Dense(4, name="logits")(layers.Dense(8, activation="relu")(inner_in)))
    x_in = keras.Input((6,))
    mirror = layers.Dense(6, use_bias=False, trainable=False, name="mirror")
    averaged = layers.Average()([inner(x_in), inner(mirror(x_in))])
    model = keras.Model(x_in, layers.Softmax()(averaged))
    mirror.set_weights([np.eye(6, dtype=np.float32)[::-1]])  # a fixed permutation: reversed features
    x = np.random.default_rng(3).normal(0, 2, size=(5000, 6)).astype(np.float32)
    probs = np.asarray(model.predict_on_batch(x))
    labels = _sampled(logits_from_probs(probs), 0.4, seed=4)  # the model is 2.5x too flat
    t = fit_temperature(logits_from_probs(probs), labels)
    assert t == pytest.approx(0.4, rel=0.08)
    folded = fold_temperature(model, t, x[:256])
    after = np.asarray(folded.predict_on_batch(x))
    assert np.allclose(after, softmax(logits_from_probs(probs), t), atol=1e-4)
    assert (after.argmax(1) == probs.argmax(1)).all()
    assert np.allclose(model.predict_on_batch(x[:5]), probs[:5])  # the original is left as it was
    before_m, after_m = calibration_metrics(probs, labels), calibration_metrics(after, labels)
    assert after_m["ece"] < before_m["ece"] and after_m["nll"] < before_m["nll"]
    png = reliability_plot({"before": before_m, "after": after_m}, "test", tmp_path / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
