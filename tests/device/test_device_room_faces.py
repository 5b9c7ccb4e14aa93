"""Issue 41: YuNet from the bundle (decoding and box mapping at several scales), stills, bad detector files.

Every image is made here from scikit-image's astronaut photo; the tiny
not-YuNet ONNX model is written byte by byte (`identity_onnx`), so no extra
package is needed.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from device_fakes import ASTRONAUT_FACE

from fer_edge.device.boxes import Box
from fer_edge.device.cli import cli
from fer_edge.device.detect import (
    DEFAULT_OPTIONS, DetectorOptions, StillDetector, YuNetDetector, make_detector, resolve_detector,
)
from fer_edge.device.sources import describe_source, is_image_file, open_source
from fer_edge.errors import FerEdgeError

FACE = Box(*ASTRONAUT_FACE)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: int | bytes) -> bytes:
    key = _varint((num << 3) | wire)
    if wire == 0:
        return key + _varint(int(payload))  # type: ignore[arg-type]
    return key + _varint(len(payload)) + payload  # type: ignore[arg-type]


def _text(num: int, s: str) -> bytes:
    return _field(num, 2, s.encode())


def identity_onnx(dims: tuple[int, ...] = (1, 3, 240, 320)) -> bytes:
    """A valid ONNX model (opset 13, one Identity node) that is not YuNet: right file type, wrong outputs."""
    def value_info(name: str) -> bytes:
        shape = b"".join(_field(1, 2, _field(1, 0, d)) for d in dims)
        return _text(1, name) + _field(2, 2, _field(1, 2, _field(1, 0, 1) + _field(2, 2, shape)))

    node = _text(1, "input") + _text(2, "output") + _text(4, "Identity")
    graph = _field(1, 2, node) + _text(2, "g") + _field(11, 2, value_info("input")) + _field(12, 2, value_info("output"))
    return _field(1, 0, 8) + _field(7, 2, graph) + _field(8, 2, _text(1, "") + _field(2, 0, 13))


@pytest.fixture(scope="module")
def yunet(bundle):
    path = bundle.detector_file("yunet")
    assert path is not None and path.is_file()
    return path


def test_bundle_default_is_yunet_and_legacy_bundles_fall_back(bundle, legacy_bundle) -> None:
    assert resolve_detector("auto", bundle) == "yunet"
    assert make_detector("auto", bundle).name == "yunet"
    # A BlazeFace-only bundle keeps working: auto means its BlazeFace, with BlazeFace's own filters.
    assert resolve_detector("auto", legacy_bundle) == "blazeface"
    detector = make_detector("auto", legacy_bundle)
    assert detector.name == "blazeface" and detector.options == DEFAULT_OPTIONS["blazeface"]


@pytest.mark.arm64
@pytest.mark.parametrize("scale", [0.3, 0.6, 1.0, 1.8, 4.2])
def test_yunet_boxes_and_landmarks_at_several_scales(yunet, astronaut_gray, scale) -> None:
    # The photo scaled by `scale` on a 640x480 grey canvas (cut by its edges when bigger).
    photo = cv2.resize(astronaut_gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640), 90, np.uint8)
    ox, oy = 40, 10
    if scale > 1.2:  # the face near the middle of the frame
        ox, oy = int(320 - FACE.center[0] * scale), int(240 - FACE.center[1] * scale)
    src_x0, src_y0 = max(0, -ox), max(0, -oy)
    dst_x0, dst_y0 = max(0, ox), max(0, oy)
    w = min(photo.shape[1] - src_x0, 640 - dst_x0)
    h = min(photo.shape[0] - src_y0, 480 - dst_y0)
    frame[dst_y0:dst_y0 + h, dst_x0:dst_x0 + w] = photo[src_y0:src_y0 + h, src_x0:src_x0 + w]
    truth = FACE.scale(scale).translate(ox, oy)
    detector = make_detector("yunet", model_path=yunet)  # the default: enlarged pass + coarse pass, merged
    faces = detector(frame)
    assert len(faces) == 1
    face = faces[0]
    assert face.score >= DEFAULT_OPTIONS["yunet"].min_confidence
    assert face.box.iou(truth) > 0.6
    assert len(face.keypoints) == 5
    (rx, ry), (lx, ly), (nx, ny) = face.keypoints[:3]
    # Eyes in the upper half of the box, the nose between them and below: landmarks in frame pixels.
    for x, y in ((rx, ry), (lx, ly)):
        assert face.box.x0 < x < face.box.x1 and face.box.y0 < y < face.box.center[1]
    assert min(rx, lx) < nx < max(rx, lx) and ny > max(ry, ly)


@pytest.mark.arm64
def test_yunet_shrinks_inside_and_maps_back(yunet, astronaut_gray) -> None:
    frame = np.full((480, 640), 90, np.uint8)
    frame[:480, 64:576] = astronaut_gray[:480]
    full = YuNetDetector(yunet, max_side=0)(frame)
    small = YuNetDetector(yunet, max_side=320)
    assert small.detect_size(640, 480) == (320, 240)
    big = YuNetDetector(yunet, scale=1.5, max_side=800)
    assert big.detect_size(640, 480) == (800, 600) and big.detect_size(320, 240) == (480, 360)
    enlarged = big(frame)
    assert len(enlarged) == 1 and enlarged[0].box.iou(full[0].box) > 0.8
    assert big.coarse_size(640, 480) is None  # no coarse pass unless asked for
    big.coarse_scale = 0.5
    assert big.coarse_size(640, 480) == (320, 240) and YuNetDetector(yunet, coarse_scale=0.5).coarse_size(640, 480) is None
    merged = big(frame)  # settings changed: the passes are set up again; one face from both passes
    assert len(merged) == 1 and merged[0].box.iou(full[0].box) > 0.8
    shrunk = small(frame)
    assert len(full) == len(shrunk) == 1
    assert shrunk[0].box.iou(full[0].box) > 0.8  # same face, in the 640x480 frame's pixels
    for (x0, y0), (x1, y1) in zip(full[0].keypoints, shrunk[0].keypoints):
        assert abs(x0 - x1) < 6 and abs(y0 - y1) < 6
    assert small(np.full((240, 320), 128, np.uint8)) == ()  # a frame size change re-sizes the buffers


def test_bad_yunet_files_give_one_line_errors(tmp_path, bundle) -> None:
    cases = {"missing": (tmp_path / "gone.onnx", "YuNet model file not found")}
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not protobuf" * 50)
    cases["corrupt"] = (corrupt, "not a usable YuNet model")
    wrong = tmp_path / "identity.onnx"
    wrong.write_bytes(identity_onnx())
    cases["wrong outputs"] = (wrong, "not a usable YuNet model .*cls_8")
    cases["a TFLite file"] = (bundle.detector_file("blazeface"), "not a usable YuNet model")
    for path, message in cases.values():
        with pytest.raises(FerEdgeError, match=message) as info:
            make_detector("yunet", bundle, path)
        assert "\n" not in str(info.value)
    # Through the CLI: exit 2, one line, nothing else.
    result = CliRunner().invoke(cli, ["run", "--source", "demo", "--headless", "--max-frames", "1",
                                      "--detector-model", str(wrong)], catch_exceptions=True)
    assert isinstance(result.exception, FerEdgeError) and "cls_8" in str(result.exception)


def test_padded_retry_finds_a_face_that_fills_the_photo(bundle, astronaut_gray) -> None:
    # A close-up cut at the brows and chin: the face fills the photo.
    x0, y0, x1, y1 = (int(v) for v in (FACE.x0 + 8, FACE.y0 + 22, FACE.x1 - 8, FACE.y1 - 4))
    close_up = cv2.resize(astronaut_gray[y0:y1, x0:x1], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    blaze = make_detector("blazeface", bundle)
    assert blaze(close_up) == ()  # what the plain detector gives
    still = StillDetector(make_detector("blazeface", bundle))
    faces = still(close_up)
    assert len(faces) == 1 and still.retries == 1
    h, w = close_up.shape
    box = faces[0].box
    assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
    assert box.area > 0.4 * w * h  # the face fills the photo, so its box does too
    assert all(-w * 0.2 < x < w * 1.2 and -h * 0.2 < y < h * 1.2 for x, y in faces[0].keypoints)
    # A photo with a face found at once is not retried; an empty one is searched twice and gives nothing.
    assert len(still(astronaut_gray)) == 1 and still.retries == 1
    assert still(np.full((300, 400), 128, np.uint8)) == ()


def test_stills_keep_their_resolution(bundle) -> None:
    still = StillDetector(make_detector("yunet", bundle))
    assert still.inner.max_side == 2048 and still.inner.scale == 1.0 and still.name == "yunet"


def test_every_format_opencv_reads_is_an_image(tmp_path, astronaut_bgr) -> None:
    ok, gif = cv2.imencode(".gif", astronaut_bgr) if cv2.haveImageWriter("x.gif") else (False, None)
    if not ok:
        pytest.skip(f"this OpenCV ({cv2.__version__}) cannot write GIF to make the test image")
    (tmp_path / "astronaut.gif").write_bytes(gif.tobytes())
    (tmp_path / "no_suffix").write_bytes(cv2.imencode(".png", astronaut_bgr)[1].tobytes())
    (tmp_path / "notes.txt").write_text("not an image")
    assert describe_source(str(tmp_path / "astronaut.gif")) == "image"
    assert is_image_file(tmp_path / "no_suffix") and not is_image_file(tmp_path / "notes.txt")
    with open_source(str(tmp_path)) as source:
        origins = []
        while (frame := source.read()) is not None:
            origins.append(frame.origin.rsplit("/", 1)[1])
            assert frame.gray.shape == (512, 512)
    assert origins == ["astronaut.gif", "no_suffix"]


def test_save_images_writes_annotated_copies(tmp_path, astronaut_bgr) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut_bgr)
    cv2.imwrite(str(photos / "b.jpg"), np.full((240, 320, 3), 128, np.uint8))  # no face
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "--source", str(photos), "--json", "--save-images", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [len(r["faces"]) for r in records] == [1, 0]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]  # no temporary files left
    annotated = cv2.imread(str(out / "a.png"))
    assert annotated.shape == astronaut_bgr.shape
    x0, y0, x1, y1 = records[0]["faces"][0]["box"]
    diff = np.abs(annotated.astype(int) - astronaut_bgr.astype(int)).sum(axis=2) > 60
    assert diff[y0:y1 + 1, x0].mean() > 0.5  # the box's left edge is drawn
    assert diff.mean() < 0.1  # and little else changed
    plain = cv2.imread(str(out / "b.jpg"))
    assert plain.shape == (240, 320, 3)
    # A single photo works too; a video source is refused in one line.
    single = tmp_path / "single"
    result = CliRunner().invoke(cli, ["run", "--source", str(photos / "a.png"), "--save-images", str(single)])
    assert result.exit_code == 0 and (single / "a.png").is_file()
    result = CliRunner().invoke(cli, ["run", "--source", "demo", "--save-images", str(single)])
    assert "--save-video" in str(result.exception)
    result = CliRunner().invoke(cli, ["run", "--source", str(photos), "--save-images", str(photos / "a.png")])
    assert "it is a file" in str(result.exception)


def test_detector_options_per_detector() -> None:
    assert DetectorOptions() == DEFAULT_OPTIONS["yunet"]
    assert DEFAULT_OPTIONS["blazeface"].min_confidence < DEFAULT_OPTIONS["yunet"].min_confidence
    assert DEFAULT_OPTIONS["yunet"].max_faces > 5  # a room holds more than five people


def test_info_reports_the_detectors() -> None:
    facts = json.loads(CliRunner().invoke(cli, ["info", "--json"]).output)
    assert facts["bundle"]["detector"] == "yunet"
    assert [d["kind"] for d in facts["bundle"]["detectors"]] == ["yunet", "blazeface"]
    assert facts["bundle"]["detectors"][0]["model"] == "yunet-n" and facts["bundle"]["detectors"][0]["license"]
    text = CliRunner().invoke(cli, ["info"]).output
    assert "default detector yunet" in text and "detector yunet: yunet-n (detector-yunet.onnx)" in text
