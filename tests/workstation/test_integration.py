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


def test_shipped_bundle_accuracy_on_private_test(fer2013):
    """The int8 model users get, through the device's TFLite runtime, on PrivateTest."""
    from fer_edge.bundle import load_bundle
    from fer_edge.convert.check import tflite_probabilities

    bundle = load_bundle()
    test = fer2013.split("PrivateTest")
    probs = tflite_probabilities(bundle.model_path, test.images, bundle.spec, progress=False)
    assert (probs.argmax(1) == test.labels).mean() >= 0.685  # shipped model: 69.63% (README)


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
