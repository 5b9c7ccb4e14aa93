"""``fer-device`` end to end: no TensorFlow, SIGTERM and kill -9 mid-run, one-line errors, info."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
from click.testing import CliRunner
from device_fakes import FakeCapture, FakeCaptureFactory

import fer_edge.device.sources as sources
from fer_edge.bundle import default_bundle_path
from fer_edge.device.cli import cli
from fer_edge.device.demo import DemoSource

_SCRIPT = Path(sys.executable).with_name("fer-device")
FER_DEVICE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fer_edge.device.cli"]


def _fer_device(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FER_DEVICE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count('"type":"face"') >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"fer-device exited early: {proc.communicate()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("fer-device wrote no face lines in time")


def test_runs_where_tensorflow_cannot_be_imported(tmp_path, astronaut_path) -> None:
    blocker = tmp_path / "no_tf"
    blocker.mkdir()
    # Imported by Python at start-up (site), before fer-device: `import tensorflow` then fails.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    env.pop("FER_EDGE_RUNTIME", None)
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "ModuleNotFoundError" in check.stderr
    done = _fer_device("run", "--source", str(astronaut_path), "--json", "--threads", "1", env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["image"] == str(astronaut_path) and len(record["faces"]) == 1
    face = record["faces"][0]
    assert face["label"] in face["probs"] and len(face["box"]) == 4
    assert "runtime litert" in done.stderr or "runtime tflite-runtime" in done.stderr


def test_sigterm_mid_run_leaves_a_complete_log_and_video(tmp_path) -> None:
    log, video = tmp_path / "run.jsonl", tmp_path / "run.mp4"
    proc = subprocess.Popen(
        [*FER_DEVICE, "run", "--source", "demo", "--loop", "--resolution", "320x240", "--headless",
         "--threads", "1", "--log", str(log), "--save-video", str(video)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(log, 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in log.read_text().splitlines()]  # every line complete
    assert records[0]["type"] == "start" and records[-1]["type"] == "end"
    end = records[-1]
    assert end["end_reason"] == "stopped by SIGTERM"
    assert end["frames"] >= 5 and any(r["type"] == "minute" for r in records)
    assert "frames in" in err and "stopped by SIGTERM" in err  # the end-of-run summary
    capture = cv2.VideoCapture(str(video))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == end["frames"]


def test_kill_9_loses_at_most_the_last_line(tmp_path) -> None:
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen([*FER_DEVICE, "run", "--source", "demo", "--loop", "--resolution", "320x240",
                             "--headless", "--threads", "1", "--log", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lines(log, 5, proc)
    proc.kill()
    proc.wait(timeout=30)
    lines = log.read_text().split("\n")
    complete = [json.loads(line) for line in lines[:-1]]  # every newline-terminated line parses
    assert len([r for r in complete if r["type"] == "face"]) >= 5


def test_user_errors_are_one_line(tmp_path) -> None:
    done = _fer_device("run", "--source", str(tmp_path / "missing.jpg"), "--headless")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.jpg'}: no such file"]
    done = _fer_device("run", "--source", "demo", "--log", str(tmp_path / "nope" / "x.jsonl"))
    assert done.returncode == 2 and "folder" in done.stderr and "Traceback" not in done.stderr
    done = _fer_device("run", "--source", "demo", "--headless", "--json")
    assert done.returncode == 2 and done.stderr.strip().startswith("error: --json prints results for photos")
    # A file that claims to be an MP4 makes FFmpeg complain on its own; only fer-device's line may show.
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + os.urandom(500))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}
    done = _fer_device("run", "--source", str(corrupt), "--headless", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: cannot read video file {corrupt}"]


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def test_tampered_bundle_is_refused(tmp_path, astronaut_path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    model = bundle / "emotion.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = _invoke("run", "--bundle", str(bundle), "--source", str(astronaut_path))
    assert "checksum mismatch" in str(result.exception)
    facts = json.loads(_invoke("info", "--json", "--bundle", str(bundle)).output)
    assert facts["bundle"]["verified"] is False


def test_image_text_output_and_csv_log(tmp_path, astronaut_path) -> None:
    log = tmp_path / "faces.csv"
    result = _invoke("run", "--source", str(astronaut_path), "--log", str(log), "--threads", "1")
    assert result.exit_code == 0, result.output
    assert f"{astronaut_path}: 1 face" in result.output
    header, row = log.read_text().splitlines()[:2]
    assert header.startswith("type,time,ts,frame,face,x0") and header.endswith(",origin")
    assert row.startswith("face,") and row.endswith(str(astronaut_path))


def test_camera_lost_for_good_exits_3_after_closing_the_log(tmp_path, monkeypatch) -> None:
    frame = DemoSource((320, 240), frames=1).render(0).copy()

    def fake_open_source(spec, *args, stop=None, reconnect_timeout=0.0, **kwargs):
        factory = FakeCaptureFactory([FakeCapture([frame, frame, frame, "fail"])])
        return sources.OpenCVSource(0, "camera", capture_factory=factory, reconnect_timeout=reconnect_timeout,
                                    stop=stop, backoff=(0.01, 0.02))

    monkeypatch.setattr(sources, "open_source", fake_open_source)
    log = tmp_path / "run.jsonl"
    result = _invoke("run", "--source", "0", "--headless", "--log", str(log), "--reconnect-timeout", "0.1")
    assert result.exit_code == 3, result.output
    end = json.loads(log.read_text().splitlines()[-1])
    assert end["type"] == "end" and end["frames"] == 3 and "lost" in end["end_reason"]


def test_yunet_without_model_and_info(tmp_path, legacy_bundle) -> None:
    # A BlazeFace-only bundle has no YuNet to run: the error says how to give one.
    result = _invoke("run", "--source", "demo", "--detector", "yunet", "--headless", "--bundle",
                     str(legacy_bundle.root))
    assert "--detector-model" in str(result.exception)
    result = _invoke("info")
    assert result.exit_code == 0
    assert "runtime:" in result.output and "Haar" in result.output and "sha256" in result.output
    facts = json.loads(_invoke("doctor", "--json").output)
    assert facts["bundle"]["verified"] is True
    assert facts["runtime"]["selected"].split()[0] in ("litert", "tflite-runtime", "tensorflow")
    assert set(facts["opencv"]) >= {"haar", "yunet", "gui", "video_io"}
    # A bundle that fails its checks is reported, and the exit code says so for setup scripts.
    tampered = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), tampered)
    (tampered / "labels.txt").write_text("x\n")
    result = _invoke("info", "--bundle", str(tampered))
    assert result.exit_code == 1 and "NOT USABLE" in result.output
