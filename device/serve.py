"""The live view: a web page, an MJPEG stream and a JSON state served from the run's own process.

``fer-device run --serve [HOST:]PORT`` adds a `LiveView` sink. It serves::

    /               the page (device/web/: HTML, JS, CSS; nothing from the internet)
    /app.js, /style.css
    /stream.mjpg    multipart/x-mixed-replace JPEG frames, annotated; each part names its frame
                    (X-Frame, X-Timestamp), the number the log's records carry
    /api/state      JSON: the latest frame's faces (the log's face records), the per-minute
                    timeline (the log's minute records), the run's figures and facts
    /api/events     Server-Sent Events: the same JSON, pushed a few times a second

Why the standard library's `ThreadingHTTPServer`: it is what picamera2's own
``mjpeg_server.py`` example uses, it adds nothing to the device install, and
a handful of clients on a LAN is all a Pi camera serves.

The frame loop never waits on a client. Per frame, `LiveView.__call__` keeps
a reference to the (immutable) result and counts it into the timeline under
an uncontended lock; only while a stream client is connected, and only when
the ``--serve-fps`` cap says a frame is due and the encoder is idle, does it
copy the image into one preallocated buffer. The encoder thread draws the
boxes on that copy (unless another sink already drew them), JPEG-encodes it
once, and publishes the bytes under a `threading.Condition`; each client
thread sends the newest frame when it is ready for one, so a slow or stalled
client skips frames instead of slowing the run.

Access: with a token (``--serve-token``, ``$FER_EDGE_SERVE_TOKEN`` or
``--serve-token-file``) every request must carry it as ``?token=``, an
``Authorization: Bearer`` header or the cookie the page sets on the first
visit; it is compared in constant time. Only the routes above exist: any
other path, ``/../`` or ``%2e%2e`` included, is a 404, and error pages are
fixed text that never repeat the request.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import logging
import re
import socket
import socketserver
import threading
import time
from collections import deque
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import parse_qs

import cv2
import numpy as np

from fer_edge.device.pipeline import FrameResult, RunSummary, _Stats
from fer_edge.device.sinks import FaceAnnotator, _MinuteCounts, face_record, iso_time, minute_record
from fer_edge.errors import FerEdgeError

log = logging.getLogger("fer_edge.device")

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENV = "FER_EDGE_SERVE_TOKEN"
COOKIE = "fer_edge_token"
#: Minutes of per-minute counts the timeline keeps (finished minutes; the current one is extra).
TIMELINE_MINUTES = 30
#: Frames the figures' median stage times cover.
FIGURES_WINDOW = 300
#: How often `/api/events` pushes the state, per second.
EVENTS_HZ = 4.0
#: Most connections served at once (stream, events and page loads together); more get a 503.
MAX_CONNECTIONS = 32
JPEG_QUALITY = 80
#: The page's files, served from memory: path -> (file in device/web/, content type).
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
BOUNDARY = "frame"
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{8,256}")
_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
)


def parse_bind(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); the host defaults to loopback."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise FerEdgeError(f"--serve {text}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= port <= 65535:
        raise FerEdgeError(f"--serve {text}: port must be 0-65535")
    return host, port


def is_loopback(host: str) -> bool:
    """True for 127.x, ::1 and localhost: nobody else on the network can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token: Optional[str], token_file: Optional[Path]) -> Optional[str]:
    """The access token from ``--serve-token`` (or its environment variable) or a file's first line."""
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").split()
        except OSError as exc:
            raise FerEdgeError(f"{token_file}: cannot read the serve token ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise FerEdgeError(f"{token_file}: the serve token file is not text") from None
        token = lines[0] if lines else None
        if not token:
            raise FerEdgeError(f"{token_file}: the serve token file is empty")
    if token is None:
        return None
    token = token.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise FerEdgeError("--serve-token: use 8 or more letters, digits and . _ ~ - (they pass unchanged in a URL "
                           "and a cookie), e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(16))'")
    return token


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (so a non-editable install serves them too)."""
    web = resources.files("fer_edge.device") / "web"
    try:
        return {route: ((web / name).read_bytes(), kind) for route, (name, kind) in ASSETS.items()}
    except OSError as exc:
        raise FerEdgeError(f"the live view's page is missing from the package ({exc}): reinstall fer-edge") from None


class _FrameSlot:
    """One preallocated image the frame loop hands to the encoder; `busy` while the encoder owns it."""

    def __init__(self) -> None:
        self.image: Optional[np.ndarray] = None
        self.result: Optional[FrameResult] = None
        self.busy = False
        self.ready = threading.Event()

    def fill(self, result: FrameResult, image: np.ndarray) -> None:
        if self.image is None or self.image.shape != image.shape:
            self.image = np.empty_like(image)  # once, or when the frame size changes
        np.copyto(self.image, image)
        self.result = result
        self.busy = True
        self.ready.set()


class LiveView:
    """The live-view sink: keeps the latest result and the timeline, feeds the encoder, runs the server.

    `annotated` says the pipeline already draws the boxes (another sink needs
    the picture), so the encoder must not draw them again. `meta` is the
    run's facts the page shows (runtime, bundle, detector, source...).
    """

    needs_image = False  # the boxes are drawn on the encoder's copy, off the frame loop
    stage = "display"  # its (small) per-frame time counts with the window's

    def __init__(self, host: str, port: int, classes: Sequence[str], fps: float = 10.0,
                 token: Optional[str] = None, meta: Optional[dict[str, Any]] = None, annotated: bool = False,
                 quality: int = JPEG_QUALITY) -> None:
        self.classes = tuple(classes)
        self.period = 1.0 / fps
        self.fps_cap = fps
        self.token = token
        self.meta = dict(meta or {})
        self.quality = quality
        self.assets = load_assets()
        self.started = time.time()
        self._annotator = None if annotated else FaceAnnotator(show_fps=False)
        # Frame loop -> server: the latest result, the timeline and the figures, under one lock.
        self._lock = threading.Lock()
        self._latest: Optional[FrameResult] = None
        self._minutes = _MinuteCounts()
        self._timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_MINUTES)
        self._stats = _Stats(window=FIGURES_WINDOW)
        self._arrivals: deque[float] = deque(maxlen=FIGURES_WINDOW)  # for the recent frame rate
        self._state_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self._summary: Optional[RunSummary] = None
        # Frame loop -> encoder.
        self._slot = _FrameSlot()
        self._next_due = 0.0
        self.watchers = 0  # connected stream clients (changed by client threads, read by the frame loop)
        self.listeners = 0  # connected /api/events clients
        # Encoder -> clients.
        self._jpeg = threading.Condition()
        self._frame: Optional[tuple[int, bytes, int, float]] = None  # (sequence, jpeg, frame index, timestamp)
        self.encoded = 0
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._server = _Server((host, port), self)
        self.host, self.port = self._server.server_address[:2]
        self._threads = [threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                          name="fer-serve-http", daemon=True),
                         threading.Thread(target=self._encode_loop, name="fer-serve-jpeg", daemon=True)]
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    # ------------------------------------------------------------------ frame loop side (never waits)

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self._latest = result
            finished = self._minutes.update(result)
            if finished:
                self._timeline.append(minute_record(*finished, self.classes))
            self._stats.add(result)
            self._arrivals.append(time.perf_counter())
        if not self.watchers or self._slot.busy or result.image is None:
            return
        now = time.perf_counter()
        if now + 0.1 * self.period < self._next_due:
            return
        self._next_due = max(self._next_due, now - self.period) + self.period
        self._slot.fill(result, result.image)

    def close(self, summary: Optional[RunSummary] = None) -> None:
        """Stop serving: wake every client thread, close their sockets, stop the threads."""
        if self._closing.is_set():
            return
        with self._lock:
            self._summary = summary
        self._closing.set()
        self._slot.ready.set()
        with self._jpeg:
            self._jpeg.notify_all()
        deadline = time.monotonic() + 1.0
        while self.listeners and time.monotonic() < deadline:  # let the event streams send the final state
            time.sleep(0.02)
        self._server.shutdown()
        with self._connections_lock:
            for sock in list(self._connections):
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # unblocks a client thread stuck sending to a stalled reader
                except OSError:
                    pass
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # ------------------------------------------------------------------ encoder thread

    def _encode_loop(self) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        sequence = 0
        while True:
            self._slot.ready.wait()
            self._slot.ready.clear()
            if self._closing.is_set():
                return
            result, image = self._slot.result, self._slot.image
            if result is None or image is None:
                continue
            try:
                if self._annotator is not None:
                    self._annotator(dataclasses.replace(result, image=image))
                ok, jpeg = cv2.imencode(".jpg", image, params)
            finally:
                self._slot.busy = False
            if not ok:
                log.warning("live view: a frame could not be JPEG-encoded; skipped")
                continue
            sequence += 1
            with self._jpeg:
                self._frame = (sequence, jpeg.tobytes(), result.index, result.timestamp)
                self.encoded += 1
                self._jpeg.notify_all()

    def next_jpeg(self, after: int, timeout: float = 1.0) -> Optional[tuple[int, bytes, int, float]]:
        """The newest encoded frame newer than sequence `after`, waiting up to `timeout`; None if none."""
        with self._jpeg:
            if self._frame is None or self._frame[0] <= after:
                self._jpeg.wait(timeout)
            frame = self._frame
        return frame if frame is not None and frame[0] > after else None

    # ------------------------------------------------------------------ state (server threads)

    def state(self) -> dict[str, Any]:
        """What `/api/state` returns (see docs/live-view.md); built at most every 0.1 s for all clients."""
        built, cached = self._state_cache
        if cached and time.perf_counter() - built < 0.1 and not self._closing.is_set():
            return cached
        state = self._build_state()
        self._state_cache = (time.perf_counter(), state)
        return state

    def _build_state(self) -> dict[str, Any]:
        with self._lock:  # copy out quickly: the frame loop takes this lock every frame
            latest = self._latest
            timeline = list(self._timeline)
            current = self._minutes
            if current.minute is not None and current.frames:
                timeline.append({**minute_record(current.minute, current.frames, current.faces, dict(current.counts),
                                                 self.classes), "partial": True})
            stats = self._stats
            timings = {name: list(values) for name, values in stats.timings.items() if values}
            frames, faces, labels = stats.frames, stats.faces, dict(stats.labels)
            elapsed = time.perf_counter() - stats.started
            first, last, count = (self._arrivals[0], self._arrivals[-1], len(self._arrivals)) if self._arrivals \
                else (0.0, 0.0, 0)
            summary = self._summary
        now = time.time()
        medians = {name: round(float(np.median(values)), 3) for name, values in timings.items()}
        figures = {
            "frames": frames, "faces": faces,
            "fps": round((count - 1) / (last - first), 2) if count > 1 and last > first else 0.0,
            "fps_run": round(frames / elapsed, 2) if elapsed > 0 else 0.0,
            "elapsed_s": round(elapsed, 1), "uptime_s": round(now - self.started, 1),
            "median_ms": medians, "label_counts": {c: labels[c] for c in self.classes if labels.get(c)},
        }
        return {
            "time": iso_time(now), "classes": list(self.classes),
            "frame": latest.index if latest else None,
            "ts": round(latest.timestamp, 3) if latest else None,
            "size": list(latest.size) if latest else None,
            "faces": [face_record(latest, face, self.classes) for face in latest.faces] if latest else [],
            "timeline": timeline, "figures": figures, "run": self.meta,
            "stream": {"fps_cap": self.fps_cap, "clients": self.watchers, "encoded": self.encoded},
            "ended": summary.to_dict() if summary is not None else None,
        }

    # ------------------------------------------------------------------ access

    def check_token(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> tuple[HTTPStatus, bool]:
        """(OK, came_in_query) or UNAUTHORIZED (none given) / FORBIDDEN (none matched)."""
        if self.token is None:
            return HTTPStatus.OK, False
        offered: list[tuple[str, bool]] = [(value, True) for value in query.get("token", [])]
        auth = handler.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append((auth[7:].strip(), False))
        try:
            cookie = SimpleCookie(handler.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        if COOKIE in cookie:
            offered.append((cookie[COOKIE].value, False))
        if not offered:
            return HTTPStatus.UNAUTHORIZED, False
        expected = self.token.encode("utf-8")
        for value, in_query in offered:
            if hmac.compare_digest(value.encode("utf-8", "surrogateescape"), expected):
                return HTTPStatus.OK, in_query
        return HTTPStatus.FORBIDDEN, False

    def count_watcher(self, step: int) -> None:
        with self._connections_lock:
            self.watchers += step

    def count_listener(self, step: int) -> None:
        with self._connections_lock:
            self.listeners += step

    def _track(self, sock: socket.socket, add: bool) -> bool:
        with self._connections_lock:
            if add:
                if len(self._connections) >= MAX_CONNECTIONS:
                    return False
                self._connections.add(sock)
            else:
                self._connections.discard(sock)
        return True


class _Server(ThreadingHTTPServer):
    """`ThreadingHTTPServer` that knows its `LiveView`; client threads are daemons (picamera2's pattern)."""

    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can hang a Pi with no network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def __init__(self, address: tuple[str, int], view: LiveView) -> None:
        self.view = view
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise FerEdgeError(f"--serve {address[0]}:{address[1]}: cannot listen there "
                               f"({exc.strerror or exc})") from None


class _Handler(BaseHTTPRequestHandler):
    """One connection: routes a GET to the page, the stream, the state or the events; nothing else exists."""

    server: _Server
    timeout = 15  # seconds a socket read or write may block: a stalled client is dropped, never waited on

    def version_string(self) -> str:
        return "fer-device"  # no Python version for the network to see

    def setup(self) -> None:
        super().setup()
        self._tracked = self.server.view._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self._tracked:
            self.server.view._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("live view: %s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """A fixed plain-text error: the status line only, never anything from the request."""
        status = HTTPStatus(code)
        body = f"{status.value} {status.phrase}\n".encode("ascii")
        self.close_connection = True
        try:
            self.send_response(status.value, status.phrase)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Bearer realm="fer-device"')
            for name, value in _SECURITY_HEADERS:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def do_HEAD(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def do_POST(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def do_GET(self) -> None:
        view = self.server.view
        if not self._tracked:
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        path, _, query_text = self.path.partition("?")
        query = parse_qs(query_text, keep_blank_values=True)
        status, token_in_query = view.check_token(self, query)
        if status != HTTPStatus.OK:
            self.send_error(status)
            return
        if path in view.assets:
            self._send_asset(path, view, token_in_query)
        elif path == "/stream.mjpg":
            self._send_stream(view)
        elif path == "/api/state":
            self._send_bytes(json.dumps(view.state(), separators=(",", ":")).encode(), "application/json")
        elif path == "/api/events":
            self._send_events(view)
        else:  # the exact paths above only: no file system behind it, so no traversal to worry about
            self.send_error(HTTPStatus.NOT_FOUND)

    def _start(self, content_type: str, length: Optional[int] = None, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (*_SECURITY_HEADERS, *extra):
            self.send_header(name, value)
        self.end_headers()

    def _send_bytes(self, body: bytes, content_type: str, extra: Sequence[tuple[str, str]] = ()) -> None:
        self._start(content_type, len(body), extra)
        self.wfile.write(body)

    def _send_asset(self, path: str, view: LiveView, token_in_query: bool) -> None:
        if token_in_query:  # keep the token in a cookie, out of the address bar and history
            cookie = f"{COOKIE}={view.token}; Path=/; HttpOnly; SameSite=Strict"
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", path)
            self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Length", "0")
            for name, value in _SECURITY_HEADERS:
                self.send_header(name, value)
            self.end_headers()
            return
        body, kind = view.assets[path]
        self._send_bytes(body, kind)

    def _send_stream(self, view: LiveView) -> None:
        self._start(f"multipart/x-mixed-replace; boundary={BOUNDARY}", extra=(("Connection", "close"),))
        view.count_watcher(+1)
        try:
            sequence = 0
            while not view._closing.is_set():
                frame = view.next_jpeg(sequence)
                if frame is None:
                    continue
                sequence, jpeg, index, ts = frame
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                        f"X-Frame: {index}\r\nX-Timestamp: {ts:.3f}\r\n\r\n").encode("ascii")
                self.wfile.write(head + jpeg + b"\r\n")
        except OSError:  # the client went away, timed out, or the run closed its socket
            pass
        finally:
            view.count_watcher(-1)

    def _send_events(self, view: LiveView) -> None:
        self._start("text/event-stream", extra=(("Connection", "close"),))
        view.count_listener(+1)
        try:
            while True:
                closing = view._closing.is_set()  # after the run: one last state, with its summary
                payload = json.dumps(view.state(), separators=(",", ":"))
                self.wfile.write(f"data: {payload}\n\n".encode())
                if closing:
                    break
                view._closing.wait(1.0 / EVENTS_HZ)
        except OSError:
            pass
        finally:
            view.count_listener(-1)


def warn_if_open(host: str, token: Optional[str]) -> Optional[str]:
    """The warning to print when the page is reachable beyond this machine without a token."""
    if token is None and not is_loopback(host):
        return (f"warning: --serve on {host} without --serve-token: anyone on the network can watch the camera "
                f"(set --serve-token, ${TOKEN_ENV} or --serve-token-file)")
    return None

