"""Frame sources: where frames come from, each giving a grayscale frame for the models.

`open_source` turns a ``--source`` value into one of:

- ``picamera2``: `PiCameraSource`, main stream to display, lores YUV420 Y plane to detect on
- ``0``, ``1``, ``/dev/video0``: `OpenCVSource` camera; reconnects if it drops
- ``clip.mp4``: `OpenCVSource` video file
- ``rtsp://...``, ``http://...``: `OpenCVSource` stream; reconnects if it drops
- ``photo.jpg`` or a folder: `ImageSource`, still images, one frame each
- ``demo``: `DemoSource`, the built-in clip (`fer_edge.device.demo`)
- ``auto`` (the default): picamera2 if that module is installed, else camera 0

Every source yields `Frame` objects from `read()` and returns ``None`` when it
is done; `end_reason` then says why if it was not a normal end (a camera that
stayed lost). Corrupt or empty frames are skipped and counted in `stats`;
live sources (cameras, streams) that stop delivering are reopened with
exponential backoff for `reconnect_timeout` seconds before giving up.

Frame buffers are reused: a frame's arrays are valid until the next `read()`,
as with picamera2's own requests. Keep a copy if you need one longer.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import to_gray

log = logging.getLogger("fer_edge.device")

#: Names taken for images even when OpenCV cannot read the content, so a broken photo is reported as one.
#: Whether a file IS an image is OpenCV's call (`is_image_file`): any format the installed build decodes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".gif"})
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"})
DEFAULT_RESOLUTION = (640, 480)


class StopFlag:
    """Set by a signal handler (or a window's 'q' key); checked by the loop between frames.

    `sleep` waits in short slices so a stop request cuts a reconnect backoff short.
    """

    def __init__(self) -> None:
        self._set = False
        self.reason = ""

    def set(self, reason: str = "stopped") -> None:
        if not self._set:
            self.reason = reason
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if stopped meanwhile."""
        end = time.monotonic() + seconds
        while not self._set:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
        return self._set


def install_stop_handlers(stop: StopFlag) -> Callable[[], None]:
    """Make SIGINT and SIGTERM finish the current frame and stop; returns a function that restores the old handlers.

    A second Ctrl-C raises `KeyboardInterrupt` for the impatient (files are
    still closed by their ``with`` blocks).
    """
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set(f"stopped by {signal.Signals(signum).name}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    `gray` (2-D uint8) is what detection and classification see; `image` is
    the BGR frame to draw on and display (``None`` if the source was told no
    one needs it). `scale` maps `gray` pixel coordinates to `image` ones: it
    is (1, 1) except for picamera2, whose lores stream is smaller than main.
    `origin` is the file a still image came from, else the source's name.
    """

    index: int
    timestamp: float
    gray: np.ndarray
    image: Optional[np.ndarray]
    scale: tuple[float, float]
    origin: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the display frame."""
        h, w = self.gray.shape[:2]
        return (int(round(w * self.scale[0])), int(round(h * self.scale[1])))


@dataclass
class SourceStats:
    """Counters a run summary reports."""

    delivered: int = 0
    skipped: int = 0
    reconnects: int = 0


def _valid(image: Optional[np.ndarray]) -> bool:
    """A frame worth processing: a non-empty uint8 image with a plausible shape."""
    return (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3)
        and image.shape[0] > 0 and image.shape[1] > 0 and (image.ndim == 2 or image.shape[2] in (1, 3, 4))
    )


class _GrayBuffer:
    """Grayscale conversion into a buffer reused while the frame size stays the same."""

    def __init__(self) -> None:
        self._buf: Optional[np.ndarray] = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return image
        if image.shape[2] == 1:
            return image[:, :, 0]
        if self._buf is None or self._buf.shape != image.shape[:2]:
            self._buf = np.empty(image.shape[:2], np.uint8)
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code, dst=self._buf)


class Source:
    """Base class: ``read()`` -> `Frame` or None at the end; use as a context manager."""

    name: str = "source"
    fps: Optional[float] = None
    live: bool = False  # a camera or stream: may drop and come back
    still: bool = False  # independent still images: no tracking across them

    def __init__(self) -> None:
        self.stats = SourceStats()
        self.end_reason: Optional[str] = None  # set when the source gave up (not a normal end)

    def read(self) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _frame(self, gray: np.ndarray, image: Optional[np.ndarray], origin: Optional[str] = None,
               scale: tuple[float, float] = (1.0, 1.0)) -> Frame:
        frame = Frame(self.stats.delivered, time.time(), gray, image, scale, origin or self.name)
        self.stats.delivered += 1
        return frame


# --------------------------------------------------------------------------- still images


class ImageSource(Source):
    """Still images: one file, or every image file in a folder (sorted by name).

    An unreadable image in a folder is skipped and counted; a single
    unreadable file is an error when the source is opened.
    """

    still = True

    def __init__(self, paths: Sequence[Path], loop: bool = False, name: Optional[str] = None) -> None:
        super().__init__()
        if not paths:
            raise FerEdgeError("no images to read")
        self.paths = list(paths)
        self.loop = loop
        self.name = name or str(self.paths[0])
        self._next = 0

    def read(self) -> Optional[Frame]:
        while True:
            if self._next >= len(self.paths):
                if not self.loop or self.stats.delivered == 0:
                    return None
                self._next = 0
            path = self.paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if not _valid(image):
                self.stats.skipped += 1
                log.warning("%s: not a readable image, skipped", path)
                continue
            return self._frame(to_gray(image), image, origin=str(path))


# --------------------------------------------------------------------------- OpenCV capture


class _QuietOpenCV:
    """Silence OpenCV's own log while probing a device or URL; our error message says it all."""

    def __enter__(self) -> None:
        logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
        self._mod = logging_mod
        if logging_mod is not None:
            self._old = logging_mod.getLogLevel()
            logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)

    def __exit__(self, *exc: Any) -> None:
        if self._mod is not None:
            self._mod.setLogLevel(self._old)


class OpenCVSource(Source):
    """A camera index or device, a video file, or a stream URL, read with `cv2.VideoCapture`.

    `capture_factory` (default `cv2.VideoCapture`) is called as
    ``factory(target)``, or ``factory(target, apiPreference, params)`` for
    streams; tests pass a fake with the same ``read``/``isOpened``/``get``/
    ``set``/``release`` methods.
    """

    def __init__(
        self,
        target: int | str,
        kind: str,
        resolution: Optional[tuple[int, int]] = None,
        fps: Optional[float] = None,
        loop: bool = False,
        reconnect_timeout: float = 30.0,
        stop: Optional[StopFlag] = None,
        capture_factory: Callable[..., Any] = cv2.VideoCapture,
        backoff: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        super().__init__()
        if kind not in ("camera", "video", "stream"):
            raise ValueError(f"unknown capture kind {kind}")
        self.target, self.kind = target, kind
        self.live = kind != "video"
        self.name = f"camera {target}" if kind == "camera" else str(target)
        self.resolution, self.requested_fps = resolution, fps
        self.loop = loop
        self.reconnect_timeout = reconnect_timeout
        self.stop = stop or StopFlag()
        self.backoff = backoff
        self._factory = capture_factory
        self._gray = _GrayBuffer()
        self._buf: Optional[np.ndarray] = None
        self._bad_in_a_row = 0
        self._cap = self._open()
        if self._cap is None:
            what = {"camera": "no camera at", "video": "cannot read video file", "stream": "cannot open stream"}[kind]
            raise FerEdgeError(f"{what} {target}")
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported if 0 < reported < 1000 else fps

    def _open(self) -> Optional[Any]:
        """A fresh, opened capture, or None."""
        with _QuietOpenCV():
            if self.kind == "stream":
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000]
                cap = self._factory(self.target, cv2.CAP_ANY, params)
            else:
                cap = self._factory(self.target)
            if not cap.isOpened():
                cap.release()
                return None
        if self.kind == "camera":
            if self.resolution:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.resolution[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.resolution[1])
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of stale ones
        return cap

    def read(self) -> Optional[Frame]:
        while not self.stop.is_set():
            ok, image = self._cap.read(self._buf)
            if ok and _valid(image):
                self._bad_in_a_row = 0
                self._buf = image
                return self._frame(self._gray(image), image)
            if ok:  # the capture delivered something, but not an image: skip it
                self.stats.skipped += 1
                self._bad_in_a_row += 1
                if self._bad_in_a_row < 50:
                    continue
            if not self._recover():
                return None
        return None

    def _recover(self) -> bool:
        """After a failed read: True to keep reading, False to end the source."""
        if self.kind == "video":
            total = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
            pos = self._cap.get(cv2.CAP_PROP_POS_FRAMES)
            if total > 0 and pos < total - 1 and self._bad_in_a_row < 25:  # a broken frame mid-file
                self.stats.skipped += 1
                self._bad_in_a_row += 1
                return True
            if self.loop and self.stats.delivered > 0:
                self._cap.release()
                self._cap = self._open()
                self._bad_in_a_row = 0
                return self._cap is not None
            return False
        return self._reconnect()

    def _reconnect(self) -> bool:
        """Reopen a dropped camera or stream with exponential backoff, up to `reconnect_timeout` seconds."""
        self._cap.release()
        log.warning("%s: no frames, reconnecting for up to %g s", self.name, self.reconnect_timeout)
        lost_at = time.monotonic()
        delay = self.backoff[0]
        while True:
            left = self.reconnect_timeout - (time.monotonic() - lost_at)
            if left <= 0:
                break
            if self.stop.sleep(min(delay, left)):
                return False
            delay = min(delay * 2, self.backoff[1])
            cap = self._open()
            if cap is None:
                continue
            self._cap = cap
            self._bad_in_a_row = 0
            self.stats.reconnects += 1
            log.warning("%s: reconnected", self.name)
            return True
        self._cap = _ClosedCapture()
        self.end_reason = f"{self.name}: lost, no frames for {self.reconnect_timeout:g} s"
        return False

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()


class _ClosedCapture:
    """Stands in for a capture that could not be reopened, so `close` stays safe."""

    def read(self, *_: Any) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass


# --------------------------------------------------------------------------- picamera2


class PiCameraSource(Source):
    """A Raspberry Pi camera through picamera2 (imported only when this source is asked for).

    Two streams from one request: ``main`` (BGR, what is shown and saved) and
    ``lores`` (YUV420), whose Y plane *is* a grayscale frame, so detection
    costs no colour conversion. The lores rows can be padded to a stride
    wider than the image; the Y plane is cut to the configured width.
    `scale` maps lores boxes onto main. With ``need_image=False`` (headless,
    no video) main is not copied out at all.

    `picamera2_class` lets tests pass a fake with picamera2's interface.
    """

    live = True

    def __init__(
        self,
        resolution: tuple[int, int] = DEFAULT_RESOLUTION,
        lores: Optional[tuple[int, int]] = None,
        fps: Optional[float] = None,
        need_image: bool = True,
        reconnect_timeout: float = 30.0,
        stop: Optional[StopFlag] = None,
        camera_num: int = 0,
        picamera2_class: Optional[Callable[..., Any]] = None,
    ) -> None:
        super().__init__()
        if picamera2_class is None:
            try:
                from picamera2 import Picamera2  # type: ignore[import-not-found]
            except ImportError:
                raise FerEdgeError(
                    "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
                    "and create the venv with --system-site-packages"
                ) from None
            picamera2_class = Picamera2
        self._camera_class = picamera2_class
        self.name = f"picamera2 {camera_num}"
        self.camera_num = camera_num
        self.resolution = resolution
        self.lores = lores or (resolution[0] // 2 // 2 * 2, resolution[1] // 2 // 2 * 2)
        self.fps = fps
        self.need_image = need_image
        self.reconnect_timeout = reconnect_timeout
        self.stop = stop or StopFlag()
        self._cam: Any = None
        self._start()

    def _start(self) -> None:
        try:
            cam = self._camera_class(self.camera_num)
        except Exception as exc:  # IndexError (no camera) or RuntimeError (busy) from libcamera
            raise FerEdgeError(f"no camera available to picamera2 ({exc.__class__.__name__}: {exc})") from None
        controls = {"FrameRate": float(self.fps)} if self.fps else {}
        config = cam.create_video_configuration(
            main={"size": tuple(self.resolution), "format": "RGB888"},  # RGB888 is BGR byte order, as OpenCV wants
            lores={"size": tuple(self.lores), "format": "YUV420"},
            controls=controls,
        )
        cam.configure(config)
        main, lores = cam.stream_configuration("main"), cam.stream_configuration("lores")
        self._lores_w, self._lores_h = lores["size"]
        self._stride = lores["stride"]
        main_w, main_h = main["size"]
        self._scale = (main_w / self._lores_w, main_h / self._lores_h)
        cam.start()
        self._cam = cam

    def read(self) -> Optional[Frame]:
        while not self.stop.is_set():
            try:
                request = self._cam.capture_request()
                try:
                    buffer = request.make_buffer("lores")
                    image = request.make_array("main") if self.need_image else None
                finally:
                    request.release()
            except Exception as exc:  # the camera went away mid-run
                log.warning("%s: capture failed (%s)", self.name, exc)
                if not self._reconnect():
                    return None
                continue
            h, w, stride = self._lores_h, self._lores_w, self._stride
            if buffer is None or buffer.size < stride * h:
                self.stats.skipped += 1
                continue
            gray = np.asarray(buffer, np.uint8)[: stride * h].reshape(h, stride)[:, :w]
            return self._frame(gray, image, scale=self._scale)
        return None

    def _reconnect(self) -> bool:
        self._close_camera()
        lost_at, delay = time.monotonic(), 0.5
        while time.monotonic() - lost_at < self.reconnect_timeout:
            if self.stop.sleep(min(delay, max(0.0, self.reconnect_timeout - (time.monotonic() - lost_at)))):
                return False
            delay = min(delay * 2, 8.0)
            try:
                self._start()
            except FerEdgeError:
                continue
            self.stats.reconnects += 1
            return True
        self.end_reason = f"{self.name}: lost, no frames for {self.reconnect_timeout:g} s"
        return False

    def _close_camera(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            for method in ("stop", "close"):
                try:
                    getattr(cam, method)()
                except Exception:  # closing a camera that already failed
                    pass

    def close(self) -> None:
        self._close_camera()


# --------------------------------------------------------------------------- factory


def parse_resolution(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) < 16 or int(match.group(2)) < 16:
        raise FerEdgeError(f"resolution '{text}' is not WIDTHxHEIGHT (e.g. 640x480)")
    return int(match.group(1)), int(match.group(2))


def describe_source(spec: str) -> str:
    """The kind of source a ``--source`` value names, without opening it."""
    if spec == "auto":
        try:
            return "picamera2" if importlib.util.find_spec("picamera2") else "camera"
        except (ImportError, ValueError):
            return "camera"
    if spec in ("demo", "picamera2"):
        return spec
    if spec.isdigit() or spec.startswith("/dev/video"):
        return "camera"
    if "://" in spec:
        return "stream"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in IMAGE_SUFFIXES or is_image_file(path):
        return "image"
    return "video"


def is_image_file(path: Path) -> bool:
    """Whether the installed OpenCV has a decoder for this file (it reads the file's signature, not its name).

    So every format this OpenCV build reads is accepted (GIF since 4.7,
    AVIF, JPEG 2000, OpenEXR... as compiled in), and a video is not mistaken
    for one. False for a file that does not exist.
    """
    if not path.is_file():
        return False
    with _QuietOpenCV():
        try:
            return bool(cv2.haveImageReader(str(path)))
        except cv2.error:
            return False


def open_source(
    spec: str,
    resolution: Optional[tuple[int, int]] = None,
    fps: Optional[float] = None,
    loop: bool = False,
    need_image: bool = True,
    reconnect_timeout: float = 30.0,
    stop: Optional[StopFlag] = None,
    lores: Optional[tuple[int, int]] = None,
) -> Source:
    """Open the source a ``--source`` value names; a `FerEdgeError` says what is wrong if it can't.

    `resolution` and `fps` apply to cameras and the demo clip; files keep their own.
    """
    kind = describe_source(spec)
    if kind == "picamera2":
        return PiCameraSource(resolution or DEFAULT_RESOLUTION, lores, fps, need_image, reconnect_timeout, stop)
    if kind == "demo":
        from fer_edge.device.demo import DemoSource

        return DemoSource(resolution or DEFAULT_RESOLUTION, fps=fps or 15.0, loop=loop)
    if kind == "camera":
        target: int | str = int(spec) if spec.isdigit() else (0 if spec == "auto" else spec)
        return OpenCVSource(target, "camera", resolution, fps, reconnect_timeout=reconnect_timeout, stop=stop)
    if kind == "stream":
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in STREAM_SCHEMES:
            raise FerEdgeError(f"unsupported URL scheme '{scheme}://' (supported: {', '.join(sorted(STREAM_SCHEMES))})")
        return OpenCVSource(spec, "stream", reconnect_timeout=reconnect_timeout, stop=stop)
    path = Path(spec)
    if kind == "folder":
        images = sorted(p for p in path.iterdir()
                        if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_image_file(p)))
        if not images:
            raise FerEdgeError(f"{path}: no image files (none that this OpenCV {cv2.__version__} can read)")
        return ImageSource(images, loop=loop, name=str(path))
    if not path.exists():
        raise FerEdgeError(f"{path}: no such file")
    if not path.is_file():
        raise FerEdgeError(f"{path}: not a file")
    if kind == "image":
        if cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
            raise FerEdgeError(f"{path}: not a readable image")
        return ImageSource([path], loop=loop)
    return OpenCVSource(str(path), "video", loop=loop, stop=stop)
