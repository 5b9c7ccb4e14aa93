"""``fer-bench detect``: the scoring on hand-made boxes, the pasting at known boxes, a tiny real run.

Nothing is timed; the tiny run uses only the photos scikit-image and
matplotlib ship (wild-faces is not needed) and checks the report's shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import needs_face_photo
from helpers import run_main

from fer_edge.benchmarks.cli import main
from fer_edge.benchmarks.detect_bench import FacePhoto, compose, match_faces, to_markdown
from fer_edge.device.boxes import Box

TRUTH = Box(100, 100, 140, 150)  # a 50-px-tall face


def test_a_box_on_the_face_counts_whatever_its_style() -> None:
    square_and_lower = Box(98, 110, 146, 158)  # BlazeFace-like: square, shifted down
    assert match_faces([square_and_lower], [TRUTH]) == ([0], 0)
    assert match_faces([TRUTH], [TRUTH]) == ([0], 0)


def test_boxes_off_the_face_or_the_wrong_size_are_false_faces() -> None:
    beside = Box(150, 100, 190, 150)  # the collar next to the face: centre outside the face
    tiny = Box(115, 115, 125, 124)  # inside, but 9 px for a 50-px face
    huge = Box(0, 0, 300, 300)  # the face's centre inside, but 6x its height
    for box in (beside, tiny, huge):
        assert match_faces([box], [TRUTH]) == ([None], 1)
    assert match_faces([], [TRUTH]) == ([None], 0)
    assert match_faces([beside], []) == ([], 1)  # on an empty frame every box is false


def test_each_detection_pairs_once_nearest_first() -> None:
    a, b = Box(0, 0, 40, 50), Box(30, 0, 70, 50)  # two overlapping faces
    near_b = Box(32, 2, 72, 52)
    matched, false = match_faces([near_b, Box(1, 0, 41, 50)], [a, b])
    assert matched == [1, 0] and false == 0
    # Two detections of one face: one pairs, the other is a false face.
    assert match_faces([Box(100, 100, 140, 150), Box(102, 101, 141, 152)], [TRUTH]) == ([0], 1)


@pytest.mark.parametrize("height", [16, 48, 160, "fill"])
def test_compose_puts_the_face_at_the_known_box(height) -> None:
    photo = np.zeros((200, 160), np.uint8)
    photo[50:150, 40:120] = 255  # the "face": a white 80x100 block at a known box
    face = FacePhoto(photo, Box(40, 50, 120, 150), "happy", "block")
    background = np.full((300, 400), 20, np.uint8)
    frame, box = compose(face, background, height, np.random.default_rng(3))
    assert frame.shape == (480, 640)
    expected = 400 if height == "fill" else height
    assert box.height == pytest.approx(min(expected, 480), abs=1.5)
    inner = frame[int(box.y0 + box.height * 0.3):int(box.y1 - box.height * 0.3),
                  int(box.x0 + box.width * 0.3):int(box.x1 - box.width * 0.3)]
    assert inner.size and inner.mean() > 200  # the white block is where the box says
    assert frame[0, 0] < 60 or box.y0 < 5  # background elsewhere


@needs_face_photo
def test_tiny_detect_run_writes_table_and_plot(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "detect"
    code = run_main(main, ["detect", "--faces", "1", "--empty-frames", "3", "--timing-frames", "5",
                           "--out", str(out), "--no-progress"], monkeypatch)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "detect.json").read_text())
    names = [d["name"] for d in report["detectors"]]
    assert names[0] == "default (yunet)" and "blazeface short" in names
    assert report["config"]["faces"]["used"] >= 1
    for row in report["detectors"]:
        assert row["status"] == "ok"
        assert set(row["heights"]) == {"16", "20", "24", "32", "48", "64", "96", "160", "fill"}
        assert set(row["detect_ms"]) == {"320x240", "640x480"}
        assert 0 <= row["heights"]["96"]["recall"] <= 1 and row["empty_frames"] == 3
        assert row["demo"]["frames"] == 150 and 0 <= row["demo"]["frames_with_box_off_face"] <= 150
    # The default detector finds the shipped photos' faces at 96 px (the astronaut at least).
    assert report["detectors"][0]["heights"]["96"]["found"] >= 1
    md = (out / "detect.md").read_text()
    assert md == to_markdown(report) and "| default (yunet) |" in md and "false / 100 empty frames" in md
    assert (out / "detect.png").is_file() and (out / "detect.png").stat().st_size > 10_000


def test_detect_errors_are_one_line(tmp_path, monkeypatch, capsys) -> None:
    code = run_main(main, ["detect", "--wild-faces", str(tmp_path / "nowhere")], monkeypatch)
    assert code == 2 and "--wild-faces" in capsys.readouterr().err
    code = run_main(main, ["detect", "--detector", "x=mtcnn"], monkeypatch)
    assert code == 2 and "NAME=KIND" in capsys.readouterr().err
    assert Path(tmp_path).is_dir()


def test_wild_faces_scoring_on_hand_made_lines() -> None:
    from fer_edge.benchmarks.wild_faces import score

    lines = [
        '{"image": "imgs/a.jpg", "faces": [{"box": [0, 0, 10, 10], "label": "sad"}, '
        '{"box": [0, 0, 50, 50], "label": "happy"}]}',  # the largest face answers: right
        '{"image": "imgs/b.jpg", "faces": []}',  # no face: wrong
        '{"image": "imgs/c.jpg", "faces": [{"box": [0, 0, 9, 9], "label": "sad"}]}',  # wrong label
        "fer-device: a status line, ignored",
    ]
    r = score(lines, {"a.jpg": "happy", "b.jpg": "happy", "c.jpg": "angry"})
    assert r == {"photos": 3, "no_face": 1, "no_face_rate": 1 / 3, "accuracy": 1 / 3}
