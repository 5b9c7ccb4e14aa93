"""The live view (``fer-device run --serve``): a real server on a free loopback port, real clients, a real browser.

In-process tests feed `LiveView` made-up results (no models) to check access,
routing, error pages and that a stalled client never holds up the frame loop.
The end-to-end tests run ``fer-device run --source demo --serve 127.0.0.1:0``
and compare what the stream, ``/api/state`` and the log say about the same
frames; the browser test loads the page in headless Chromium (skipped, with
the reason, where no Chromium is installed).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
import pytest

from fer_edge.device.boxes import Box
from fer_edge.device.pipeline import STAGES, FrameResult
from fer_edge.device.serve import COOKIE, LiveView, is_loopback, parse_bind, read_token, warn_if_open
from fer_edge.device.track import TrackedFace
from fer_edge.errors import FerEdgeError

_SCRIPT = Path(sys.executable).with_name("fer-device")
FER_DEVICE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fer_edge.device.cli"]
CLASSES = ("happy", "sad")
TOKEN = "s3cret-token_1"


# --------------------------------------------------------------------------- options


def test_bind_addresses_default_to_loopback() -> None:
    assert parse_bind("8080") == ("127.0.0.1", 8080)
    assert parse_bind("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("http", "host:port", "70000"):
        with pytest.raises(FerEdgeError, match="--serve"):
            parse_bind(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    assert warn_if_open("0.0.0.0", None) and "--serve-token" in warn_if_open("0.0.0.0", None)
    assert warn_if_open("0.0.0.0", TOKEN) is None and warn_if_open("127.0.0.1", None) is None


def test_token_from_option_or_file(tmp_path) -> None:
    assert read_token(None, None) is None
    assert read_token(f" {TOKEN} ", None) == TOKEN
    file = tmp_path / "token"
    file.write_text(f"{TOKEN}\n")
    assert read_token(None, file) == TOKEN
    file.write_text("\n")
    with pytest.raises(FerEdgeError, match="empty"):
        read_token(None, file)
    with pytest.raises(FerEdgeError, match="cannot read"):
        read_token(None, tmp_path / "missing")
    for bad in ("short", "has space in it", "semi;colon-token", "quote\"token1"):
        with pytest.raises(FerEdgeError, match="--serve-token"):
            read_token(bad, None)


# --------------------------------------------------------------------------- in process, made-up frames


def _result(index: int, image: Optional[np.ndarray]) -> FrameResult:
    face = TrackedFace(1, Box(40, 30, 140, 130), 0.9, "happy", 0.8, (0.8, 0.2), (0.7, 0.3))
    size = (image.shape[1], image.shape[0]) if image is not None else (640, 480)
    return FrameResult(index, time.time(), "test", size, (face,), (), image, dict.fromkeys(STAGES, 1.0))


@pytest.fixture()
def view() -> Iterator[LiveView]:
    live = LiveView("127.0.0.1", 0, CLASSES, fps=30.0, token=TOKEN, meta={"source": "test"})
    try:
        yield live
    finally:
        live.close()


def _get(view: LiveView, path: str, headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(view.host, view.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _raw(view: LiveView, request: bytes) -> bytes:
    with socket.create_connection((view.host, view.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_token_is_required_on_every_route(view: LiveView) -> None:
    for path in ("/", "/app.js", "/api/state", "/stream.mjpg", "/api/events"):
        assert _get(view, path)[0] == 401
        assert _get(view, path, {"Authorization": "Bearer wrong-token-123"})[0] == 403
        assert _get(view, path + "?token=wrong-token-123")[0] == 403
        assert _get(view, path, {"Cookie": f"{COOKIE}=wrong-token-123"})[0] == 403
    status, headers, body = _get(view, "/", BEARER)
    assert status == 200 and b"<img id=\"live\"" in body and "default-src 'self'" in headers["Content-Security-Policy"]
    # First visit with ?token=: a cookie carries it from then on, and the address bar loses it.
    status, headers, _ = _get(view, f"/?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/" and f"{COOKIE}={TOKEN}" in headers["Set-Cookie"]
    assert "HttpOnly" in headers["Set-Cookie"]
    status, _, body = _get(view, "/api/state", {"Cookie": f"{COOKIE}={TOKEN}"})
    assert status == 200 and json.loads(body)["run"] == {"source": "test"}
    assert _get(view, f"/api/state?token={TOKEN}")[0] == 200


def test_only_the_served_assets_exist(view: LiveView) -> None:
    for path in ("/../", "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd", "//etc/passwd",
                 "/web/index.html", "/index.html/..", "/app.js/../serve.py", "/serve.py", "/api/", "/api/state/x",
                 "/%2fetc%2fpasswd", "/static/../../pyproject.toml"):
        status, _, body = _get(view, path, BEARER)
        assert status == 404, path
        assert body == b"404 Not Found\n"
    status, headers, body = _get(view, "/style.css", BEARER)
    assert status == 200 and headers["Content-Type"].startswith("text/css") and b"body" in body


def test_errors_never_repeat_the_request(view: LiveView) -> None:
    evil = "<script>alert(1)</script>"
    for response in (
        _raw(view, f"GET /{evil} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()),
        _raw(view, f"GET /{evil} HTTP/1.0\r\n\r\n".encode()),  # 401
        _raw(view, f"{evil} / HTTP/1.0\r\n\r\n".encode()),  # a bad method name
        _raw(view, f"GET / HTTP/9{evil}\r\n\r\n".encode()),  # a bad version
        _raw(view, f"POST /api/state?x={evil} HTTP/1.0\r\nContent-Length: 0\r\n\r\n".encode()),
    ):
        assert b"<script" not in response.lower() and b"alert" not in response, response
        # The body is the status line's text, nothing more (a request too malformed to have a version
        # gets no headers at all, as HTTP/0.9 would).
        assert re.fullmatch(rb"(HTTP/1\.\d (\d{3}) [^\r]*\r\n(.+\r\n)*\r\n)?(400|401|404|405|501) [A-Za-z ]+\n",
                            response, re.DOTALL), response


def _green_excess(pixels: np.ndarray) -> float:
    """How much greener than red and blue some BGR pixels are on average: the annotator's boxes are (60, 220, 60)."""
    b, g, r = pixels.reshape(-1, 3).astype(float).mean(axis=0)
    return float(g - (b + r) / 2)


def _stalled_client(view: LiveView) -> socket.socket:
    """Asks for the stream and never reads: its receive window fills and the server's send blocks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((view.host, view.port))
    sock.sendall(f"GET /stream.mjpg HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    return sock


def _read_parts(response: http.client.HTTPResponse, count: int) -> list[tuple[int, bytes]]:
    """(frame index, JPEG) of the next `count` parts of a multipart/x-mixed-replace response."""
    parts = []
    while len(parts) < count:
        line = response.readline()
        if not line:
            break
        if line.strip() != b"--frame":
            continue
        headers = {}
        while (line := response.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        jpeg = response.read(int(headers["content-length"]))
        parts.append((int(headers["x-frame"]), jpeg))
    return parts


def test_frames_are_encoded_only_while_someone_watches_and_a_stalled_client_never_blocks(view: LiveView) -> None:
    rng = np.random.default_rng(0)
    # Noise compresses badly: 200 kB JPEGs fill a stalled client's socket buffers (a few MB) in a few frames.
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    for i in range(20):
        view(_result(i, images[i % 4]))
    assert view.encoded == 0 and view.watchers == 0  # nobody watching: nothing copied, nothing encoded

    stalled = _stalled_client(view)
    reader = http.client.HTTPConnection(view.host, view.port, timeout=10)
    reader.request("GET", "/stream.mjpg", headers=BEARER)
    response = reader.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    done = threading.Event()
    fed = [0]

    def frame_loop() -> None:  # what the pipeline does: call the sink, frame after frame
        index = 20
        while not done.is_set():
            view(_result(index, images[index % 4]))
            index += 1
            fed[0] = index
            time.sleep(0.002)

    loop = threading.Thread(target=frame_loop, daemon=True)
    loop.start()
    try:
        parts = _read_parts(response, 40)  # far more than the stalled client's buffers hold
    finally:
        done.set()
        loop.join(timeout=30)
    assert not loop.is_alive(), "the frame loop blocked"
    assert len(parts) == 40 and view.watchers == 2
    # The stalled client was really stalled: it got a fraction of what the reader got, the rest it skipped.
    stalled.setblocking(False)
    stalled_bytes = 0
    try:
        while chunk := stalled.recv(1 << 20):
            stalled_bytes += len(chunk)
    except BlockingIOError:
        pass
    assert stalled_bytes < sum(len(jpeg) for _, jpeg in parts) / 2
    indexes = [index for index, _ in parts]
    assert indexes == sorted(indexes) and len(set(indexes)) == 40
    assert all(index >= 20 for index in indexes)  # nothing was encoded before anyone watched
    decoded = cv2.imdecode(np.frombuffer(parts[-1][1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (480, 640, 3)
    # The boxes were drawn on the encoder's copy, never on the frame loop's image.
    assert not any(np.array_equal(img[30, 40:140], np.tile((60, 220, 60), (100, 1))) for img in images)
    assert _green_excess(decoded[32:128, 40]) > 30  # the box's left edge (1 pixel wide, JPEG-blurred)
    assert abs(_green_excess(decoded[32:128, 200])) < 15  # noise elsewhere
    # Closing with both clients still connected (the stalled one mid-send) returns promptly.
    closer = threading.Thread(target=view.close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive()
    stalled.close()
    reader.close()


def test_state_and_events_report_the_latest_frame_and_the_minutes(view: LiveView) -> None:
    base = (time.time() // 60 - 2) * 60
    for i, ts in enumerate((base + 1, base + 2, base + 61, base + 125)):
        result = _result(i, None)
        view(FrameResult(result.index, ts, result.origin, result.size, result.faces, (), None, result.timings))
    state = json.loads(_get(view, "/api/state", BEARER)[2])
    assert state["frame"] == 3 and state["faces"][0]["box"] == [40, 30, 140, 130]
    assert state["faces"][0]["label"] == "happy" and state["faces"][0]["face"] == 1
    timeline = state["timeline"]
    assert [m["frames"] for m in timeline] == [2, 1, 1] and timeline[-1]["partial"] is True
    assert timeline[0]["counts"] == {"happy": 2} and "partial" not in timeline[0]
    assert state["figures"]["frames"] == 4 and state["figures"]["median_ms"]["detect"] == 1.0
    conn = http.client.HTTPConnection(view.host, view.port, timeout=10)
    conn.request("GET", "/api/events", headers=BEARER)
    response = conn.getresponse()
    assert response.getheader("Content-Type") == "text/event-stream"
    line = response.readline()
    assert line.startswith(b"data: ") and json.loads(line[6:])["frame"] == 3
    conn.close()


# --------------------------------------------------------------------------- fer-device end to end


class _Run:
    """A ``fer-device run --serve 127.0.0.1:0`` process; `url` is read from its start-up lines."""

    def __init__(self, *args: str, env: Optional[dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen([*FER_DEVICE, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"fer-device exited early: {''.join(self.lines)}")
            self.lines.append(line)
            match = re.search(r"live view at (http://[\d.:]+/)", line)
            if match:
                self.url = match.group(1)
        host, port = self.url[len("http://"):-1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self._drain = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._drain.start()

    def get(self, path: str, headers: Optional[dict[str, str]] = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self, timeout: float = 60) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("fer-device did not stop on SIGTERM with clients connected")
        self._drain.join(timeout=10)
        return "".join(self.lines)


def _log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stream_state_and_log_describe_the_same_frames(tmp_path) -> None:
    log = tmp_path / "run.jsonl"
    env = {**os.environ, "FER_EDGE_SERVE_TOKEN": TOKEN}
    run = _Run("--source", "demo", "--loop", "--fps", "20", "--resolution", "320x240", "--headless", "--threads", "1",
               "--log", str(log), "--serve", "127.0.0.1:0", "--serve-fps", "20", env=env)
    stalled = socket.create_connection((run.host, run.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /stream.mjpg HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    try:
        assert run.get("/api/state")[0] == 401
        assert run.get("/api/state", {"Authorization": "Bearer not-the-token"})[0] == 403
        assert run.get("/..%2f..%2fpyproject.toml", BEARER)[0] == 404
        reader = http.client.HTTPConnection(run.host, run.port, timeout=20)
        reader.request("GET", "/stream.mjpg", headers=BEARER)
        parts = _read_parts(reader.getresponse(), 30)
        state = json.loads(run.get("/api/state", BEARER)[1])
    finally:
        err = run.stop()  # SIGTERM while the reader, the stalled client and the socket above are connected
    stalled.close()
    assert run.proc.returncode == 0, err
    records = _log_records(log)
    assert records[-1]["type"] == "end" and records[-1]["end_reason"] == "stopped by SIGTERM"
    faces_by_frame: dict[int, list[dict]] = {}
    for record in records:
        if record["type"] == "face":
            faces_by_frame.setdefault(record["frame"], []).append(record)
    # /api/state's faces are the log's records of that frame, field for field.
    assert state["faces"] and state["faces"] == faces_by_frame[state["frame"]]
    assert state["run"]["source"] == "demo" and state["timeline"] and state["figures"]["frames"] >= state["frame"]
    # Each streamed JPEG decodes, and shows the log's boxes for its frame (the annotator's green).
    assert len(parts) == 30
    checked = 0
    for index, jpeg in parts:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (240, 320, 3)
        for face in faces_by_frame.get(index, []):
            x0, y0, x1, y1 = face["box"]
            if x0 < 0 or y0 < 0 or x1 >= 320 or y1 >= 240:  # partly outside the picture: its edge is not drawn
                continue
            assert _green_excess(image[y0 + 2:y1 - 2, x0]) > 30, (index, face["box"])
            checked += 1
    assert checked >= 10
    frames = [index for index, _ in parts]
    assert frames == sorted(frames) and frames[-1] <= records[-1]["frames"]


def _chromium() -> Optional[str]:
    """A Chromium that starts (Ubuntu's ``chromium`` can be a stub that asks for a snap)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            try:
                ok = subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                return path
    return None


def test_a_real_browser_shows_the_live_image_and_the_timeline(tmp_path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no working Chromium found (Debian: apt-get install chromium; .ci/run installs it)")
    run = _Run("--source", "demo", "--loop", "--fps", "15", "--resolution", "320x240", "--headless", "--threads", "1",
               "--serve", "127.0.0.1:0", "--serve-token", TOKEN)
    try:
        # --timeout ends the load (the MJPEG stream never finishes) and dumps the DOM the page's scripts built.
        dom = ""
        for _ in range(3):  # a slow first start of the browser on a loaded machine
            done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                   "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                                   "--timeout=8000",
                                   f"{run.url}?token={TOKEN}"], capture_output=True, text=True, timeout=120)
            dom = done.stdout
            if 'class="minute"' in dom and re.search(r'id="video-size" data-width="[1-9]', dom):
                break
            time.sleep(1)
    finally:
        run.stop()
    assert run.proc.returncode == 0
    assert re.search(r'id="video-size" data-width="320">320×240<', dom), dom[:3000]  # the <img> decoded frames
    assert dom.count('class="minute"') >= 1  # the timeline has entries
    assert re.search(r'id="status" class="status live">live · frame \d+', dom)
    assert re.search(r"<td>\d+</td><td>[A-Z][a-z]+</td>", dom)  # a face row: track id, emotion


def test_open_bind_warns_and_bad_addresses_fail_in_one_line(tmp_path) -> None:
    done = subprocess.run([*FER_DEVICE, "run", "--source", "demo", "--max-frames", "3", "--resolution", "160x120",
                           "--headless", "--threads", "1", "--serve", "0.0.0.0:0"],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "FER_EDGE_SERVE_TOKEN"})
    assert done.returncode == 0, done.stderr
    assert "warning: --serve on 0.0.0.0 without --serve-token" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for value, message in ((f"127.0.0.1:{port}", "cannot listen there"),
                               ("localhost:http", "expected [HOST:]PORT")):
            done = subprocess.run([*FER_DEVICE, "run", "--source", "demo", "--max-frames", "3", "--headless",
                                   "--serve", value], capture_output=True, text=True, timeout=120)
            assert done.returncode == 2 and f"error: --serve {value}" in done.stderr and message in done.stderr
            assert "Traceback" not in done.stderr
    missing = tmp_path / "no-token"
    done = subprocess.run([*FER_DEVICE, "run", "--source", "demo", "--serve", "8080", "--serve-token-file",
                           str(missing)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(f"error: {missing}")
