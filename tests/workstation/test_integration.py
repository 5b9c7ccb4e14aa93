"""Integration tests on the real FER2013 data (skipped with the reason when it is absent).

CI has the data beside the checkout (../shared/data/fer2013, or $FER_EDGE_DATA).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import have_tensorflow, real_data_dir, run_main

DATA = real_data_dir()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (DATA / "fer2013.csv.gz").exists() and not (DATA / "fer2013.csv").exists(),
                       reason=f"real FER2013 data not found at {DATA} (set FER_EDGE_DATA)"),
]


@pytest.fixture(scope="module")
def fer2013():
    from fer_edge.train.data import load_dataset

    return load_dataset(DATA)


def test_real_split_and_class_counts(fer2013):
    """The counts published for FER2013 (and in the data README)."""
    assert len(fer2013) == 35887
    assert fer2013.split("train").class_counts().tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert fer2013.split("PublicTest").class_counts().tolist() == [467, 56, 496, 895, 653, 415, 607]
    assert fer2013.split("PrivateTest").class_counts().tolist() == [491, 55, 528, 879, 594, 416, 626]


def test_real_ferplus_join():
    from fer_edge.train.data import load_dataset

    plus = load_dataset(DATA, labels="ferplus-soft")
    assert 34000 < len(plus) < 35887
    np.testing.assert_allclose(plus.soft.sum(1), 1.0, rtol=1e-5)
    # The majority label always carries the top vote share (ties included).
    np.testing.assert_allclose(plus.soft[np.arange(len(plus)), plus.labels], plus.soft.max(1))


@pytest.mark.parametrize("name, labels, top1", [("fer2013", "fer2013", 0.685), ("ferplus", "ferplus", 0.82)])
def test_shipped_bundles_accuracy_and_calibration_on_private_test(fer2013, name, labels, top1):
    """Each int8 model users get, through the device's TFLite runtime, on PrivateTest of its own label set.

    Shipped: fer2013 69.63%, ferplus 83.01%; both calibrated to ECE <= 0.04 (issue 42's goal).
    """
    from fer_edge.bundle import load_bundle
    from fer_edge.convert.calibrate import reliability
    from fer_edge.convert.check import tflite_probabilities
    from fer_edge.train.data import load_dataset

    bundle = load_bundle(name)
    assert bundle.manifest["model"]["label_set"].startswith(labels)
    data = fer2013 if labels == "fer2013" else load_dataset(DATA, labels=labels)
    test = data.split("PrivateTest")
    probs = tflite_probabilities(bundle.model_path, test.images, bundle.spec, progress=False)
    probs /= probs.sum(1, keepdims=True)
    assert (probs.argmax(1) == test.labels).mean() >= top1
    assert reliability(probs, test.labels)["ece"] <= 0.04


@pytest.mark.skipif(not have_tensorflow(), reason="needs TensorFlow (pip install .[train])")
def test_brief_training_beats_chance(tmp_path, monkeypatch):
    from fer_edge.train.cli import main

    code = run_main(main, ["--out", str(tmp_path), "--name", "brief", "--epochs", "3", "--limit", "6000", "--batch-size", "32", "--lr", "0.02",
                           "--threads", "2"], monkeypatch)
    assert code == 0
    metrics = json.loads((tmp_path / "brief" / "metrics.json").read_text())
    majority = 879 / 3589  # always answering "happy"
    assert metrics["accuracy"] > majority + 0.05
    assert metrics["macro_f1"] > 1 / 7
