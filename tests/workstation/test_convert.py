"""fer-convert on a small generated model: every mode, the gate both ways, the bundle, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_edge.bundle import load_bundle
from fer_edge.labels import FER2013_CLASSES
from fer_edge.preprocess import DEFAULT_SPEC, normalize
from helpers import fer_rows, have_tensorflow, run_main, write_fer_csv

pytestmark = pytest.mark.skipif(not have_tensorflow(), reason="needs TensorFlow (pip install .[train])")


def _tiny_model(num_classes: int, size: int = 48):
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1))
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = layers.Flatten()(x)  # keeps position: the generated classes differ by where the square is
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny CNN fitted on learnable generated faces, saved like a fer-train run."""
    import keras

    from fer_edge.train.data import load_fer2013

    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("convert")
    data_path = write_fer_csv(tmp / "fer2013.csv", fer_rows(per_split=35))
    data = load_fer2013(data_path)
    model = _tiny_model(7)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = data.split("train")
    model.fit(normalize(train.images), train.labels, epochs=60, batch_size=35, verbose=0)
    run = tmp / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    (run / "preprocess.json").write_text(json.dumps(DEFAULT_SPEC.to_dict()))
    return run, data_path


def _convert(args, monkeypatch):
    from fer_edge.convert.cli import main

    return run_main(main, args, monkeypatch)


@pytest.mark.parametrize("flag, mode", [("--int8", "int8"), ("--float16", "float16"),
                                        ("--dynamic-range", "dynamic"), ("--float32", "float32")])
def test_each_mode_converts_and_passes_gate(model_dir, tmp_path, monkeypatch, flag, mode):
    run, data = model_dir
    out = tmp_path / "out"
    code = _convert([str(run), flag, "--data", str(data), "--calib-samples", "35", "--out", str(out),
                     "--max-drop", "5"], monkeypatch)
    assert code == 0
    report = json.loads((out / f"report_{mode}.json").read_text())
    assert report["passed"] and report["check"]["samples"] == 35
    assert report["check"]["reference_top1"] > 0.5  # the tiny model really learned the patterns
    assert set(report["check"]["per_class"]) == set(FER2013_CLASSES)
    assert 0.0 <= report["check"]["agreement"] <= 1.0
    assert (out / f"report_{mode}.md").read_text().startswith("# fer-convert accuracy report")
    assert (out / f"emotion_{mode}.tflite").exists() and not list(out.glob(".*"))  # no unchecked or temp files
    bundle = load_bundle(out / "bundle")
    assert bundle.manifest["model"]["mode"] == mode
    assert bundle.manifest["model"]["input"]["dtype"] == ("int8" if mode == "int8" else "float32")
    if mode == "int8":
        assert report["calibration"] == {"samples": 35, "seed": 0, "split": "train"}
        assert bundle.manifest["model"]["output"]["dtype"] == "int8"
        assert bundle.detector_path.stat().st_size > 100_000
        assert "Apache" in (bundle.root / "LICENSE-detector.txt").read_text()
        # YuNet, taken from the packaged bundle, is the default detector, with its licence and checksum.
        assert [d["kind"] for d in bundle.detectors] == ["yunet", "blazeface"]
        assert bundle.detectors[0]["sha256"] == load_bundle().detectors[0]["sha256"]
        assert "Apache License" in (bundle.root / bundle.detectors[0]["license_file"]).read_text()


def test_gate_failure_exits_non_zero_after_report(model_dir, tmp_path, monkeypatch, capsys):
    run, data = model_dir
    out = tmp_path / "out"
    code = _convert([str(run), "--data", str(data), "--calib-samples", "20", "--out", str(out),
                     "--max-drop", "-101", "--no-detector"], monkeypatch)
    assert code == 1
    assert not json.loads((out / "report_int8.json").read_text())["passed"]
    assert not (out / "bundle").exists()
    assert "failed the accuracy gate" in capsys.readouterr().err


def test_int8_model_matches_keras_through_the_device_runtime(model_dir, tmp_path, monkeypatch):
    run, data = model_dir
    out = tmp_path / "out"
    assert _convert([str(run), "--data", str(data), "--calib-samples", "35", "--out", str(out), "--no-bundle",
                     "--split", "test"], monkeypatch) == 0
    report = json.loads((out / "report_int8.json").read_text())
    assert report["split"] == "test" and report["check"]["agreement"] >= 0.9


def test_mirrored_model_with_head_converts_to_int8_and_stays_mirror_invariant(model_dir, tmp_path, monkeypatch):
    from fer_edge.device.runtime import TFLiteModel
    from fer_edge.preprocess import InputEncoder
    from fer_edge.train.model import make_model, with_softmax

    run, data = model_dir
    mirrored = tmp_path / "run"
    mirrored.mkdir()
    with_softmax(make_model(7, stages=((8, 1), (8, 1), (16, 1), (16, 1), (16, 1)), mirror=True, head=24)).save(
        mirrored / "model.keras")
    (mirrored / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    out = tmp_path / "out"
    assert _convert([str(mirrored), "--data", str(data), "--calib-samples", "35", "--out", str(out),
                     "--no-bundle", "--max-drop", "100"], monkeypatch) == 0
    model = TFLiteModel(out / "emotion_int8.tflite")
    assert model.input.dtype == np.int8
    encoder = InputEncoder(DEFAULT_SPEC, model.input.dtype, model.input.scale, model.input.zero_point)
    face = np.random.default_rng(2).integers(0, 256, (1, 48, 48, 1), dtype=np.uint8)
    # Face and mirror swap the two passes; the average is the same, bit for bit.
    np.testing.assert_array_equal(model.run(encoder.encode(face))[0],
                                  model.run(encoder.encode(np.ascontiguousarray(face[:, :, ::-1])))[0])


@pytest.mark.parametrize("shape", [dict(blocks=(0, 0, 1, 2, 0)), dict(fc=24, mirror=True)],
                         ids=["residual", "mirrored-spatial-head"])
def test_residual_and_spatial_head_models_convert_to_int8_and_keep_their_predictions(model_dir, tmp_path,
                                                                                    monkeypatch, shape):
    import keras

    from fer_edge.train.model import make_model, with_softmax

    run, data = model_dir
    residual = tmp_path / "run"
    residual.mkdir()
    keras.utils.set_random_seed(3)
    with_softmax(make_model(7, stages=((8, 1), (8, 1), (16, 1), (16, 1), (16, 1)), **shape)).save(
        residual / "model.keras")
    (residual / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    out = tmp_path / "out"
    assert _convert([str(residual), "--data", str(data), "--calib-samples", "35", "--out", str(out),
                     "--no-bundle", "--max-drop", "100"], monkeypatch) == 0
    from fer_edge.device.runtime import TFLiteModel

    assert TFLiteModel(out / "emotion_int8.tflite").input.dtype == np.int8
    report = json.loads((out / "report_int8.json").read_text())
    # The int8 ADDs (and the flattened head's FULLY_CONNECTED) keep what the float model says, down
    # to its probabilities. An untrained net's probabilities are near-uniform, so its top-1 flips on
    # a rounding step (CI once saw 82.9% agreement) while the largest probability gap stays near
    # 0.002: the gap is the claim.
    assert report["check"]["max_abs_prob_diff"] < 0.02


def test_a_model_over_the_mac_budget_converts_but_is_not_bundled(model_dir, tmp_path, monkeypatch, capsys):
    """A teacher (fer-train --no-mac-budget) may be converted for comparison, never bundled for the device."""
    from fer_edge.train.model import make_model, with_softmax

    run, data = model_dir
    wide = tmp_path / "wide"
    wide.mkdir()
    with_softmax(make_model(7, stages=((64, 1), (128, 1), (192, 1), (320, 1), (512, 1)))).save(wide / "model.keras")
    (wide / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    out = tmp_path / "out"
    assert _convert([str(wide), "--data", str(data), "--out", str(out), "--float32", "--no-detector",
                     "--max-drop", "100"], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {wide / 'model.keras'}: ")
    assert "over the device's 50M budget: not bundled (convert it with --no-bundle)" in err[0]
    assert not (out / "bundle").exists()
    assert _convert([str(wide), "--data", str(data), "--out", str(out), "--float32", "--no-bundle",
                     "--max-drop", "100"], monkeypatch) == 0
    assert (out / "emotion_float32.tflite").is_file()


@pytest.mark.parametrize("case, message", [
    ("missing", "model not found"),
    ("not_keras", "not a Keras model file"),
    ("corrupt", "not a loadable Keras model"),
    ("wrong_input", "model input is (32, 32, 1), expected (48, 48, 1)"),
    ("wrong_output", "model has 3 outputs but 7 classes"),
    ("no_data", "dataset not found"),
    ("empty_calibration", "no samples in split 'train'"),
])
def test_bad_input_is_one_line_and_writes_nothing(model_dir, tmp_path, monkeypatch, capsys, case, message):
    run, data = model_dir
    model = run / "model.keras"
    if case == "missing":
        model = tmp_path / "absent.keras"
    elif case == "not_keras":
        model = tmp_path / "model.h5"
        model.write_bytes(b"x")
    elif case == "corrupt":
        model = tmp_path / "model.keras"
        model.write_bytes(b"not a zip")
    elif case in ("wrong_input", "wrong_output"):
        model = tmp_path / "model.keras"
        _tiny_model(3 if case == "wrong_output" else 7, 32 if case == "wrong_input" else 48).save(model)
        (tmp_path / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    elif case == "no_data":
        data = tmp_path / "nowhere"
    elif case == "empty_calibration":
        data = write_fer_csv(tmp_path / "fer2013.csv", [r for r in fer_rows(per_split=7) if r[2] != "Training"])
    out = tmp_path / "out"
    code = _convert([str(model), "--data", str(data), "--out", str(out), "--no-detector"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_int8_bundle_carries_the_temperature_the_aligned_crop_and_the_calibration_report(model_dir, tmp_path,
                                                                                          monkeypatch):
    """Calibration (issue 42): T fitted on PublicTest, folded in, reported before/after; the aligned crop's spec."""
    run, data = model_dir
    out = tmp_path / "out"
    assert _convert([str(run), "--data", str(data), "--calib-samples", "35", "--out", str(out),
                     "--crop", "aligned", "--keep-roll"], monkeypatch) == 0
    report = json.loads((out / "report_int8.json").read_text())
    scaling = report["temperature_scaling"]
    assert 0.05 <= scaling["temperature"] <= 20 and scaling["fit_split"].startswith("PublicTest")
    assert set(scaling["splits"]) == {"PublicTest (fit)", "PrivateTest"}
    for rows in scaling["splits"].values():
        assert rows["before"]["top1"] == pytest.approx(rows["after"]["top1"], abs=0.06)  # int8 rounding only
        assert {"ece", "nll", "mean_confidence", "bins"} <= set(rows["after"])
    fit = scaling["splits"]["PublicTest (fit)"]
    assert fit["after"]["nll"] <= fit["before"]["nll"] + 0.05  # fitted to lower the NLL it was fitted on
    bundle = load_bundle(out / "bundle")
    assert bundle.manifest["model"]["temperature"] == pytest.approx(scaling["temperature"])
    assert bundle.manifest["model"]["label_set"] == "fer2013"
    assert (bundle.root / scaling["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert "## Calibration" in (bundle.root / "accuracy.md").read_text()
    assert bundle.spec.crop == "aligned" and not bundle.spec.level_eyes and len(bundle.spec.landmarks) == 4


def test_no_calibrate_leaves_the_model_as_trained(model_dir, tmp_path, monkeypatch):
    run, data = model_dir
    out = tmp_path / "out"
    assert _convert([str(run), "--data", str(data), "--calib-samples", "35", "--out", str(out), "--no-calibrate",
                     "--no-detector"], monkeypatch) == 0
    assert "temperature_scaling" not in json.loads((out / "report_int8.json").read_text())
    assert "temperature" not in load_bundle(out / "bundle").manifest["model"]
