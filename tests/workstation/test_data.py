"""Every loader and every bad-input case, on small generated files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fer_edge.errors import FerEdgeError
from fer_edge.labels import FER2013_CLASSES, FERPLUS8_CLASSES
from fer_edge.train.data import load_dataset, load_fer2013, load_ferplus, load_image_folders
from helpers import fer_rows, run_main, write_fer_csv, write_ferplus_csv, write_image_folders


@pytest.mark.parametrize("name", ["fer2013.csv", "fer2013.csv.gz"])
def test_fer2013_plain_and_gzip(tmp_path, name):
    rows = fer_rows(per_split=14)
    data = load_fer2013(write_fer_csv(tmp_path / name, rows))
    assert data.images.shape == (42, 48, 48) and data.images.dtype == np.uint8
    assert data.classes == FER2013_CLASSES
    assert list(np.unique(data.splits)) == ["test", "train", "val"]
    first = np.array(rows[0][1].split(), dtype=np.uint8).reshape(48, 48)
    assert np.array_equal(data.images[0], first)
    assert data.labels[:7].tolist() == list(range(7))
    assert len(data.split("PrivateTest")) == 14 and len(data.split("val")) == 14
    assert len(data.checksum) == 64


def test_load_dataset_finds_csv_in_folder(tmp_path):
    write_fer_csv(tmp_path / "fer2013.csv.gz")
    assert len(load_dataset(tmp_path)) == 42


def _bad(tmp_path, rows, header=("emotion", "pixels", "Usage")):
    return write_fer_csv(tmp_path / "fer2013.csv", rows, header)


GOOD = " ".join(["7"] * 2304)


@pytest.mark.parametrize(
    "row, message",
    [
        (["3", " ".join(["7"] * 2303), "Training"], "2303 pixel values, expected 2304"),
        (["3", GOOD.replace("7", "x", 1), "Training"], "non-numeric pixel value 'x'"),
        (["9", GOOD, "Training"], "emotion 9 out of range 0-6"),
        (["a", GOOD, "Training"], "emotion 'a' is not an integer"),
        (["3", GOOD, "Holdout"], "unknown Usage 'Holdout'"),
        (["3", GOOD.replace("7", "300", 1), "Training"], "pixel values must be 0-255"),
        (["3", GOOD], "expected 3 fields"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = _bad(tmp_path, fer_rows(per_split=1) + [row])
    with pytest.raises(FerEdgeError) as err:
        load_fer2013(path)
    assert str(err.value) == f"{path}:5: {message}" or str(err.value).startswith(f"{path}:5: {message}")


def test_skip_bad_rows_counts_them(tmp_path):
    rows = fer_rows(per_split=2)
    rows.insert(1, ["3", "1 2 3", "Training"])
    rows.append(["8", GOOD, "Training"])
    data = load_fer2013(_bad(tmp_path, rows), skip_bad=True)
    assert len(data) == 6 and data.skipped == 2
    assert "3 pixel values" in data.notes[0]


def test_missing_file_and_wrong_header(tmp_path):
    with pytest.raises(FerEdgeError, match="file not found"):
        load_fer2013(tmp_path / "nope.csv")
    path = _bad(tmp_path, fer_rows(per_split=1), header=("label", "pixels", "Usage"))
    with pytest.raises(FerEdgeError, match=r"fer2013.csv:1: wrong header"):
        load_fer2013(path)


def test_corrupt_gzip_is_one_line_error(tmp_path):
    path = tmp_path / "fer2013.csv.gz"
    path.write_bytes(gzip.compress(b"emotion,pixels,Usage\n0,1 2")[:-8] + b"garbage!")
    with pytest.raises(FerEdgeError, match="cannot read"):
        load_fer2013(path)


# ---------------------------------------------------------------- FER+
def _ferplus(tmp_path, votes):
    rows = fer_rows(per_split=2)[: len(votes)]
    fer = write_fer_csv(tmp_path / "fer2013.csv", rows)
    plus = write_ferplus_csv(tmp_path / "fer2013new.csv", votes, [r[2] for r in rows])
    return fer, plus


#            neutral happy surprise sad anger disgust fear contempt unknown NF
VOTES = [
    [8, 0, 0, 1, 1, 0, 0, 0, 0, 0],  # neutral
    [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],  # happy
    None,                              # empty name: not a face, dropped
    [0, 0, 0, 0, 0, 0, 0, 0, 6, 4],  # unknown wins: dropped
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 9],  # NF wins: dropped
    [2, 0, 0, 0, 0, 0, 0, 8, 0, 0],  # contempt: dropped in 7-class, kept in 8-class
]


def test_ferplus_majority_and_drop_rules(tmp_path):
    fer, plus = _ferplus(tmp_path, VOTES)
    data = load_ferplus(fer, plus)
    assert data.classes == FER2013_CLASSES
    assert [data.classes[i] for i in data.labels] == ["neutral", "happy"]
    eight = load_ferplus(fer, plus, eight_classes=True)
    assert eight.classes == FERPLUS8_CLASSES
    assert [eight.classes[i] for i in eight.labels] == ["neutral", "happy", "contempt"]


def test_ferplus_soft_labels(tmp_path):
    fer, plus = _ferplus(tmp_path, VOTES)
    data = load_ferplus(fer, plus, soft=True)
    assert data.soft.shape == (2, 7)
    np.testing.assert_allclose(data.soft.sum(1), 1.0, rtol=1e-6)
    neutral, sad, angry = (FER2013_CLASSES.index(n) for n in ("neutral", "sad", "angry"))
    assert data.soft[0, neutral] == pytest.approx(0.8) and data.soft[0, sad] == pytest.approx(0.1)
    assert data.soft[0, angry] == pytest.approx(0.1)


def test_ferplus_row_count_mismatch(tmp_path):
    rows = fer_rows(per_split=2)
    fer = write_fer_csv(tmp_path / "fer2013.csv", rows)
    plus = write_ferplus_csv(tmp_path / "fer2013new.csv", VOTES[:3], [r[2] for r in rows[:3]])
    with pytest.raises(FerEdgeError, match="3 rows but .*fer2013.csv has 6"):
        load_ferplus(fer, plus)


def test_fer2013_labels_can_carry_each_rows_ferplus_votes(tmp_path):
    """--teacher-votes: FER2013 labels stay, every face gets its own row's votes, dropped rows get zeros."""
    fer, plus = _ferplus(tmp_path, VOTES)
    data = load_dataset(tmp_path, labels="fer2013", votes=True)
    assert len(data) == len(VOTES)  # nothing dropped: the labels are FER2013's
    assert data.labels.tolist() == load_fer2013(fer).labels.tolist()
    expected = np.array([v if v is not None else [0] * 10 for v in VOTES], np.float32)
    np.testing.assert_array_equal(data.votes, expected)
    # A split keeps each face with its votes.
    train = data.split("train")
    np.testing.assert_array_equal(train.votes, expected[data.splits == "train"])
    assert load_dataset(tmp_path, labels="fer2013").votes is None


def test_ferplus_labels_can_carry_each_faces_fer2013_label_as_its_one_vote(tmp_path):
    fer, plus = _ferplus(tmp_path, VOTES)
    data = load_dataset(tmp_path, labels="ferplus", votes=True)
    fer_labels = load_fer2013(fer).labels[[0, 1]]  # the two rows FER+ keeps
    np.testing.assert_array_equal(data.votes, np.eye(7, dtype=np.float32)[fer_labels])
    assert load_dataset(tmp_path, labels="ferplus").votes is None


def test_ferplus_votes_need_a_matching_file_and_a_csv(tmp_path):
    rows = fer_rows(per_split=2)
    write_fer_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(FerEdgeError, match="fer2013new.csv: file not found"):
        load_dataset(tmp_path, votes=True)
    write_ferplus_csv(tmp_path / "fer2013new.csv", VOTES[:3], [r[2] for r in rows[:3]])
    with pytest.raises(FerEdgeError, match="3 rows but .*fer2013.csv has 6"):
        load_dataset(tmp_path, votes=True)
    root = write_image_folders(tmp_path / "ds")
    with pytest.raises(FerEdgeError, match="FER\\+ labels and votes need fer2013.csv"):
        load_dataset(root, votes=True)


# ---------------------------------------------------------------- image folders
def test_image_folders_any_classes_and_size(tmp_path):
    root = write_image_folders(tmp_path / "eint", classes=("anger", "fear", "happiness"), size=128, color=True)
    data = load_image_folders(root, val_fraction=0.25)
    assert data.classes == ("anger", "fear", "happiness")
    assert data.images.shape[1:] == (48, 48)
    counts = {s: int((data.splits == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 9, "val": 3, "test": 12}


def test_image_folder_errors(tmp_path):
    root = write_image_folders(tmp_path / "ds")
    (root / "train" / "empty").mkdir()
    with pytest.raises(FerEdgeError, match=r"train/empty: empty class folder"):
        load_image_folders(root)
    (root / "train" / "empty").rmdir()
    bad = root / "train" / "sad" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(FerEdgeError, match=r"broken.png: unreadable image"):
        load_image_folders(root)
    assert load_image_folders(root, skip_bad=True).skipped == 1
    with pytest.raises(FerEdgeError, match="expected a train/ folder"):
        load_image_folders(tmp_path)


def test_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    from fer_edge.train.cli import main

    path = _bad(tmp_path, fer_rows(per_split=1) + [["3", "1 2", "Training"]])
    code = run_main(main, ["--data", str(path), "--out", str(tmp_path / "runs")], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {path}:5: 2 pixel values, expected 2304 (48x48)"]
