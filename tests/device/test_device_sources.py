"""Every source type without a camera: images, folders, video files, streams and cameras
through a fake `cv2.VideoCapture`, picamera2 through a fake with its interface, the demo clip."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from device_fakes import FakeCapture, FakeCaptureFactory, FakePicamera2

from fer_edge.device.demo import DemoSource, astronaut_path, write_demo_video
from fer_edge.device.detect import BlazeFaceDetector
from fer_edge.device.sources import (
    OpenCVSource,
    PiCameraSource,
    StopFlag,
    describe_source,
    open_source,
    parse_resolution,
)
from fer_edge.errors import FerEdgeError


def _frame(value: int = 100, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def _read_all(source) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append((frame.index, frame.gray.copy(), frame.origin))
    return frames


def test_describe_and_parse() -> None:
    assert describe_source("demo") == "demo"
    assert describe_source("0") == "camera"
    assert describe_source("/dev/video2") == "camera"
    assert describe_source("rtsp://cam.local/stream") == "stream"
    assert describe_source("photo.JPG") == "image"
    assert describe_source("clip.mp4") == "video"
    assert parse_resolution("640x480") == (640, 480)
    with pytest.raises(FerEdgeError, match="WIDTHxHEIGHT"):
        parse_resolution("640")


def test_single_image(tmp_path, astronaut_bgr) -> None:
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), astronaut_bgr)
    with open_source(str(path)) as source:
        assert source.still
        frames = _read_all(source)
    assert len(frames) == 1
    index, gray, origin = frames[0]
    assert gray.shape == (512, 512) and origin == str(path)


def test_folder_skips_and_counts_corrupt_images(tmp_path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), _frame(50 * i))
    (tmp_path / "1b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "notes.txt").write_text("ignored: not an image name")
    with open_source(str(tmp_path)) as source:
        frames = _read_all(source)
        assert source.stats.skipped == 1
    assert [origin.rsplit("/", 1)[1] for _, _, origin in frames] == ["0.png", "1.png", "2.png"]
    assert [int(gray.mean()) for _, gray, _ in frames] == [0, 50, 100]


def test_bad_paths_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FerEdgeError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"garbage")
    with pytest.raises(FerEdgeError, match="not a readable image"):
        open_source(str(bad_image))
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"garbage" * 100)
    with pytest.raises(FerEdgeError, match="cannot read video file"):
        open_source(str(bad_video))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FerEdgeError, match="no image files"):
        open_source(str(empty))
    with pytest.raises(FerEdgeError, match="unsupported URL scheme"):
        open_source("ftp://example.com/video")
    with pytest.raises(FerEdgeError, match="no camera at 97"):
        open_source("97")


def test_unreachable_stream_url() -> None:
    # Port 9 on localhost: refused at once, no network needed.
    with pytest.raises(FerEdgeError, match="cannot open stream"):
        open_source("http://127.0.0.1:9/stream.mjpg", reconnect_timeout=0)


def test_video_file_and_loop(tmp_path) -> None:
    path = write_demo_video(tmp_path / "clip.mp4", frames=4, resolution=(160, 120))
    with open_source(str(path)) as source:
        assert not source.live and source.fps == pytest.approx(15.0)
        frames = _read_all(source)
        assert source.end_reason is None
    assert len(frames) == 4 and frames[0][1].shape == (120, 160)
    with open_source(str(path), loop=True) as source:
        assert [source.read().index for _ in range(9)] == list(range(9))


def test_stream_url_opens_with_timeouts() -> None:
    factory = FakeCaptureFactory([FakeCapture([_frame(), _frame()])])
    source = OpenCVSource("rtsp://cam.local/live", "stream", capture_factory=factory, reconnect_timeout=0)
    assert source.live
    url, api, params = factory.calls[0]
    assert url == "rtsp://cam.local/live" and api == cv2.CAP_ANY
    assert cv2.CAP_PROP_OPEN_TIMEOUT_MSEC in params
    assert len(_read_all(source)) == 2


def test_camera_sets_resolution_and_skips_corrupt_frames() -> None:
    capture = FakeCapture([_frame(10), "empty", "none", _frame(20), np.zeros((5, 5, 7), np.uint8), _frame(30)])
    source = OpenCVSource(0, "camera", resolution=(320, 240), fps=10, capture_factory=FakeCaptureFactory([capture]),
                          reconnect_timeout=0)
    assert capture.props[cv2.CAP_PROP_FRAME_WIDTH] == 320 and capture.props[cv2.CAP_PROP_FPS] == 10
    frames = _read_all(source)
    assert [int(g.mean()) for _, g, _ in frames] == [10, 20, 30]
    assert source.stats.skipped == 3


def test_camera_that_drops_mid_run_reconnects_then_gives_up() -> None:
    stop = StopFlag()
    factory = FakeCaptureFactory([
        FakeCapture([_frame(1), _frame(2), _frame(3), "fail"]),  # unplugged after 3 frames
        FakeCapture([], opened=False),  # still gone at the first retry
        FakeCapture([_frame(4), _frame(5)]),  # back; then gone for good
    ])
    source = OpenCVSource(0, "camera", capture_factory=factory, reconnect_timeout=0.3, stop=stop,
                          backoff=(0.01, 0.05))
    frames = _read_all(source)
    assert [int(g.mean()) for _, g, _ in frames] == [1, 2, 3, 4, 5]
    assert source.stats.reconnects == 1
    assert "lost" in source.end_reason
    source.close()  # safe after giving up


def test_stop_cuts_a_reconnect_short() -> None:
    stop = StopFlag()
    source = OpenCVSource(0, "camera", capture_factory=FakeCaptureFactory([FakeCapture(["fail"])]),
                          reconnect_timeout=60, stop=stop, backoff=(5.0, 5.0))
    stop.set("test")
    assert source.read() is None
    assert source.end_reason is None  # stopped, not lost


def test_picamera2_uses_the_lores_y_plane_without_its_stride_padding(astronaut_bgr, bundle) -> None:
    FakePicamera2.image = cv2.resize(astronaut_bgr, (640, 480))
    FakePicamera2.instances.clear()
    source = PiCameraSource(resolution=(640, 480), lores=(320, 240), fps=20, picamera2_class=FakePicamera2)
    camera = FakePicamera2.instances[0]
    assert camera.started and camera.config["lores"]["format"] == "YUV420"
    assert camera.config["controls"] == {"FrameRate": 20.0}
    frame = source.read()
    assert frame.gray.shape == (240, 320)  # cut to the configured width, not the stride
    assert frame.gray[:, -1].mean() < 250  # no padding bytes (255) in the picture
    assert frame.image.shape == (480, 640, 3)
    assert frame.scale == (2.0, 2.0) and frame.size == (640, 480)
    assert camera.released_requests == 1
    # The lores frame is good enough to find the face on.
    assert len(BlazeFaceDetector(bundle.detector_path)(frame.gray)) == 1
    source.close()
    assert camera.stopped and camera.closed


def test_picamera2_headless_skips_main_and_reports_a_missing_module(monkeypatch) -> None:
    FakePicamera2.image = np.full((480, 640, 3), 90, np.uint8)
    source = PiCameraSource(need_image=False, picamera2_class=FakePicamera2)
    frame = source.read()
    assert frame.image is None and frame.gray.shape == (240, 320)
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(FerEdgeError, match="apt install python3-picamera2"):
        open_source("picamera2")


def test_picamera2_without_a_camera() -> None:
    def no_camera(num: int) -> None:
        raise IndexError("list index out of range")

    with pytest.raises(FerEdgeError, match="no camera available"):
        PiCameraSource(picamera2_class=no_camera)


def test_demo_clip(astronaut_bgr) -> None:
    source = DemoSource((320, 240), frames=6)
    frames = _read_all(source)
    assert len(frames) == 6 and frames[0][1].shape == (240, 320)
    assert not np.array_equal(frames[0][1], frames[5][1])  # it moves
    assert astronaut_path().name == "astronaut.png"


def test_demo_without_scikit_image(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(FerEdgeError, match=r"pip install fer-edge\[demo\]"):
        open_source("demo")
