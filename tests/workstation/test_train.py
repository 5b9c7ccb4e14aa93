"""fer-train end to end on generated data: every output of the run folder, resume, evaluate."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fer_edge.labels import FER2013_CLASSES
from helpers import fer_rows, have_tensorflow, run_main, write_fer_csv

pytestmark = pytest.mark.skipif(not have_tensorflow(), reason="needs TensorFlow (pip install .[train])")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One two-epoch run on a generated FER2013 CSV, shared by the tests below."""
    from fer_edge.train.cli import main

    tmp = tmp_path_factory.mktemp("train")
    data = write_fer_csv(tmp / "fer2013.csv.gz", fer_rows(per_split=21))
    mp = pytest.MonkeyPatch()
    code = run_main(main, ["--data", str(data), "--out", str(tmp / "runs"), "--name", "smoke", "--epochs", "2",
                           "--batch-size", "8", "--seed", "3", "--threads", "2"], mp)
    mp.undo()
    assert code == 0
    return tmp / "runs" / "smoke", data


def test_run_folder_has_every_output(trained_run):
    run, _ = trained_run
    for name in ("config.json", "best.keras", "last.keras", "model.keras", "saved_model/saved_model.pb",
                 "history.csv", "curves.png", "confusion_test.png", "confusion_val.png", "metrics.json",
                 "classes.json", "preprocess.json", "state.json"):
        assert (run / name).exists(), name
    assert not list(run.glob(".*tmp*")), "temporary files left behind"
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])


def test_metrics_json_is_complete(trained_run):
    run, data = trained_run
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"] == "test" and m["samples"] == 21
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    assert set(m["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert {"precision", "recall", "f1", "support"} <= set(m["per_class"]["happy"])
    assert len(m["confusion_matrix"]) == 7 and sum(map(sum, m["confusion_matrix"])) == 21
    assert 0 < m["macs"] <= 50_000_000 and m["params"] > 0
    assert m["command"].startswith("fer-train") and "--epochs 2" in m["command"]
    assert m["versions"]["tensorflow"] and m["versions"]["numpy"]
    from fer_edge.train.data import sha256_file

    assert m["data"]["sha256"] == sha256_file(data)


def test_resume_continues_from_last_checkpoint(trained_run, monkeypatch, capsys):
    from fer_edge.train.cli import main

    run, _ = trained_run
    config = json.loads((run / "config.json").read_text())
    config["train"]["epochs"] = 3
    (run / "config.json").write_text(json.dumps(config))
    # A kill after an epoch's history row but before state.json committed it: --resume redoes that epoch once.
    with open(run / "history.csv", "a") as fh:
        fh.write("2,0.1,2.0,0.1,2.0\n")
    assert run_main(main, ["--resume", str(run)], monkeypatch) == 0
    assert "resuming from epoch 2" in capsys.readouterr().out
    with open(run / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["command"] == config["command"]  # the run's own command; the resume is recorded beside it
    assert metrics["resumed"]["at_epoch"] == 2 and "--resume" in metrics["resumed"]["command"]


def test_a_new_best_is_recorded_before_the_epoch_is_committed(tmp_path, monkeypatch):
    """Killed between best.keras and last.keras: state.json already holds the new best, the epoch uncommitted."""
    import fer_edge.train.fit as fit
    from fer_edge.train.model import make_model

    saved = []

    def save_then_die_on_last(model, path):
        saved.append(path.name)
        if path.name == "last.keras":
            raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(fit, "atomic_save", save_then_die_on_last)
    checkpoints = fit.build_callbacks(tmp_path, fit.TrainConfig(), start_best=0.30)[-1]
    checkpoints.set_model(make_model(7, stages=((4, 1), (4, 1), (4, 1), (4, 1), (4, 1))))
    with pytest.raises(KeyboardInterrupt):
        checkpoints.on_epoch_end(4, {"val_accuracy": 0.42})
    assert saved == ["best.keras", "last.keras"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 4 and state["best_val_accuracy"] == pytest.approx(0.42)


def test_resume_with_init_is_a_one_line_error(trained_run, monkeypatch, capsys):
    from fer_edge.train.cli import main

    run, _ = trained_run
    assert run_main(main, ["--resume", str(run), "--init", str(run)], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "--resume and --init do not mix" in err and "Traceback" not in err


def test_evaluate_subcommand(trained_run, monkeypatch, capsys, tmp_path):
    from fer_edge.train.cli import main

    run, data = trained_run
    out = tmp_path / "eval.json"
    code = run_main(main, ["evaluate", str(run / "model.keras"), "--data", str(data), "--split", "PublicTest",
                           "--json-out", str(out)], monkeypatch)
    assert code == 0
    assert "PublicTest: top-1" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["samples"] == 21 and report["models"] == [str(run / "model.keras")] and not report["mirror"]


def test_runs_table_reads_a_real_run_folder(trained_run, monkeypatch, capsys):
    from fer_edge.train.cli import main

    run, _ = trained_run
    m = json.loads((run / "metrics.json").read_text())
    assert run_main(main, ["runs", str(run)], monkeypatch) == 0
    row = [c.strip() for c in capsys.readouterr().out.splitlines()[2].strip("|").split("|")]
    assert row[:4] == ["smoke", "fer2013", "-", "-"]
    # The resume test above may have grown this shared run, so the epochs come from its metrics too.
    assert row[5] == f"{m['macs'] / 1e6:.1f}M" and row[6] == str(m["epochs_run"])
    assert row[8:10] == [f"{m['val_accuracy']:.2%}", f"{m['accuracy']:.2%}"]


def test_evaluate_scores_an_ensemble_with_mirrors(trained_run, monkeypatch, capsys, tmp_path):
    """Several models and --mirror give the accuracy of the mean logits that distillation uses."""
    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.cli import main
    from fer_edge.train.data import load_dataset
    from fer_edge.train.distill import teacher_targets
    from fer_edge.train.report import classification_metrics

    run, data = trained_run
    out = tmp_path / "ensemble.json"
    code = run_main(main, ["evaluate", str(run), str(run / "model.keras"), "--data", str(data), "--split",
                           "PublicTest", "--mirror", "--json-out", str(out)], monkeypatch)
    assert code == 0
    assert "(2 models, mirror-averaged)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["mirror"] and report["models"] == [str(run), str(run / "model.keras")]
    # The same figure from the distillation targets at temperature 1 (softmax keeps the argmax).
    part = load_dataset(data).split("PublicTest")
    probs = teacher_targets([run, run / "model.keras"], part.images, FER2013_CLASSES, temperature=1.0)
    expected = classification_metrics(part.labels, probs.argmax(1), FER2013_CLASSES)
    assert report["accuracy"] == expected["accuracy"]


def test_evaluate_tta_averages_shifted_and_zoomed_copies(trained_run, monkeypatch, capsys, tmp_path):
    """--tta scores the mean logits over TTA_TRANSFORMS' copies of each face and their mirrors."""
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.preprocess import DEFAULT_SPEC
    from fer_edge.train.augment import TTA_TRANSFORMS, warp_batch
    from fer_edge.train.cli import main
    from fer_edge.train.data import load_dataset
    from fer_edge.train.model_files import load_keras_model
    from fer_edge.train.distill import mean_logits
    from fer_edge.train.report import classification_metrics, predict_logits

    run, data = trained_run
    part = load_dataset(data).split("PublicTest")
    model = load_keras_model(run / "best.keras", compile=False)
    copies = [warp_batch(part.images, *t) for t in TTA_TRANSFORMS]
    copies += [np.ascontiguousarray(c[:, :, ::-1]) for c in copies]
    expected = sum(predict_logits(model, c, DEFAULT_SPEC) for c in copies) / len(copies)
    got = mean_logits([run], part.images, FER2013_CLASSES, mirror=True, tta=True)
    np.testing.assert_allclose(got, expected, atol=1e-4)

    out = tmp_path / "tta.json"
    code = run_main(main, ["evaluate", str(run), "--data", str(data), "--split", "PublicTest", "--mirror", "--tta",
                           "--json-out", str(out)], monkeypatch)
    assert code == 0
    assert "(1 model, mirror-averaged, shift/zoom-averaged)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["tta"] and report["mirror"]
    assert report["accuracy"] == classification_metrics(part.labels, got.argmax(1), FER2013_CLASSES)["accuracy"]


def test_a_committed_results_folder_scores_like_its_run(trained_run, tmp_path):
    """A folder with only model.keras (what train/results keeps) is a valid teacher/ensemble member."""
    import shutil

    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.distill import mean_logits

    run, _ = trained_run
    kept = tmp_path / "results"
    kept.mkdir()
    for name in ("model.keras", "classes.json", "preprocess.json"):
        shutil.copy(run / name, kept / name)
    faces = np.random.default_rng(6).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(mean_logits([kept], faces, FER2013_CLASSES),
                               mean_logits([run], faces, FER2013_CLASSES), atol=1e-5)


def test_predict_logits_reports_each_batch_for_progress(trained_run):
    """on_batch sees every batch's size once, in order, and does not change the logits."""
    import numpy as np

    from fer_edge.preprocess import DEFAULT_SPEC
    from fer_edge.train.model_files import load_keras_model
    from fer_edge.train.report import predict_logits

    run, _ = trained_run
    model = load_keras_model(run / "best.keras", compile=False)
    faces = np.random.default_rng(3).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    sizes: list[int] = []
    got = predict_logits(model, faces, DEFAULT_SPEC, batch_size=4, on_batch=sizes.append)
    assert sizes == [4, 4, 2]
    np.testing.assert_allclose(got, predict_logits(model, faces, DEFAULT_SPEC), atol=1e-5)


def test_a_runs_softmax_model_teaches_with_its_logits(trained_run):
    """model.keras ends in a softmax; a teacher read from it must give the same targets as its logits model."""
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.distill import teacher_targets

    run, _ = trained_run
    faces = np.random.default_rng(2).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    from_logits = teacher_targets([run], faces, FER2013_CLASSES, temperature=2.0)
    from_probs = teacher_targets([run / "model.keras"], faces, FER2013_CLASSES, temperature=2.0)
    np.testing.assert_allclose(from_probs, from_logits, atol=1e-5)


def test_warp_batch_moves_faces_by_whole_pixels_and_keeps_uint8():
    import numpy as np

    from fer_edge.train.augment import TTA_TRANSFORMS, warp_batch

    faces = np.random.default_rng(3).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    assert TTA_TRANSFORMS[0] == (0, 0, 1.0) and warp_batch(faces, 0, 0, 1.0) is faces
    right, down = warp_batch(faces, 2, 0, 1.0), warp_batch(faces, 0, 2, 1.0)
    assert right.dtype == np.uint8 and right.shape == faces.shape
    assert np.array_equal(right[:, :, 2:], faces[:, :, :-2]) and np.array_equal(down[:, 2:], faces[:, :-2])
    zoomed = warp_batch(faces, 0, 0, 1.08)
    assert not np.array_equal(zoomed, faces)



def test_mixup_blends_each_face_with_a_partner_and_keeps_the_larger_share():
    import numpy as np

    from fer_edge.train.augment import mixup_batch

    faces = np.random.default_rng(4).uniform(0, 255, (16, 48, 48)).astype(np.float32)
    mixed, partner, lam = mixup_batch(faces, np.random.default_rng(5), alpha=0.4)
    assert mixed.shape == faces.shape and sorted(partner) == list(range(16))
    assert np.all((lam >= 0.5) & (lam <= 1.0)) and lam.min() < 0.99  # a real blend, not a copy
    for i in range(16):
        np.testing.assert_allclose(mixed[i], lam[i] * faces[i] + (1 - lam[i]) * faces[partner[i]], rtol=1e-5)


def test_augment_strength_scales_the_ranges_and_zero_leaves_only_flips():
    from dataclasses import replace

    import numpy as np

    from fer_edge.train.augment import AugmentConfig, augment_batch

    full = AugmentConfig(erase_prob=0.0)
    half = full.scaled(0.5)
    assert (half.rotate_deg, half.shift, half.zoom, half.brightness, half.contrast) == pytest.approx(
        (full.rotate_deg / 2, full.shift / 2, full.zoom / 2, full.brightness / 2, full.contrast / 2))
    assert half.flip and half.erase_prob == full.erase_prob
    faces = np.random.default_rng(6).integers(0, 256, (32, 48, 48), dtype=np.uint8)
    bare = augment_batch(faces, np.random.default_rng(7), full.scaled(0.0))
    flipped = np.array([np.array_equal(b, f[:, ::-1]) for b, f in zip(bare, faces)])
    assert all(np.array_equal(b, f) or m for b, f, m in zip(bare, faces, flipped)) and 0 < flipped.sum() < 32
    # The same draws at half the range move the faces less than at the full range.
    moved = [np.abs(augment_batch(faces, np.random.default_rng(8), replace(cfg, flip=False)) - faces).mean()
             for cfg in (half, full)]
    assert 0 < moved[0] < moved[1]
    with pytest.raises(ValueError):
        full.scaled(-1)


def test_evaluate_bad_model_is_one_line(tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip")
    data = write_fer_csv(tmp_path / "fer2013.csv")
    assert run_main(main, ["evaluate", str(bad), "--data", str(data)], monkeypatch) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: not a loadable Keras model (ValueError)"


def test_default_model_fits_budget():
    from fer_edge.train.model import MAC_BUDGET, count_macs, make_model

    model = make_model(7)
    assert count_macs(model) <= MAC_BUDGET
    allowed = {"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "GlobalAveragePooling2D",
               "Dropout", "Dense"}
    assert {type(layer).__name__ for layer in model.layers} <= allowed


def test_init_copies_backbone_and_matching_classifier(trained_run, capsys):
    import keras
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES, FERPLUS8_CLASSES
    from fer_edge.train.surgery import init_weights
    from fer_edge.train.model import make_model

    run, _ = trained_run
    source = keras.models.load_model(run / "best.keras")
    same = make_model(7)
    init_weights(same, run, FER2013_CLASSES)
    for a, b in zip(same.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)

    other = make_model(8)  # FER+ with contempt: a different head starts fresh
    init_weights(other, run, FERPLUS8_CLASSES)
    assert "fresh: logits" in capsys.readouterr().out
    np.testing.assert_array_equal(other.get_layer("s2_conv1").get_weights()[0],
                                  source.get_layer("s2_conv1").get_weights()[0])


def test_pooled_head_costs_its_1x1_conv_and_starts_with_the_source_predictions(trained_run, capsys):
    import keras
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.surgery import init_weights
    from fer_edge.train.model import DEFAULT_STAGES, count_macs, make_model

    plain, headed = make_model(7), make_model(7, head=16)
    last = DEFAULT_STAGES[-1][0]
    assert count_macs(headed) - count_macs(plain) == 3 * 3 * last * 16 + 16 * 7  # 1x1 conv at 3x3, wider classifier
    assert count_macs(make_model(7, head=16, mirror=True)) == 2 * count_macs(headed)

    run, _ = trained_run
    source = keras.models.load_model(run / "best.keras")
    init_weights(headed, run, FER2013_CLASSES)
    assert "fresh" not in capsys.readouterr().out
    kernel = headed.get_layer("logits").get_weights()[0]
    np.testing.assert_array_equal(kernel[last:], 0)  # the head's features start with no say
    faces = np.random.default_rng(1).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(headed.predict_on_batch(faces), source.predict_on_batch(faces), atol=1e-5)


def test_spatial_head_costs_its_dense_layer_and_starts_with_the_source_predictions(trained_run, capsys,
                                                                                   tmp_path):
    import keras
    import numpy as np

    from fer_edge.errors import FerEdgeError
    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.surgery import init_weights
    from fer_edge.train.model import DEFAULT_STAGES, count_macs, make_model

    last = DEFAULT_STAGES[-1][0]
    plain, spatial = make_model(7), make_model(7, fc=last + 8)
    # The pooled 3x3 map feeds the classifier directly; the flattened one feeds a dense layer first.
    assert count_macs(spatial) - count_macs(plain) == 3 * 3 * last * (last + 8) + (last + 8) * 7 - last * 7
    assert count_macs(make_model(7, fc=last + 8, mirror=True)) == 2 * count_macs(spatial)
    with pytest.raises(ValueError, match="not both"):
        make_model(7, head=16, fc=last)

    run, _ = trained_run
    source = keras.models.load_model(run / "best.keras")
    init_weights(spatial, run, FER2013_CLASSES)
    assert "fresh" not in capsys.readouterr().out
    np.testing.assert_array_equal(spatial.get_layer("logits").get_weights()[0][last:], 0)  # new units: no say yet
    faces = np.random.default_rng(1).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(spatial.predict_on_batch(faces), source.predict_on_batch(faces), atol=1e-5)

    # A spatial-head run continues one of its shape; a flattened map of another shape cannot be cut down.
    grown = tmp_path / "grown"
    grown.mkdir()
    spatial.save(grown / "model.keras")
    (grown / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    again = make_model(7, fc=last + 8)
    init_weights(again, grown, FER2013_CLASSES)
    for a, b in zip(again.get_weights(), spatial.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FerEdgeError, match="spatial head"):
        init_weights(make_model(7, fc=last + 16), grown, FER2013_CLASSES)


SMALL = ((8, 1), (16, 1), (16, 2), (24, 2), (32, 1))


def test_mirrored_model_ignores_left_right_and_pays_for_both_passes(tmp_path):
    import numpy as np

    from fer_edge.train.model_files import load_keras_model
    from fer_edge.train.model import backbone_of, count_macs, make_model

    model = make_model(7, stages=SMALL, mirror=True)
    backbone = backbone_of(model)
    assert backbone is not model
    assert count_macs(model) == 2 * count_macs(backbone) == 2 * count_macs(make_model(7, stages=SMALL))
    faces = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    logits = model.predict_on_batch(faces)
    np.testing.assert_allclose(logits, model.predict_on_batch(faces[:, :, ::-1]), atol=1e-5)
    single = backbone.predict_on_batch(faces)
    np.testing.assert_allclose(logits, (single + backbone.predict_on_batch(faces[:, :, ::-1])) / 2, atol=1e-5)
    model.save(tmp_path / "m.keras")  # the Mirror layer survives a save and a load
    np.testing.assert_allclose(load_keras_model(tmp_path / "m.keras").predict_on_batch(faces), logits, atol=1e-5)


def test_init_slims_a_wider_model_keeping_the_largest_batch_norm_scales(trained_run, capsys):
    import keras
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.surgery import init_weights
    from fer_edge.train.model import backbone_of, make_model

    run, _ = trained_run
    source = keras.models.load_model(run / "best.keras")
    narrow = make_model(7, stages=SMALL, mirror=True)
    init_weights(narrow, run, FER2013_CLASSES)
    assert "cut down to fewer channels" in capsys.readouterr().out
    net = backbone_of(narrow)

    def kept(name: str, width: int) -> np.ndarray:
        scale = np.abs(source.get_layer(name).get_weights()[0])
        return np.sort(np.argsort(-scale)[:width])

    k0, k1 = kept("s0_bn0", 8), kept("s1_bn0", 16)
    np.testing.assert_array_equal(net.get_layer("s0_conv0").get_weights()[0],
                                  source.get_layer("s0_conv0").get_weights()[0][..., k0])
    np.testing.assert_array_equal(net.get_layer("s1_conv0").get_weights()[0],
                                  source.get_layer("s1_conv0").get_weights()[0][:, :, k0][..., k1])
    for got, want in zip(net.get_layer("s1_bn0").get_weights(), source.get_layer("s1_bn0").get_weights()):
        np.testing.assert_array_equal(got, want[k1])
    k4 = kept("s4_bn0", 32)
    kernel, bias = source.get_layer("logits").get_weights()
    np.testing.assert_array_equal(net.get_layer("logits").get_weights()[0], kernel[k4])
    np.testing.assert_array_equal(net.get_layer("logits").get_weights()[1], bias)


def test_widths_option_is_validated(monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--widths", "8,16", "--limit", "4"], monkeypatch) == 2
    assert "5 positive channel counts" in capsys.readouterr().err


def test_widths_keep_the_default_depth_and_reject_bad_counts():
    from fer_edge.train.model import DEFAULT_STAGES, stages_with_widths

    stages = stages_with_widths((8, 16, 24, 32, 40))
    assert [w for w, _ in stages] == [8, 16, 24, 32, 40]
    assert [convs for _, convs in stages] == [convs for _, convs in DEFAULT_STAGES]
    for bad in ((8, 16), (8, 16, 0, 32, 40)):
        with pytest.raises(ValueError, match="positive channel counts"):
            stages_with_widths(bad)


def test_residual_blocks_cost_their_convolutions_and_are_validated(monkeypatch, capsys):
    from fer_edge.train.model import check_blocks, count_macs, make_model

    plain = make_model(7, stages=SMALL)
    deep = make_model(7, stages=SMALL, blocks=(0, 0, 0, 2, 1))
    # Two blocks of two 3x3 convs at 6x6 (24 channels) and one at 3x3 (32 channels).
    assert count_macs(deep) - count_macs(plain) == 2 * 2 * 6 * 6 * 9 * 24 * 24 + 2 * 3 * 3 * 9 * 32 * 32
    assert [layer.name for layer in deep.layers if layer.name.endswith("_add")] == ["s3_r0_add", "s3_r1_add",
                                                                                    "s4_r0_add"]
    assert count_macs(make_model(7, stages=SMALL, blocks=(0, 0, 0, 2, 1), mirror=True)) == 2 * count_macs(deep)
    for bad in ((1, 2), (0, 0, -1, 0, 0)):
        with pytest.raises(ValueError, match="non-negative block counts"):
            check_blocks(bad)
    from fer_edge.train.cli import main

    assert run_main(main, ["--blocks", "1,2", "--limit", "4"], monkeypatch) == 2
    assert "5 non-negative block counts" in capsys.readouterr().err


def test_init_copies_residual_blocks_of_the_same_widths_and_refuses_to_cut_them(tmp_path):
    import json

    import numpy as np

    from fer_edge.errors import FerEdgeError
    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.surgery import init_weights
    from fer_edge.train.model import make_model

    source = make_model(7, stages=SMALL, blocks=(0, 0, 0, 1, 0))
    source.save(tmp_path / "model.keras")
    (tmp_path / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    same = make_model(7, stages=SMALL, blocks=(0, 0, 0, 1, 0))
    init_weights(same, tmp_path, FER2013_CLASSES)
    faces = np.random.default_rng(3).random((2, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(same.predict_on_batch(faces), source.predict_on_batch(faces), atol=1e-5)
    narrower = make_model(7, stages=((8, 1), (16, 1), (16, 2), (16, 2), (32, 1)), blocks=(0, 0, 0, 1, 0))
    with pytest.raises(FerEdgeError, match="s3_r0_conv0 is in a residual block"):
        init_weights(narrower, tmp_path, FER2013_CLASSES)


def test_init_rejects_a_missing_or_foreign_model(tmp_path):
    import keras

    from fer_edge.errors import FerEdgeError
    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.surgery import init_weights
    from fer_edge.train.model import make_model

    with pytest.raises(FerEdgeError, match="no model found"):
        init_weights(make_model(7), tmp_path, FER2013_CLASSES)
    foreign = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="other")])
    foreign.save(tmp_path / "foreign.keras")
    with pytest.raises(FerEdgeError, match="no layer matches"):
        init_weights(make_model(7), tmp_path / "foreign.keras", FER2013_CLASSES)


def test_teacher_targets_are_mirror_averaged_distributions(trained_run):
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.distill import teacher_targets

    run, _ = trained_run
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    warm = teacher_targets([run], faces, FER2013_CLASSES, temperature=1.0)
    assert warm.shape == (6, 7) and warm.dtype == np.float32
    np.testing.assert_allclose(warm.sum(axis=1), 1.0, rtol=1e-5)
    # The face and its mirror get the same target: the teacher sees both either way.
    mirrored = teacher_targets([run], np.ascontiguousarray(faces[:, :, ::-1]), FER2013_CLASSES, temperature=1.0)
    np.testing.assert_allclose(warm, mirrored, atol=1e-5)
    # A higher temperature spreads the distribution (higher entropy on every face).
    hot = teacher_targets([run], faces, FER2013_CLASSES, temperature=4.0)
    entropy = lambda p: -(p * np.log(p)).sum(axis=1)  # noqa: E731
    assert (entropy(hot) >= entropy(warm) - 1e-6).all()


def test_teacher_must_share_the_class_list(trained_run):
    import numpy as np

    from fer_edge.errors import FerEdgeError
    from fer_edge.labels import FERPLUS8_CLASSES
    from fer_edge.train.distill import teacher_targets

    run, _ = trained_run
    with pytest.raises(FerEdgeError, match="same classes"):
        teacher_targets([run], np.zeros((2, 48, 48), np.uint8), FERPLUS8_CLASSES, temperature=1.0)


def test_several_teachers_average_their_logits(trained_run, tmp_path):
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.preprocess import DEFAULT_SPEC
    from fer_edge.train.model_files import load_keras_model
    from fer_edge.train.distill import teacher_targets
    from fer_edge.train.model import make_model
    from fer_edge.train.report import predict_logits

    run, _ = trained_run
    other = make_model(7)  # a second, untrained teacher with other weights
    other.save(tmp_path / "best.keras")
    (tmp_path / "classes.json").write_text(json.dumps(list(FER2013_CLASSES)))
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    # The same teacher twice is that teacher.
    np.testing.assert_allclose(teacher_targets([run, run], faces, FER2013_CLASSES, temperature=1.0),
                               teacher_targets([run], faces, FER2013_CLASSES, temperature=1.0), atol=1e-5)
    # Two teachers: the softmax of their mirror-averaged logits, averaged.
    mirrors = np.ascontiguousarray(faces[:, :, ::-1])
    logits = sum((predict_logits(m, faces, DEFAULT_SPEC) + predict_logits(m, mirrors, DEFAULT_SPEC)) / 2
                 for m in (load_keras_model(run / "best.keras", compile=False), other)) / 2
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    both = teacher_targets([run, tmp_path], faces, FER2013_CLASSES, temperature=1.0)
    np.testing.assert_allclose(both, expected, atol=1e-4)


def test_distillation_with_weight_average_trains_and_records_its_recipe(trained_run, tmp_path, monkeypatch):
    from fer_edge.train.cli import main

    run, data = trained_run
    code = run_main(main, ["--data", str(data), "--out", str(tmp_path), "--name", "kd", "--epochs", "2",
                           "--batch-size", "8", "--seed", "3", "--threads", "2", "--init", str(run),
                           "--teacher", str(run), "--teacher", str(run / "model.keras"), "--teacher-weight", "0.7",
                           "--teacher-views", "2", "--teacher-tta", "--teacher-mixup", "0.3", "--ema", "0.9",
                           "--augment-strength", "0.5", "--weight-decay", "0.0001"], monkeypatch)
    assert code == 0
    cfg = json.loads((tmp_path / "kd" / "config.json").read_text())["train"]
    assert cfg["weight_decay"] == 0.0001
    assert cfg["teachers"] == [str(run), str(run / "model.keras")]
    assert cfg["teacher_weight"] == 0.7 and cfg["ema"] == 0.9 and cfg["teacher_views"] == 2 and cfg["teacher_tta"]
    assert cfg["teacher_mixup"] == 0.3 and cfg["augment"]["rotate_deg"] == pytest.approx(6.0)
    m = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and 0.0 <= m["accuracy"] <= 1.0


def test_vote_offset_says_what_the_votes_tell_about_the_label_beyond_its_base_rate():
    """Votes that point at the label give it the largest offset; the weight scales the offset; no votes, no offset."""
    from fer_edge.errors import FerEdgeError
    from fer_edge.train.data import FaceData
    from fer_edge.train.distill import vote_offset

    rng = np.random.default_rng(0)
    n = 700
    labels = np.arange(n) % 7
    # FER+ column order: neutral happy surprise sad anger disgust fear contempt unknown NF.
    column_of = [4, 5, 6, 1, 3, 2, 0]  # FER2013 class -> its FER+ column
    votes = rng.integers(0, 2, size=(n, 10)).astype(np.float32)
    agree = rng.random(n) < 0.8  # the annotators back the label on 80% of the faces
    votes[np.flatnonzero(agree), np.asarray(column_of)[labels[agree]]] += 7
    data = FaceData(np.zeros((n, 48, 48), np.uint8), labels, np.full(n, "train"), FER2013_CLASSES, "gen", "0",
                    votes=votes)
    offset = vote_offset(data, 1.0)
    assert offset.shape == (n, 7) and offset.dtype == np.float32
    assert (offset.argmax(1) == labels)[agree].mean() > 0.95
    np.testing.assert_allclose(vote_offset(data, 0.5), 0.5 * offset, rtol=1e-4, atol=1e-5)
    with pytest.raises(FerEdgeError, match="--teacher-votes needs the other labelling"):
        vote_offset(FaceData(data.images, labels, data.splits, FER2013_CLASSES, "gen", "0"), 1.0)


def test_teacher_votes_train_from_the_ferplus_file_beside_the_csv(trained_run, tmp_path, monkeypatch):
    from fer_edge.train.cli import main
    from helpers import write_ferplus_csv

    run, _ = trained_run
    rows = fer_rows(per_split=21)
    data = write_fer_csv(tmp_path / "fer2013.csv.gz", rows)
    rng = np.random.default_rng(1)
    write_ferplus_csv(tmp_path / "fer2013new.csv", [rng.integers(0, 5, 10).tolist() for _ in rows],
                      [r[2] for r in rows])
    code = run_main(main, ["--data", str(data), "--out", str(tmp_path / "runs"), "--name", "votes", "--epochs", "1",
                           "--batch-size", "8", "--seed", "3", "--threads", "2", "--init", str(run),
                           "--teacher", str(run), "--teacher-votes", "0.5", "--teacher-views", "1"], monkeypatch)
    assert code == 0
    assert json.loads((tmp_path / "runs" / "votes" / "config.json").read_text())["train"]["teacher_votes"] == 0.5
    # evaluate --votes scores a teacher as it teaches: the regression fitted on the training split.
    out = tmp_path / "eval.json"
    assert run_main(main, ["evaluate", str(run), "--data", str(data), "--split", "val", "--mirror", "--votes", "0.5",
                           "--json-out", str(out)], monkeypatch) == 0
    scored = json.loads(out.read_text())
    assert scored["votes"] == 0.5 and scored["samples"] == 21


def test_teacher_votes_without_a_teacher_is_a_one_line_error(monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--teacher-votes", "0.5"], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "--teacher-votes adds the other labelling's evidence" in err and "Traceback" not in err


def test_teacher_views_without_a_teacher_is_a_one_line_error(monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--teacher-views", "2"], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "--teacher-views needs at least one --teacher" in err and "Traceback" not in err


def test_teacher_tta_without_a_teacher_is_a_one_line_error(monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--teacher-tta"], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "--teacher-tta needs at least one --teacher" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["missing-teacher", "over-budget"])
def test_a_fit_that_cannot_start_fails_fast_in_one_line_and_leaves_no_run_folder(bad, trained_run, tmp_path,
                                                                                  monkeypatch, capsys):
    """Bad teachers and an over-budget model are refused before any teacher scoring, with nothing left behind."""
    from fer_edge.train.cli import main

    run, data = trained_run
    out = tmp_path / "runs"
    args = ["--data", str(data), "--out", str(out), "--name", "x", "--epochs", "1", "--teacher-views", "2"]
    if bad == "missing-teacher":
        args += ["--teacher", str(run), "--teacher", str(tmp_path / "nope")]
        expected = f"error: {tmp_path / 'nope'}: no model found"
    else:
        args += ["--teacher", str(run), "--widths", "64,128,192,320,512"]
        expected = "error: model needs"
    assert run_main(main, args, monkeypatch) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith(expected)
    assert "Usage:" not in captured.err and "Traceback" not in captured.err
    assert "teacher view" not in captured.out  # failed before the teachers scored anything
    assert not (out / "x").exists()  # so a corrected retry gets the same folder, not x2


def test_a_teacher_may_exceed_the_mac_budget_and_says_so(trained_run, tmp_path, monkeypatch, capsys):
    """--no-mac-budget trains a wider net than the device may run, records it, and the net can teach."""
    from fer_edge.train.cli import main

    _, data = trained_run
    out = tmp_path / "runs"
    wide = ["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8", "--threads", "2",
            "--widths", "64,128,192,320,512"]
    assert run_main(main, [*wide, "--name", "wide", "--no-mac-budget"], monkeypatch) == 0
    captured = capsys.readouterr()
    assert "MACs per face (no budget: a teacher, never bundled)" in captured.out
    config = json.loads((out / "wide" / "config.json").read_text())
    assert config["train"]["mac_budget"] is False
    metrics = json.loads((out / "wide" / "metrics.json").read_text())
    assert metrics["macs"] > 50_000_000
    # It teaches an edge-sized student like any run folder.
    assert run_main(main, ["--data", str(data), "--out", str(out), "--name", "student", "--epochs", "1",
                           "--batch-size", "8", "--threads", "2", "--teacher", str(out / "wide")], monkeypatch) == 0
    student = json.loads((out / "student" / "config.json").read_text())["train"]
    assert student["mac_budget"] is True and student["teachers"] == [str(out / "wide")]


def test_ctrl_c_before_the_first_epoch_ends_leaves_no_run_folder(trained_run, tmp_path, monkeypatch, capsys):
    import fer_edge.train.fit as fit
    from fer_edge.train.cli import main

    _, data = trained_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "train", interrupted)
    out = tmp_path / "runs"
    assert run_main(main, ["--data", str(data), "--out", str(out), "--name", "x"], monkeypatch) == 130
    assert not (out / "x").exists() and "--resume" not in capsys.readouterr().err


def test_eight_classes_without_ferplus_labels_is_a_one_line_error(monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--eight-classes", "--limit", "4"], monkeypatch) == 2
    assert capsys.readouterr().err.strip().startswith("error: --eight-classes keeps FER+'s contempt votes")


def test_teacher_views_label_the_augmented_copy_the_student_sees(trained_run):
    """Each epoch trains on one pre-augmented view with the teachers' targets for that very view."""
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.data import FaceData
    from fer_edge.train.fit import TrainConfig, make_sequence
    from fer_edge.train.distill import teacher_targets, teacher_views

    run, _ = trained_run
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    data = FaceData(faces, np.arange(6) % 7, np.array(["train"] * 6), FER2013_CLASSES, "generated", "-")
    cfg = TrainConfig(batch_size=6, teacher_views=2, teacher_weight=1.0, teacher_temperature=1.0)
    views = teacher_views([run], data, cfg)
    assert views.images.shape == (2, 6, 48, 48) and views.images.dtype == np.uint8
    assert views.targets.shape == (2, 6, 7)
    assert not np.array_equal(views.images[0], faces) and not np.array_equal(views.images[0], views.images[1])
    for view in range(2):  # with teacher weight 1 the target is the teachers' distribution for the view itself
        np.testing.assert_allclose(views.targets[view],
                                   teacher_targets([run], views.images[view], FER2013_CLASSES, 1.0), atol=1e-5)
    seq = make_sequence(data, cfg, train=True, views=views)
    idx = seq.order[:6]
    for epoch in range(3):
        seq.epoch = epoch
        x, y = seq[0]
        view = epoch % 2
        np.testing.assert_allclose(y, views.targets[view][idx])
        # The pipeline adds only a flip, which leaves a mirror-averaged teacher's target valid.
        pixels = np.rint((x[..., 0] - cfg.spec.offset) / cfg.spec.scale)
        for got, want in zip(pixels, views.images[view][idx]):
            assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1])



def test_teacher_mixup_views_mix_the_labels_by_the_blend_weight(trained_run):
    """A blended view's label part is the two faces' labels mixed as their pixels were."""
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.augment import augment_batch, mixup_batch
    from fer_edge.train.data import FaceData
    from fer_edge.train.fit import TrainConfig
    from fer_edge.train.distill import teacher_views

    run, _ = trained_run
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    labels = np.arange(8) % 7
    data = FaceData(faces, labels, np.array(["train"] * 8), FER2013_CLASSES, "generated", "-")
    cfg = TrainConfig(teacher_views=2, teacher_weight=0.0, teacher_mixup=0.4, seed=7)
    views = teacher_views([run], data, cfg)
    plain = teacher_views([run], data, TrainConfig(teacher_views=2, teacher_weight=0.0, seed=7))
    onehot = np.eye(7, dtype=np.float32)[labels]
    for view in range(2):  # replay the view's draws: the same augmentation, then the same blend
        rng = np.random.default_rng((cfg.seed, view))
        augmented = augment_batch(faces, rng, cfg.augment)
        blended, partner, lam = mixup_batch(augmented, rng, cfg.teacher_mixup)
        assert np.array_equal(views.images[view], np.rint(blended).astype(np.uint8))
        np.testing.assert_allclose(views.targets[view], lam[:, None] * onehot + (1 - lam[:, None]) * onehot[partner],
                                   atol=1e-6)
        assert not np.array_equal(views.images[view], plain.images[view])
    np.testing.assert_allclose(plain.targets[0], onehot)


def test_teacher_tta_offset_adds_the_clean_faces_tta_correction_to_every_view(trained_run):
    """Each view's logits move by the clean face's TTA-minus-plain logits before the softening."""
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.data import FaceData
    from fer_edge.train.fit import TrainConfig
    from fer_edge.train.distill import mean_logits, teacher_views

    run, _ = trained_run
    faces = np.random.default_rng(1).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    data = FaceData(faces, np.arange(8) % 7, np.array(["train"] * 8), FER2013_CLASSES, "generated", "-")
    cfg = TrainConfig(teacher_views=2, teacher_weight=1.0, teacher_temperature=2.0, teacher_tta_offset=True, seed=3)
    views = teacher_views([run], data, cfg)
    offset = (mean_logits([run], faces, FER2013_CLASSES, tta=True) - mean_logits([run], faces, FER2013_CLASSES))
    assert np.abs(offset).max() > 1e-4  # the shifts and zooms do change this model's reading
    for view in range(2):
        z = (mean_logits([run], views.images[view], FER2013_CLASSES) + offset) / 2.0
        want = np.exp(z - z.max(axis=1, keepdims=True))
        np.testing.assert_allclose(views.targets[view], want / want.sum(axis=1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize("flags", [["--teacher-tta-offset"], ["--teacher-views", "2", "--teacher-tta",
                                                                "--teacher-tta-offset"]])
def test_teacher_tta_offset_needs_plain_views(flags, monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--teacher", "x", *flags], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "--teacher-tta-offset corrects the face-and-mirror teacher views" in err and "Traceback" not in err


def test_teacher_mixup_without_views_is_a_one_line_error(monkeypatch, capsys):
    from fer_edge.train.cli import main

    assert run_main(main, ["--teacher-mixup", "0.4"], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "--teacher-mixup blends the teacher views: it needs --teacher-views" in err and "Traceback" not in err

def test_resume_reads_a_run_written_with_a_single_teacher(trained_run, tmp_path, monkeypatch):
    """Runs from before `--teacher` could repeat stored `"teacher": path`; they must still resume."""
    from fer_edge.train.cli import main

    run, data = trained_run
    assert run_main(main, ["--data", str(data), "--out", str(tmp_path), "--name", "old", "--epochs", "1",
                           "--batch-size", "8", "--threads", "2", "--teacher", str(run)], monkeypatch) == 0
    config_path = tmp_path / "old" / "config.json"
    config = json.loads(config_path.read_text())
    config["train"]["teacher"] = config["train"].pop("teachers")[0]
    config["train"]["epochs"] = 2
    config_path.write_text(json.dumps(config))
    assert run_main(main, ["--resume", str(tmp_path / "old")], monkeypatch) == 0
    with open(tmp_path / "old" / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1]


def test_finish_ends_a_stopped_run_at_its_best_epoch(trained_run, tmp_path, monkeypatch):
    """A run killed mid-way gets every final file from best.keras, without training more."""
    import shutil

    from fer_edge.train.cli import main

    run, _ = trained_run
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    for name in ("model.keras", "metrics.json", "curves.png", "confusion_test.png", "confusion_val.png"):
        (stopped / name).unlink()
    shutil.rmtree(stopped / "saved_model")
    done = json.loads((stopped / "state.json").read_text())["epoch"]  # other tests may have resumed the run
    with open(stopped / "history.csv", "a") as fh:  # a row the kill left uncommitted
        fh.write(f"{done},0.5,1.0,0.5,1.0\n")
    assert run_main(main, ["finish", str(stopped)], monkeypatch) == 0
    for name in ("model.keras", "saved_model/saved_model.pb", "curves.png", "confusion_test.png", "metrics.json"):
        assert (stopped / name).exists(), name
    m = json.loads((stopped / "metrics.json").read_text())
    original = json.loads((run / "metrics.json").read_text())
    assert m["finished"]["at_epoch"] == done and m["epochs_run"] == done
    assert m["command"] == original["command"] and m["wall_seconds"] >= 0
    assert m["accuracy"] == original["accuracy"] and m["val_accuracy"] == original["val_accuracy"]


def test_finish_without_a_finished_epoch_is_a_one_line_error(trained_run, tmp_path, monkeypatch, capsys):
    import shutil

    from fer_edge.train.cli import main

    run, _ = trained_run
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(run / "config.json", fresh / "config.json")
    assert run_main(main, ["finish", str(fresh)], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "no finished epoch to end at" in err and "Traceback" not in err


def test_soft_labels_train_on_votes_but_select_on_majority_labels():
    """A tied vote's argmax can differ from its majority label; the checkpoint must be chosen on the latter."""
    import numpy as np

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.train.data import FaceData
    from fer_edge.train.fit import TrainConfig, make_sequence

    tie = np.zeros(7, np.float32)
    tie[[0, 6]] = 0.5  # angry and neutral tie; the majority label says neutral
    data = FaceData(np.zeros((2, 48, 48), np.uint8), np.array([6, 6]), np.array(["train", "train"]),
                    FER2013_CLASSES, "generated", "-", soft=np.stack([tie, tie]))
    cfg = TrainConfig(batch_size=2)
    _, train_targets = make_sequence(data, cfg, train=True)[0]
    _, val_targets = make_sequence(data, cfg, train=False)[0]
    np.testing.assert_allclose(train_targets, np.stack([tie, tie]))
    assert train_targets.argmax(1).tolist() == [0, 0]
    np.testing.assert_array_equal(val_targets, np.eye(7, dtype=np.float32)[[6, 6]])


def _perturbed_copy(run, folder, seed: int):
    """A second 'run' beside ``run``'s contract files whose weights differ by noise: soup material."""
    import shutil

    import numpy as np

    from fer_edge.train.model_files import load_keras_model

    folder.mkdir()
    for name in ("classes.json", "preprocess.json", "config.json"):
        shutil.copy(run / name, folder / name)
    model = load_keras_model(run / "model.keras", compile=False)
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save(folder / "model.keras")
    return folder


def test_soup_averages_the_weights_by_share_into_a_scored_run(trained_run, tmp_path, monkeypatch, capsys):
    import numpy as np

    from fer_edge.train.cli import main
    from fer_edge.train.model_files import load_keras_model

    run, _ = trained_run
    other = _perturbed_copy(run, tmp_path / "other", seed=1)
    code = run_main(main, ["soup", str(run), str(other / "model.keras"), "--weights", "3,1",
                           "--out", str(tmp_path / "runs"), "--name", "s"], monkeypatch)
    assert code == 0
    assert "val top-1" in capsys.readouterr().out
    soup = tmp_path / "runs" / "s"
    for name in ("config.json", "model.keras", "saved_model/saved_model.pb", "metrics.json", "classes.json",
                 "preprocess.json", "confusion_val.png", "confusion_test.png"):
        assert (soup / name).exists(), name
    a, b, s = (load_keras_model(p, compile=False) for p in (run / "model.keras", other / "model.keras",
                                                            soup / "model.keras"))
    assert s.layers[-1].name == "probs"  # ships probabilities, like a trained run's model.keras
    for x, y, z in zip(a.get_weights(), b.get_weights(), s.get_weights()):
        np.testing.assert_allclose(z, 0.75 * x + 0.25 * y, rtol=1e-5, atol=1e-6)
    config = json.loads((soup / "config.json").read_text())
    assert config["soup"]["weights"] == [3.0, 1.0] and config["args"]["data"]
    metrics = json.loads((soup / "metrics.json").read_text())
    assert metrics["samples"] == 21 and 0.0 <= metrics["val_accuracy"] <= 1.0


def test_soup_refuses_models_on_other_classes_in_one_line(trained_run, tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    run, _ = trained_run
    other = _perturbed_copy(run, tmp_path / "other", seed=2)
    classes = json.loads((other / "classes.json").read_text())
    (other / "classes.json").write_text(json.dumps(classes[::-1]))
    code = run_main(main, ["soup", str(run), str(other), "--out", str(tmp_path / "runs")], monkeypatch)
    err = capsys.readouterr().err
    assert code != 0 and "classes.json differs" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    code = run_main(main, ["soup", str(run), str(other), "--weights", "1,x"], monkeypatch)
    assert code == 2 and "comma-separated numbers" in capsys.readouterr().err
