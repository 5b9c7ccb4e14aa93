"""Fakes with the interfaces of `cv2.VideoCapture` and picamera2, and where the test face is.

Kept out of conftest.py so tests can import them by a name no other test
folder uses (``from device_fakes import ...``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import cv2
import numpy as np

#: Where the astronaut's face is in astronaut.png (x0, y0, x1, y1), as BlazeFace boxes it (checked by eye).
ASTRONAUT_FACE = (176.0, 75.0, 274.0, 173.0)


class FakeCapture:
    """Stands in for `cv2.VideoCapture`, replaying a script.

    Script items: an ndarray (a good frame), ``"fail"`` (read returns False,
    as when a camera is unplugged), ``"empty"`` (read returns True with an
    empty array, a corrupt frame) or ``"none"`` (True with None). When the
    script runs out, reads fail.
    """

    def __init__(self, script: Sequence[Any], opened: bool = True, fps: float = 30.0) -> None:
        self.script = list(script)
        self.opened = opened
        self.fps = fps
        self.released = False
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self, image: Optional[np.ndarray] = None) -> tuple[bool, Optional[np.ndarray]]:
        if not self.script:
            return False, None
        item = self.script.pop(0)
        if isinstance(item, np.ndarray):
            return True, item.copy()
        if item == "empty":
            return True, np.zeros((0, 0, 3), np.uint8)
        if item == "none":
            return True, None
        return False, None

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else self.props.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def release(self) -> None:
        self.released = True


class FakeCaptureFactory:
    """Returns the given captures one per open (a reconnect opens the next); then unopened ones."""

    def __init__(self, captures: Sequence[FakeCapture]) -> None:
        self.captures = list(captures)
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> FakeCapture:
        self.calls.append(args)
        return self.captures.pop(0) if self.captures else FakeCapture([], opened=False)


class FakeRequest:
    """picamera2's CompletedRequest: make_buffer / make_array / release."""

    def __init__(self, camera: "FakePicamera2") -> None:
        self.camera = camera

    def make_buffer(self, name: str) -> np.ndarray:
        assert name == "lores"
        return self.camera.lores_buffer.copy()

    def make_array(self, name: str) -> np.ndarray:
        assert name == "main"
        return self.camera.main_array.copy()

    def release(self) -> None:
        self.camera.released_requests += 1


class FakePicamera2:
    """The slice of picamera2's `Picamera2` interface the source uses, fed from one BGR image.

    The lores YUV420 buffer has rows padded to a stride wider than the
    image (filled with 255 so a missing crop shows), like real Pi buffers.
    """

    instances: list["FakePicamera2"] = []
    image: np.ndarray = np.zeros((480, 640, 3), np.uint8)
    stride_pad = 64

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config: dict[str, Any] = {}
        self.started = self.stopped = self.closed = False
        self.released_requests = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, lores: dict, controls: dict) -> dict:
        return {"main": dict(main), "lores": dict(lores), "controls": dict(controls)}

    def configure(self, config: dict) -> None:
        self.config = config
        mw, mh = config["main"]["size"]
        lw, lh = config["lores"]["size"]
        self.stride = lw + self.stride_pad
        self.main_array = cv2.resize(self.image, (mw, mh))
        y = cv2.cvtColor(cv2.resize(self.image, (lw, lh)), cv2.COLOR_BGR2GRAY)
        planes = np.full((lh * 3 // 2, self.stride), 255, np.uint8)
        planes[:lh, :lw] = y
        planes[lh:, :] = 128  # U and V
        self.lores_buffer = planes.reshape(-1)

    def stream_configuration(self, name: str) -> dict:
        size = self.config[name]["size"]
        return {"size": tuple(size), "stride": self.stride if name == "lores" else size[0] * 3}

    def start(self) -> None:
        self.started = True

    def capture_request(self) -> FakeRequest:
        return FakeRequest(self)

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True
