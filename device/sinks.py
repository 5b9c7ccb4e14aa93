"""Where results go: the draw stage, the log (JSON Lines or CSV), a video file, a window, stdout.

A sink is called with each `FrameResult` and closed once with the run's
`RunSummary`. Sinks that need a picture set ``needs_image = True``; only then
does the pipeline run the draw stage (`FaceAnnotator`), so a headless logger
never pays for drawing.

The logs are written for unattended boards: the file is opened in append
mode with line buffering, so every line reaches the OS as soon as it is
complete and a ``kill -9`` or a power cut loses at most the line being
written; a full disk or a missing folder is reported as a `FerEdgeError`
naming the file.

JSON Lines records (one object per line, ``type`` says which)::

    {"type": "start", "time": ..., "bundle": ..., "classes": [...], ...}   once per run
    {"type": "face", "time": "2026-11-21T07:30:01.123+00:00", "ts": 1795678201.123,
     "frame": 12, "face": 3, "box": [x0, y0, x1, y1], "score": 0.93,
     "label": "happy", "confidence": 0.71, "probs": {"angry": 0.01, ...},
     "raw": {...}, "ms": {"capture": 0.9, "detect": 2.1, ...}}            per face per frame
    {"type": "minute", "minute": "2026-11-21T07:30+00:00", "frames": 812,
     "faces": 790, "counts": {"happy": 500, "neutral": 290}}               per wall-clock minute
    {"type": "end", "time": ..., "frames": ..., "fps": ..., ...}           the run summary

``probs`` are the smoothed probabilities the label comes from, ``raw`` the
frame's own. ``ms`` holds the stages up to ``draw`` for that frame
(`INFERENCE_STAGES`; the sinks' own time is only known after the line is
written, and is in the run summary's medians). Boxes are in the display
frame's pixels. The CSV log has one row per face with the same fields
flattened (``p_<class>``, ``raw_<class>``, ``ms_<stage>``), per-minute rows
with ``type=minute``, one per class, in ``label`` and ``count``, and one
``type=end`` row per run: frames in ``frame``, face detections in ``count``,
the end reason in ``label``, median stage times in ``ms_<stage>`` and the
whole run summary, as in the JSON ``end`` record, in ``summary``.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

import cv2
import numpy as np

from fer_edge.device.pipeline import INFERENCE_STAGES, FrameResult, RunSummary
from fer_edge.device.sources import StopFlag
from fer_edge.device.track import TrackedFace
from fer_edge.errors import FerEdgeError
from fer_edge.labels import DISPLAY, UNCERTAIN

LOG_FORMATS = ("jsonl", "csv")
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def iso_time(ts: float, timespec: str = "milliseconds") -> str:
    """UTC ISO-8601 time of a Unix timestamp (logs from boards in many time zones compare)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec=timespec)


def check_output_path(path: Path | str, what: str) -> Path:
    """Fail early, with a clear message, on an output path that cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FerEdgeError(f"{path}: cannot write the {what}: folder {parent} does not exist")
    if path.is_dir():
        raise FerEdgeError(f"{path}: cannot write the {what}: it is a folder")
    if not os.access(parent, os.W_OK) and not (path.exists() and os.access(path, os.W_OK)):
        raise FerEdgeError(f"{path}: cannot write the {what}: permission denied")
    return path


def _write_error(path: Path, exc: OSError) -> FerEdgeError:
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return FerEdgeError(f"{path}: cannot write the log: {reason}")


# --------------------------------------------------------------------------- draw stage


class FaceAnnotator:
    """The draw stage: a box, ``Label 87% #id`` and the frame rate, painted in place.

    The frame rate is an exponential average of the interval between draws,
    so it is what a viewer sees; `show_fps=False` leaves it out (the live
    view draws only the frames it streams, whose rate is not the run's).
    """

    def __init__(self, color: tuple[int, int, int] = (60, 220, 60), show_fps: bool = True) -> None:
        self.color = color
        self.show_fps = show_fps  # off for photos, where a frame rate means nothing
        self._last: Optional[float] = None
        self._fps = 0.0

    def __call__(self, result: FrameResult) -> None:
        image = result.image
        if image is None:
            return
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            fps = 1.0 / (now - self._last)
            self._fps = fps if self._fps == 0 else 0.9 * self._fps + 0.1 * fps
        self._last = now
        thickness = max(1, round(min(result.size) / 320))
        for face in result.faces:
            x0, y0, x1, y1 = face.box.as_ints()
            cv2.rectangle(image, (x0, y0), (x1, y1), self.color, thickness)
            text = f"{DISPLAY.get(face.label, face.label)} {face.confidence:.0%} #{face.track_id}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + 4
            if ty + base > image.shape[0]:  # a face filling the photo: the label goes inside the box's top
                ty = y0 + th + 4
            cv2.rectangle(image, (x0, ty - th - 3), (x0 + tw + 4, ty + base - 1), self.color, cv2.FILLED)
            cv2.putText(image, text, (x0 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        if self._fps and self.show_fps:
            cv2.putText(image, f"{self._fps:.1f} FPS", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2,
                        cv2.LINE_AA)


# --------------------------------------------------------------------------- logs


class _MinuteCounts:
    """Counts labels per wall-clock minute; `update` returns the finished minute when one ends."""

    def __init__(self) -> None:
        self.minute: Optional[int] = None
        self.frames = 0
        self.faces = 0
        self.counts: dict[str, int] = {}

    def update(self, result: FrameResult) -> Optional[tuple[int, int, int, dict[str, int]]]:
        minute = int(result.timestamp // 60)
        done = None
        if self.minute is not None and minute != self.minute:
            done = self.flush()
        self.minute = minute
        self.frames += 1
        self.faces += len(result.faces)
        for face in result.faces:
            self.counts[face.label] = self.counts.get(face.label, 0) + 1
        return done

    def flush(self) -> Optional[tuple[int, int, int, dict[str, int]]]:
        if self.minute is None or self.frames == 0:
            return None
        done = (self.minute, self.frames, self.faces, self.counts)
        self.frames, self.faces, self.counts = 0, 0, {}
        return done


def face_record(result: FrameResult, face: TrackedFace, classes: Sequence[str]) -> dict[str, Any]:
    """The JSON log's ``face`` record; the live view's ``/api/state`` serves the same one."""
    return {
        "type": "face", "time": iso_time(result.timestamp), "ts": round(result.timestamp, 3),
        "frame": result.index, "face": face.track_id, "box": list(face.box.as_ints()),
        "score": round(face.score, 4), "label": face.label, "confidence": round(face.confidence, 4),
        "probs": {c: round(p, 4) for c, p in zip(classes, face.probs)},
        "raw": {c: round(p, 4) for c, p in zip(classes, face.raw_probs)},
        "ms": {s: round(result.timings[s], 3) for s in INFERENCE_STAGES},
    }


def minute_record(minute: int, frames: int, faces: int, counts: dict[str, int],
                  classes: Sequence[str]) -> dict[str, Any]:
    """The JSON log's ``minute`` record (from `_MinuteCounts`); also the live view's timeline entries and MQTT's summary."""
    return {"type": "minute", "minute": iso_time(minute * 60, "minutes"), "frames": frames, "faces": faces,
            "counts": {c: counts[c] for c in (*classes, UNCERTAIN) if c in counts}}


class _LineLog:
    """A line-buffered append-only text file that turns OS errors into `FerEdgeError`."""

    needs_image = False
    stage = "log"

    def __init__(self, path: Path | str, classes: Sequence[str]) -> None:
        self.path = check_output_path(path, "log")
        self.classes = tuple(classes)
        self._minutes = _MinuteCounts()
        try:
            self._file: Optional[TextIO] = open(self.path, "a", encoding="utf-8", newline="", buffering=1)
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def _write(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text)
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def __call__(self, result: FrameResult) -> None:
        finished = self._minutes.update(result)
        if finished:
            self._write_minute(*finished)
        for face in result.faces:
            self._write_face(result, face)

    def close(self, summary: Optional[RunSummary] = None) -> None:
        if self._file is None:
            return
        try:
            finished = self._minutes.flush()
            if finished:
                self._write_minute(*finished)
            if summary is not None:
                self._write_end(summary)
            self._file.flush()
            if self.path.is_file():  # not for /dev/stdout or a pipe
                os.fsync(self._file.fileno())  # the summary survives a power cut right after the run
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """Close the file without writing more (after a failed write at start-up)."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # the buffered text cannot be written either
                pass

    def _write_face(self, result: FrameResult, face: TrackedFace) -> None:
        raise NotImplementedError

    def _write_minute(self, minute: int, frames: int, faces: int, counts: dict[str, int]) -> None:
        raise NotImplementedError

    def _write_end(self, summary: RunSummary) -> None:
        pass


class JsonlLog(_LineLog):
    """The JSON Lines log (see the module docstring for its records)."""

    def __init__(self, path: Path | str, classes: Sequence[str], meta: Optional[dict[str, Any]] = None,
                 with_origin: bool = False) -> None:
        super().__init__(path, classes)
        self.with_origin = with_origin
        now = time.time()
        try:
            self._line({"type": "start", "time": iso_time(now), "ts": round(now, 3), "classes": list(self.classes),
                        **(meta or {})})
        except FerEdgeError:
            self._abandon()
            raise

    def _line(self, record: dict[str, Any]) -> None:
        self._write(json.dumps(record, separators=(",", ":")) + "\n")

    def _write_face(self, result: FrameResult, face: TrackedFace) -> None:
        record = face_record(result, face, self.classes)
        if self.with_origin:
            record["origin"] = result.origin
        self._line(record)

    def _write_minute(self, minute: int, frames: int, faces: int, counts: dict[str, int]) -> None:
        self._line(minute_record(minute, frames, faces, counts, self.classes))

    def _write_end(self, summary: RunSummary) -> None:
        now = time.time()
        self._line({"type": "end", "time": iso_time(now), "ts": round(now, 3), **summary.to_dict()})


class CsvLog(_LineLog):
    """The CSV log: one row per face, plus ``type=minute`` rows; the header is written once per file."""

    def __init__(self, path: Path | str, classes: Sequence[str], meta: Optional[dict[str, Any]] = None,
                 with_origin: bool = False) -> None:
        super().__init__(path, classes)
        self.with_origin = with_origin
        self.columns = (["type", "time", "ts", "frame", "face", "x0", "y0", "x1", "y1", "score", "label",
                         "confidence"] + [f"p_{c}" for c in self.classes] + [f"raw_{c}" for c in self.classes]
                        + [f"ms_{s}" for s in INFERENCE_STAGES] + ["count", "summary"]
                        + (["origin"] if with_origin else []))
        self._writer = csv.DictWriter(_CsvTarget(self), self.columns, restval="", lineterminator="\n")
        if self._file is not None and self._file.tell() == 0:  # a new file (appending keeps one header)
            try:
                self._writer.writeheader()
            except FerEdgeError:
                self._abandon()
                raise

    def _write_face(self, result: FrameResult, face: TrackedFace) -> None:
        x0, y0, x1, y1 = face.box.as_ints()
        row: dict[str, Any] = {
            "type": "face", "time": iso_time(result.timestamp), "ts": f"{result.timestamp:.3f}",
            "frame": result.index, "face": face.track_id, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "score": f"{face.score:.4f}", "label": face.label, "confidence": f"{face.confidence:.4f}",
        }
        row.update((f"p_{c}", f"{p:.4f}") for c, p in zip(self.classes, face.probs))
        row.update((f"raw_{c}", f"{p:.4f}") for c, p in zip(self.classes, face.raw_probs))
        row.update((f"ms_{s}", f"{result.timings[s]:.3f}") for s in INFERENCE_STAGES)
        if self.with_origin:
            row["origin"] = result.origin
        self._writer.writerow(row)

    def _write_minute(self, minute: int, frames: int, faces: int, counts: dict[str, int]) -> None:
        for label in (*self.classes, UNCERTAIN):
            if label in counts:
                self._writer.writerow({"type": "minute", "time": iso_time(minute * 60, "minutes"),
                                       "label": label, "count": counts[label]})

    def _write_end(self, summary: RunSummary) -> None:
        now = time.time()
        row: dict[str, Any] = {"type": "end", "time": iso_time(now), "ts": f"{now:.3f}", "frame": summary.frames,
                               "label": summary.end_reason, "count": summary.faces,
                               "summary": json.dumps(summary.to_dict(), separators=(",", ":"))}
        row.update((f"ms_{s}", f"{summary.median_ms[s]:.3f}") for s in INFERENCE_STAGES if s in summary.median_ms)
        self._writer.writerow(row)


class _CsvTarget:
    """Lets `csv.writer` write through `_LineLog._write` (and its error handling)."""

    def __init__(self, log: _LineLog) -> None:
        self._log = log

    def write(self, text: str) -> None:
        self._log._write(text)


def open_log(path: Path | str, classes: Sequence[str], fmt: str = "auto",
             meta: Optional[dict[str, Any]] = None, with_origin: bool = False) -> _LineLog:
    """The log for `path`: CSV for ``.csv`` (or ``fmt="csv"``), JSON Lines otherwise.

    `meta` goes into the JSONL start record; `with_origin` adds each frame's
    file name (for folders of photos).
    """
    if fmt == "auto":
        fmt = "csv" if str(path).lower().endswith(".csv") else "jsonl"
    if fmt not in LOG_FORMATS:
        raise FerEdgeError(f"unknown log format '{fmt}': choose one of {', '.join(LOG_FORMATS)}")
    return (CsvLog if fmt == "csv" else JsonlLog)(path, classes, meta, with_origin)


# --------------------------------------------------------------------------- video, window, stdout


class VideoSink:
    """Annotated frames to a video file, opened at the first frame (whose size it keeps).

    Frames go to a hidden ``.<name>.part<ext>`` beside the target, which is
    renamed to the target at close once OpenCV can read it back: an MP4 is
    unplayable until its index is written at the end, and OpenCV's writer
    reports no failed writes, so a full disk or a ``kill -9`` would otherwise
    leave a broken file under the real name.
    """

    needs_image = True
    stage = "video"

    def __init__(self, path: Path | str, fps: Optional[float] = None) -> None:
        self.path = check_output_path(path, "video")
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise FerEdgeError(f"{self.path}: unsupported video type (use one of {', '.join(VIDEO_CODECS)})")
        self.fourcc = cv2.VideoWriter_fourcc(*codec)
        self._part = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.fps = fps if fps and 0 < fps < 1000 else 15.0
        self.frames = 0
        self._writer: Any = None
        self._size: Optional[tuple[int, int]] = None
        self._resized: Optional[np.ndarray] = None

    def __call__(self, result: FrameResult) -> None:
        image = result.image
        if image is None:
            return
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        h, w = image.shape[:2]
        if self._writer is None:
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self._part), self.fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise FerEdgeError(f"{self.path}: cannot write video (this OpenCV build has no encoder for it)")
        if (w, h) != self._size:  # a folder of photos of different sizes
            self._resized = cv2.resize(image, self._size, dst=self._resized)
            image = self._resized
        self._writer.write(image)
        self.frames += 1

    def close(self, summary: Optional[RunSummary] = None) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        check = cv2.VideoCapture(str(self._part))
        readable = check.isOpened() and check.read()[0]
        check.release()
        if not readable:
            self._part.unlink(missing_ok=True)
            raise FerEdgeError(f"{self.path}: the video could not be written (disk full?); no file was kept")
        os.replace(self._part, self.path)


def has_display() -> bool:
    """True if OpenCV can open a window here: a GUI backend in this build and a display to show it on."""
    info = cv2.getBuildInformation()
    gui = info[info.find("GUI:"):].splitlines()[0] if "GUI:" in info else ""
    if "NONE" in gui.upper():
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink:
    """Shows annotated frames in a window; 'q' or Esc (or closing the window) stops the run."""

    needs_image = True
    stage = "display"

    def __init__(self, stop: StopFlag, title: str = "fer-device") -> None:
        self.stop = stop
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise FerEdgeError(f"cannot open a window ({str(exc).strip().splitlines()[-1]}): use --headless") from None

    def __call__(self, result: FrameResult) -> None:
        if result.image is None:
            return
        cv2.imshow(self.title, result.image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stop.set("window closed")

    def close(self, summary: Optional[RunSummary] = None) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class ImageSaver:
    """Annotated copies of photos (``--save-images DIR``): ``photo.jpg`` in, ``DIR/photo.jpg`` out.

    The copy keeps the photo's name and format when this OpenCV can write it
    (`cv2.haveImageWriter`), else gets ``.png`` added (e.g. a GIF). Each is
    written to a hidden temporary name and renamed into place, so an
    interrupted run never leaves half an image under a real name. The folder
    is created if its parent exists.
    """

    needs_image = True
    stage = "video"

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise FerEdgeError(f"{self.folder}: cannot save images there: it is a file")
        parent = self.folder.parent if str(self.folder.parent) else Path(".")
        if not parent.is_dir():
            raise FerEdgeError(f"{self.folder}: cannot save images: folder {parent} does not exist")
        self.folder.mkdir(exist_ok=True)
        self.written: list[Path] = []

    def target(self, origin: str) -> Path:
        """Where the annotated copy of `origin` goes."""
        name = Path(origin).name or "image.png"
        return self.folder / (name if cv2.haveImageWriter(name) else name + ".png")

    def __call__(self, result: FrameResult) -> None:
        if result.image is None:
            return
        target = self.target(result.origin)
        part = target.with_name(f".{target.stem}.part{target.suffix}")
        try:
            ok = cv2.imwrite(str(part), result.image)
        except cv2.error:
            ok = False
        if not ok:
            part.unlink(missing_ok=True)
            raise FerEdgeError(f"{target}: cannot write the annotated image (disk full or no encoder)")
        os.replace(part, target)
        self.written.append(target)

    def close(self, summary: Optional[RunSummary] = None) -> None:
        pass


class StillPrinter:
    """Prints each image's faces to stdout: the "predict on a photo" use.

    Text: ``photo.jpg: 1 face`` then ``  #1 [x0, y0, x1, y1] happy 0.87``.
    With `as_json`, one JSON object per image per line:
    ``{"image": ..., "width": ..., "height": ..., "faces": [{"box", "label", "confidence", "score", "probs"}]}``.
    """

    needs_image = False
    stage = "log"

    def __init__(self, classes: Sequence[str], as_json: bool = False, stream: Optional[TextIO] = None) -> None:
        self.classes = tuple(classes)
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def __call__(self, result: FrameResult) -> None:
        faces = sorted(result.faces, key=lambda f: (f.box.x0, f.box.y0))  # left to right, as a reader scans
        if self.as_json:
            record = {"image": result.origin, "width": result.size[0], "height": result.size[1], "faces": [
                {"box": list(f.box.as_ints()), "label": f.label, "confidence": round(f.confidence, 4),
                 "score": round(f.score, 4), "probs": {c: round(p, 4) for c, p in zip(self.classes, f.probs)}}
                for f in faces]}
            print(json.dumps(record), file=self.stream, flush=True)
            return
        print(f"{result.origin}: {len(faces)} face{'s' if len(faces) != 1 else ''}", file=self.stream)
        for i, f in enumerate(faces, 1):
            print(f"  #{i} box {list(f.box.as_ints())} {f.label} {f.confidence:.2f}", file=self.stream)
        self.stream.flush()

    def close(self, summary: Optional[RunSummary] = None) -> None:
        pass
