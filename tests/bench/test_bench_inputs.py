"""Unusable inputs and options fail with one ``error: ...`` line and exit code 2, before any model loads."""

from __future__ import annotations

import pytest
from helpers import run_main

from fer_edge.benchmarks.cli import main
from fer_edge.errors import FerEdgeError


@pytest.fixture
def not_a_video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_text("this is not a video\n")
    return path


@pytest.fixture
def a_photo(tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    return path


@pytest.mark.parametrize("args, message", [
    (["--source", "{tmp}/missing.mp4"], "no such file"),
    (["--source", "{video}"], "cannot read video file"),
    (["--source", "{photo}"], "still images make no frame rate"),
    (["--source", "{video}", "--resolution", "640x480"], "keeps its own size"),
    (["--resolution", "big"], "--resolution: 'big' is not valid"),
    (["--threads", "0"], "--threads: '0' is not valid"),
    (["--faces", "two"], "--faces: 'two' is not valid"),
    (["--detector", "mtcnn"], "unknown detector 'mtcnn'"),
    (["--sinks", "window"], "unknown sink(s) window"),
    (["--model", "{tmp}/none.tflite"], "none.tflite not found"),
    (["--model", "{video}"], "neither a .tflite file nor a bundle"),
    (["--face-image", "{video}"], "not a readable image"),
    (["--face-image", "{tmp}/nope.jpg"], "nope.jpg: face image not found"),
    (["--bundle", "{tmp}"], "not a fer-edge bundle"),
])
def test_unusable_input_is_one_clear_error(args, message, tmp_path, not_a_video, a_photo, monkeypatch, capsys):
    args = [a.format(tmp=tmp_path, video=not_a_video, photo=a_photo) for a in args]
    args += ["--frames", "2", "--warmup", "0", "--no-progress", "--out", str(tmp_path / "o")]
    if "--threads" not in args:
        args += ["--threads", "1"]
    code = run_main(main, args, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "bench.json").exists()


def test_without_scikit_image_the_synthetic_input_points_to_face_image(tmp_path, monkeypatch, capsys):
    """A device install has no scikit-image: the default input's error says how to go on without it."""
    import fer_edge.device.demo as demo

    def no_photo():
        raise FerEdgeError("the demo clip needs the sample photo from scikit-image")

    monkeypatch.setattr(demo, "astronaut_path", no_photo)
    code = run_main(main, ["--frames", "2", "--warmup", "0", "--threads", "1", "--no-progress",
                           "--out", str(tmp_path / "o")], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "--face-image" in err and "Traceback" not in err
