"""Facts about this device for ``fer-device info`` (alias ``doctor``) and benchmark reports.

Everything here is read, never changed: which TFLite runtime would be used,
the CPU, the bundle and its checksums, the cameras the OS lists, and the
OpenCV build facts that decide which detectors and outputs work. Nothing
imports TensorFlow (`importlib.util.find_spec` only looks for it), and
cameras are listed, not opened, so ``info`` is safe while a run holds one.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

import cv2

from fer_edge import __version__
from fer_edge.bundle import load_bundle
from fer_edge.device.runtime import RUNTIMES, find_runtime
from fer_edge.errors import FerEdgeError


def default_threads() -> int:
    """Interpreter threads when ``--threads`` is not given: the usable cores, at most 4 (a Pi's count)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(4, usable))


def cpu_facts() -> dict[str, Any]:
    """Machine, CPU model (a Pi reports its board in the device tree) and core counts."""
    model = ""
    board = Path("/proc/device-tree/model")
    if board.is_file():
        model = board.read_bytes().rstrip(b"\0").decode(errors="replace")
    elif Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                model = line.split(":", 1)[1].strip()
                break
    return {"machine": platform.machine(), "model": model or platform.processor() or "unknown",
            "cores": os.cpu_count(), "default_threads": default_threads()}


def _found(module: str) -> bool:
    """Whether `module` is importable, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # e.g. blocked with sys.modules[name] = None
        return False


def runtime_facts() -> dict[str, Any]:
    """The runtime `find_runtime` picks and which of the candidates are installed (found, not imported)."""
    installed = {name: _found(module.split(".")[0]) for name, module, _ in RUNTIMES}
    try:
        chosen: Optional[str] = str(find_runtime())
        error = None
    except FerEdgeError as exc:
        chosen, error = None, str(exc)
    return {"selected": chosen, "error": error, "installed": installed,
            "forced_by_env": os.environ.get("FER_EDGE_RUNTIME")}


def bundle_facts(path: Optional[Path | str] = None) -> dict[str, Any]:
    """The bundle's location, whether it verifies, its classes, model facts and file checksums."""
    try:
        bundle = load_bundle(path)
    except FerEdgeError as exc:
        return {"path": str(path) if path else "(shipped default)", "verified": False, "error": str(exc)}
    manifest = bundle.manifest
    return {
        "path": str(bundle.root), "verified": True, "sha256": bundle.checksum, "classes": list(bundle.classes),
        "model": {k: manifest["model"].get(k) for k in ("file", "mode", "input", "output", "label_set", "temperature")},
        "crop": bundle.spec.crop,
        "detector": bundle.default_detector,
        "detectors": [{k: d.get(k) for k in ("kind", "model", "file", "license", "sha256")} for d in bundle.detectors],
        "accuracy": manifest.get("accuracy"), "files": manifest.get("files", {}),
    }


def camera_facts() -> dict[str, Any]:
    """V4L2 devices the kernel lists and, if picamera2 is installed, the cameras libcamera sees."""
    v4l = []
    for dev in sorted(Path("/dev").glob("video*")):
        name_file = Path("/sys/class/video4linux") / dev.name / "name"
        name = name_file.read_text(errors="replace").strip() if name_file.is_file() else ""
        v4l.append({"device": str(dev), "name": name})
    facts: dict[str, Any] = {"v4l2": v4l, "picamera2": None}
    if _found("picamera2"):
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]

            facts["picamera2"] = [{k: str(v) for k, v in cam.items()} for cam in Picamera2.global_camera_info()]
        except Exception as exc:  # a broken libcamera install should not break `info`
            facts["picamera2"] = f"error: {exc.__class__.__name__}: {exc}"
    return facts


def opencv_facts() -> dict[str, Any]:
    """OpenCV facts that matter here: Haar and YuNet support, GUI backend, video I/O backends."""
    from fer_edge.device.detect import find_haar_cascade
    from fer_edge.device.sinks import has_display

    try:
        cascade: Optional[str] = str(find_haar_cascade())
    except FerEdgeError:
        cascade = None
    build = cv2.getBuildInformation()

    def line(key: str) -> str:
        at = build.find(key)
        return build[at + len(key):].splitlines()[0].strip() if at >= 0 else "?"

    return {
        "version": cv2.__version__,
        "haar": hasattr(cv2, "CascadeClassifier"), "haar_cascade": cascade,
        "yunet": hasattr(cv2, "FaceDetectorYN"),
        "gui": line("GUI:"), "display": has_display(),
        "video_io": {k: line(k + ":") for k in ("FFMPEG", "GStreamer", "v4l/v4l2")},
    }


def last_run_summary(log: Path | str, tail_bytes: int = 1 << 20) -> Optional[dict[str, Any]]:
    """The run summary (the ``end`` record) of the last run in a JSON Lines or CSV log; None if it has none.

    Only the file's last `tail_bytes` are read, so a log that grew for months
    answers at once.
    """
    path = Path(log)
    try:
        with open(path, "rb") as fh:
            header = fh.readline().decode("utf-8", errors="replace")
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - tail_bytes))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise FerEdgeError(f"{path}: cannot read the log: {exc.strerror or exc}") from None
    columns = next(csv.reader([header])) if header.startswith("type,") else None
    for line in reversed(lines):
        try:
            if columns is None and line.startswith('{"type":"end"'):
                return json.loads(line)
            if columns is not None and line.startswith("end,"):
                row = dict(zip(columns, next(csv.reader([line]))))
                return {"time": row.get("time"), **json.loads(row["summary"])}
        except (ValueError, KeyError):  # a line cut by a power cut: look further back
            continue
    return None


def mqtt_run_facts(log: Optional[Path | str] = None) -> dict[str, Any]:
    """Whether ``--mqtt`` can run here (the extra), and what MQTT did in the last run of `log`."""
    from fer_edge.device.mqtt import mqtt_facts

    facts = mqtt_facts()
    if log is not None:
        end = last_run_summary(log)
        facts["log"] = str(log)
        facts["last_run"] = None if end is None else {"time": end.get("time"), "mqtt": end.get("mqtt")}
    return facts


def device_facts(bundle: Optional[Path | str] = None, log: Optional[Path | str] = None) -> dict[str, Any]:
    """Everything ``fer-device info`` reports, as one JSON-ready dict (`log`: a run log to read MQTT stats from)."""
    return {
        "fer_edge": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "runtime": runtime_facts(), "cpu": cpu_facts(), "bundle": bundle_facts(bundle),
        "cameras": camera_facts(), "opencv": opencv_facts(), "mqtt": mqtt_run_facts(log),
    }


def format_mqtt_facts(mqtt: dict[str, Any]) -> list[str]:
    """The ``mqtt:`` lines of ``fer-device info``."""
    from fer_edge.device.mqtt import format_mqtt_stats

    if mqtt["usable"]:
        lines = [f"mqtt:     paho-mqtt {mqtt['paho_mqtt']} (--mqtt works)"]
    elif mqtt["paho_mqtt"]:
        lines = [f"mqtt:     paho-mqtt {mqtt['paho_mqtt']} is too old for --mqtt (needs 2.x): {mqtt['install']}"]
    else:
        lines = [f"mqtt:     not installed (--mqtt needs it): {mqtt['install']}"]
    if "log" in mqtt:
        last = mqtt["last_run"]
        if last is None:
            lines.append(f"          {mqtt['log']}: no finished run in this log")
        elif not last["mqtt"]:
            lines.append(f"          last run in {mqtt['log']} (ended {last['time']}): without --mqtt")
        else:
            lines.append(f"          last run in {mqtt['log']} (ended {last['time']}): "
                         + format_mqtt_stats(last["mqtt"]))
    return lines


def format_facts(facts: dict[str, Any]) -> str:
    """The facts as the short text ``fer-device info`` prints."""
    rt, cpu, b, cams, ocv = facts["runtime"], facts["cpu"], facts["bundle"], facts["cameras"], facts["opencv"]
    lines = [
        f"fer-edge {facts['fer_edge']}, Python {facts['python']}, {facts['platform']}",
        f"runtime:  {rt['selected'] or 'NONE - ' + str(rt['error'])}"
        + (f" (forced by FER_EDGE_RUNTIME={rt['forced_by_env']})" if rt["forced_by_env"] else ""),
        "          installed: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in rt["installed"].items()),
        f"cpu:      {cpu['model']} ({cpu['machine']}), {cpu['cores']} cores, default --threads {cpu['default_threads']}",
    ]
    if b["verified"]:
        lines += [f"bundle:   {b['path']} (verified), sha256 {b['sha256']}",
                  f"          classes: {', '.join(b['classes'])}; model {b['model'].get('mode')}, "
                  f"default detector {b['detector'] or 'none'}",
                  f"          trained on {b['model'].get('label_set') or 'unrecorded labels'}; {b['crop']} crop; "
                  + (f"calibrated (T = {b['model']['temperature']:.3f})" if b['model'].get('temperature')
                     else "not calibrated")]
        lines += [f"          detector {d['kind']}: {d['model'] or '?'} ({d['file']}), licence {d['license'] or '?'}"
                  for d in b.get("detectors", [])]
        if b.get("accuracy"):
            acc = b["accuracy"]
            lines.append(f"          accuracy ({acc.get('split')}): {acc.get('converted_top1', 0):.2%} "
                         f"(drop {acc.get('drop_pp')} pp vs float)")
        lines += [f"          {name}  {digest}" for name, digest in b["files"].items()]
    else:
        lines.append(f"bundle:   NOT USABLE: {b['error']}")
    v4l = cams["v4l2"]
    lines.append("cameras:  " + (", ".join(f"{c['device']} ({c['name'] or '?'})" for c in v4l) if v4l else "no /dev/video*"))
    if cams["picamera2"] is not None:
        lines.append(f"          picamera2: {cams['picamera2'] or 'no camera'}")
    else:
        lines.append("          picamera2: not installed")
    lines += [
        f"opencv:   {ocv['version']}; Haar {'yes' if ocv['haar'] else 'no'}"
        f" (cascade {ocv['haar_cascade'] or 'not found'}); YuNet {'yes' if ocv['yunet'] else 'no'}",
        f"          GUI {ocv['gui']}, display {'yes' if ocv['display'] else 'no'}; "
        + ", ".join(f"{k} {v}" for k, v in ocv["video_io"].items()),
    ]
    if "mqtt" in facts:
        lines += format_mqtt_facts(facts["mqtt"])
    return "\n".join(lines)
