"""Face detectors: BlazeFace decoding (anchors, NMS) on a real face, Haar, YuNet's errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from device_fakes import ASTRONAUT_FACE

from fer_edge.device.boxes import Box, Detection
from fer_edge.device.detect import (
    BlazeFaceDetector,
    DetectorOptions,
    HaarDetector,
    YuNetDetector,
    blazeface_anchors,
    find_haar_cascade,
    make_detector,
    weighted_nms,
)
from fer_edge.errors import FerEdgeError

FACE = Box(*ASTRONAUT_FACE)


def test_box_geometry() -> None:
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 30, 30)) == 0.0
    assert a.scale(2.0, 0.5) == Box(0, 0, 20, 5)
    assert Box.from_xywh(1, 2, 3, 4) == Box(1, 2, 4, 6)
    assert Box(-5, -5, 700, 20).clip(640, 480) == Box(0, 0, 640, 20)


def test_short_range_anchors_match_mediapipe_layout() -> None:
    anchors = blazeface_anchors(128, (8, 16, 16, 16), 2)
    assert anchors.shape == (896, 2)
    # First feature map 16x16 with 2 anchors per cell, then 8x8 with 6.
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])
    assert blazeface_anchors(192, (4,), 1).shape == (2304, 2)


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    kept = weighted_nms(boxes, scores, 0.3)
    assert [round(s, 2) for _, s in kept] == [0.9, 0.8]
    merged = kept[0][0]
    np.testing.assert_allclose(merged, (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5, rtol=1e-5)


@pytest.mark.arm64
def test_blazeface_finds_the_astronaut(bundle, astronaut_gray) -> None:
    detector = BlazeFaceDetector(bundle.detector_path, threads=1)
    faces = detector(astronaut_gray)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.6
    assert face.box.iou(FACE) > 0.7
    assert len(face.keypoints) == 6
    # Eyes inside the box, in its upper half.
    for x, y in face.keypoints[:2]:
        assert face.box.x0 < x < face.box.x1 and face.box.y0 < y < face.box.center[1]


def test_blazeface_letterboxes_non_square_frames_and_mirrors(bundle, astronaut_gray) -> None:
    detector = BlazeFaceDetector(bundle.detector_path)
    # A landscape frame: the photo on the left of a 640x512 canvas.
    wide = np.zeros((512, 640), np.uint8)
    wide[:, :512] = astronaut_gray
    (face,) = detector(wide)
    assert face.box.iou(FACE) > 0.7
    # Mirrored: the box mirrors too (the buffers are reused across frame sizes).
    (mirrored,) = detector(np.ascontiguousarray(astronaut_gray[:, ::-1]))
    assert mirrored.box.iou(Box(512 - FACE.x1, FACE.y0, 512 - FACE.x0, FACE.y1)) > 0.6
    assert detector(np.full((240, 320), 128, np.uint8)) == ()


def test_detector_filters_min_face_and_max_faces(bundle, astronaut_gray) -> None:
    assert BlazeFaceDetector(bundle.detector_path, DetectorOptions(min_face=200))(astronaut_gray) == ()
    # Two astronauts side by side (head crops, so each face stays big enough), at most one kept.
    head = astronaut_gray[20:240, 120:330]
    pair = np.concatenate([head, head[:, ::-1]], axis=1)
    assert len(BlazeFaceDetector(bundle.detector_path)(pair)) == 2
    assert len(BlazeFaceDetector(bundle.detector_path, DetectorOptions(max_faces=1))(pair)) == 1


@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="this OpenCV has no CascadeClassifier")
def test_haar_finds_the_astronaut(astronaut_gray) -> None:
    try:
        detector = HaarDetector()
    except FerEdgeError as exc:
        pytest.skip(str(exc))
    faces = detector(astronaut_gray)
    assert len(faces) >= 1
    assert faces[0].box.iou(FACE) > 0.5
    assert faces[0].score == 1.0
    # Large frames are shrunk for speed; boxes come back in the frame's pixels.
    big = cv2.resize(astronaut_gray, (1024, 1024))
    assert HaarDetector(max_side=512)(big)[0].box.iou(FACE.scale(2.0)) > 0.5


def test_haar_errors_are_clear(tmp_path) -> None:
    # OpenCV 5 has no CascadeClassifier at all; 4.x has it but not this file.
    expected = "cascade file not found" if hasattr(cv2, "CascadeClassifier") else "no CascadeClassifier"
    with pytest.raises(FerEdgeError, match=expected):
        find_haar_cascade(tmp_path / "missing.xml")


def test_yunet_needs_a_model_path(tmp_path) -> None:
    with pytest.raises(FerEdgeError, match="--detector-model"):
        YuNetDetector(None)
    with pytest.raises(FerEdgeError, match="not found"):
        YuNetDetector(tmp_path / "face_detection_yunet.onnx")
    with pytest.raises(FerEdgeError, match="--detector-model"):
        make_detector("yunet")


def test_make_detector(bundle, tmp_path) -> None:
    assert make_detector("blazeface", bundle).name == "blazeface"
    with pytest.raises(FerEdgeError, match="unknown detector"):
        make_detector("mtcnn", bundle)
    with pytest.raises(FerEdgeError, match="no BlazeFace detector"):
        make_detector("blazeface", None)
    not_a_model = tmp_path / "x.tflite"
    not_a_model.write_bytes(b"not a flatbuffer")
    with pytest.raises(FerEdgeError, match="not a usable TFLite model"):
        make_detector("blazeface", model_path=not_a_model)
    # The emotion model is a TFLite model, but not a BlazeFace.
    with pytest.raises(FerEdgeError, match="not a BlazeFace"):
        make_detector("blazeface", model_path=bundle.model_path)


def test_detection_scale() -> None:
    d = Detection(Box(10, 10, 20, 20), 0.9, ((12.0, 14.0),))
    assert d.scale(2.0) == Detection(Box(20, 20, 40, 40), 0.9, ((24.0, 28.0),))
