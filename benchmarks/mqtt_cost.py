"""What ``--mqtt`` costs the frame loop: pipeline FPS with and without it, side by side.

One process builds the pipeline once (the shipped bundle, one interpreter
thread) and plays the demo clip (640x480, unpaced) through it again and
again, ``--frames`` frames a run, with a JSON Lines log as the sink; every
other run adds the MQTT sink exactly as ``fer-device run --mqtt`` builds it,
publishing to a Mosquitto broker this script starts on a free 127.0.0.1 port
(same machine). The settings take turns (rotating the order every repeat),
so load from other programs hits them alike, and each run is compared with
its neighbour of the other setting (paired ratios, then their median).

Two measures per run: the loop's FPS (wall clock, what a viewer gets) and the
process's CPU time per frame (all threads: inference, the log, and with MQTT
the publisher and paho's network thread). By default the process is pinned to
one CPU (``--cpu``; the broker, started first, is not): all its threads then
share one core, so the FPS ratio includes the MQTT threads' own CPU time, a
worst case for a multi-core Pi where they run beside the frame loop. Unpinned
on a busy 2-core VM, thread migrations between cores swung FPS by more than
the effect measured here (``--cpu -1`` runs unpinned).

    python -m fer_edge.benchmarks.mqtt_cost                   # 20 repeats of 200 frames, pinned
    python -m fer_edge.benchmarks.mqtt_cost --repeats 2 --frames 100 --out /tmp/mq

Writes ``mqtt_cost.json`` and ``mqtt_cost.md`` into ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import click

from fer_edge.cli_util import run_cli
from fer_edge.errors import FerEdgeError

SCHEMA = "fer-mqtt-cost/2"
#: (name, the CLI options it stands for, MQTT settings or None)
SETTINGS: tuple[tuple[str, str, Optional[dict[str, float]]], ...] = (
    ("without --mqtt", "", None),
    ("--mqtt at its defaults (state <= 1/s, faces 2/s)", "--mqtt mqtt://127.0.0.1:PORT", {}),
    ("--mqtt, a faces message every frame", "--mqtt mqtt://127.0.0.1:PORT --mqtt-faces-rate 1000 --mqtt-interval 0.05",
     {"faces_rate": 1000.0, "interval": 0.05}),
)


class LocalBroker:
    """``mosquitto -c <config>`` on a free 127.0.0.1 port, for the length of a ``with`` block."""

    def __init__(self, folder: Path) -> None:
        program = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if program is None:
            raise FerEdgeError("mosquitto is not installed (apt-get install mosquitto)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = folder / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          f"log_dest none\nuser {getpass.getuser()}\n")
        self._cmd = [program, "-c", str(config)]
        self._process: Any = None

    def __enter__(self) -> "LocalBroker":
        self._process = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise FerEdgeError(f"mosquitto did not start on port {self.port}")

    def __exit__(self, *exc: Any) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def run_once(pipeline: Any, mqtt: Optional[dict[str, float]], url: str, frames: int, folder: Path) -> dict[str, Any]:
    """One run of `frames` demo frames through `pipeline`: FPS, CPU ms per frame, what MQTT did."""
    from fer_edge import __version__
    from fer_edge.bundle import load_bundle
    from fer_edge.device.info import cpu_facts
    from fer_edge.device.mqtt import DeviceInfo, MqttSink, mqtt_settings
    from fer_edge.device.pipeline import close_sinks
    from fer_edge.device.sinks import open_log
    from fer_edge.device.sources import StopFlag, open_source

    log = folder / "run.jsonl"
    log.unlink(missing_ok=True)
    sinks: list[Any] = [open_log(log, pipeline.classes, meta={"fer_edge": __version__})]
    sink = None
    if mqtt is not None:
        settings = mqtt_settings(url, device_id="bench", **mqtt)
        sink = MqttSink(settings, pipeline.classes, DeviceInfo(cpu_facts()["model"], load_bundle().checksum),
                        StopFlag())
        sinks.append(sink)
    with open_source("demo", (640, 480), loop=True, need_image=False) as source:
        cpu0 = time.process_time()
        summary = pipeline.run(source, sinks, max_frames=frames)
        cpu = time.process_time() - cpu0
    if sink is not None:
        summary = sink.finish(summary)
    close_sinks(sinks, summary)
    return {"fps": summary.fps, "cpu_ms_per_frame": 1e3 * cpu / summary.frames,
            "sinks_ms": summary.median_ms.get("log", 0.0), "mqtt": summary.mqtt}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True,
              help="Runs per setting, taking turns.")
@click.option("--frames", type=click.IntRange(min=30), default=200, show_default=True, help="Frames per run.")
@click.option("--cpu", type=int, default=None,
              help="Pin this process (all its threads) to this CPU; -1: no pinning. Default: the last usable CPU.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results"), show_default=True)
def main(repeats: int, frames: int, cpu: Optional[int], out: Path) -> None:
    """Pipeline FPS and CPU per frame with --mqtt to a local Mosquitto vs without, side by side."""
    from fer_edge.bundle import load_bundle
    from fer_edge.device.info import cpu_facts
    from fer_edge.device.pipeline import Pipeline

    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in SETTINGS}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(Path(tmp)) as broker:  # before pinning: the broker isn't
        if cpu is None:
            cpu = max(os.sched_getaffinity(0))
        if cpu >= 0:
            os.sched_setaffinity(0, {cpu})
        pipeline = Pipeline.from_bundle(load_bundle(), threads=1)
        url = f"mqtt://127.0.0.1:{broker.port}"
        run_once(pipeline, None, url, 30, Path(tmp))  # warm-up: first inference, caches
        for r in range(repeats):
            order = SETTINGS[r % len(SETTINGS):] + SETTINGS[:r % len(SETTINGS)]
            for name, _, mqtt in order:
                result = run_once(pipeline, mqtt, url, frames, Path(tmp))
                runs[name].append(result)
                click.echo(f"repeat {r + 1}/{repeats}  {name:50s} {result['fps']:6.1f} FPS  "
                           f"{result['cpu_ms_per_frame']:6.2f} CPU ms/frame", err=True)
            load.append(os.getloadavg()[0])
    base = runs[SETTINGS[0][0]]
    rows = []
    for name, options, _ in SETTINGS:
        mine = runs[name]
        published = [x["mqtt"]["published"] for x in mine if x["mqtt"]]
        dropped = [x["mqtt"]["dropped"] for x in mine if x["mqtt"]]
        rows.append({
            "setting": name, "options": options,
            "fps_median": round(statistics.median(x["fps"] for x in mine), 2),
            "fps_ratio": round(statistics.median(x["fps"] / b["fps"] for x, b in zip(mine, base)), 4),
            "cpu_ms_per_frame_median": round(statistics.median(x["cpu_ms_per_frame"] for x in mine), 3),
            "cpu_ratio": round(statistics.median(x["cpu_ms_per_frame"] / b["cpu_ms_per_frame"]
                                                 for x, b in zip(mine, base)), 4),
            "sinks_ms_median": round(statistics.median(x["sinks_ms"] for x in mine), 4),
            "published_median": statistics.median(published) if published else None,
            "dropped_max": max(dropped) if dropped else None,
            "fps_runs": [round(x["fps"], 1) for x in mine],
        })
    facts = cpu_facts()
    report = {"schema": SCHEMA, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{facts['model']} ({facts['cores']} cores)",
              "load_average_1min": [round(x, 1) for x in load], "pinned_cpu": cpu if cpu >= 0 else None,
              "repeats": repeats, "frames": frames,
              "command": f"python -m fer_edge.benchmarks.mqtt_cost --repeats {repeats} --frames {frames}"
                         + (" --cpu -1" if cpu < 0 else ""),
              "rows": rows}
    (out / "mqtt_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "mqtt_cost.md").write_text(format_report(report))
    click.echo(format_report(report))


def format_report(report: dict[str, Any]) -> str:
    load = report["load_average_1min"]
    lines = [
        "# What --mqtt costs the frame loop",
        "",
        f"- machine: {report['machine']}; 1-minute load average {min(load)} to {max(load)} during the runs "
        f"(other programs shared it); measured {report['time']}",
        f"- runs: the demo clip, 640x480, unpaced, 1 interpreter thread, a JSON Lines log, {report['frames']} frames a "
        f"run, {report['repeats']} runs per setting taking turns in one process; the MQTT sink publishes to "
        "Mosquitto on 127.0.0.1 (same machine)",
        (f"- the process is pinned to CPU {report['pinned_cpu']}: the frame loop, the MQTT publisher and paho's "
         "network thread share one core, so the FPS ratio includes MQTT's own CPU time (the broker is not pinned)"
         if report["pinned_cpu"] is not None else "- not pinned: threads move between cores"),
        "- ratios: each run against its neighbour without MQTT, median of those; CPU = the process's CPU time per "
        "frame, all threads",
        f"- command: `{report['command']}`",
        "",
        "| setting | options | FPS (median) | FPS vs without | CPU ms/frame (median) | CPU vs without "
        "| sinks' stage ms (median) | published/run | dropped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(f"| {row['setting']} | `{row['options'] or '-'}` | {row['fps_median']:.1f} | "
                     f"{row['fps_ratio']:.3f} | {row['cpu_ms_per_frame_median']:.2f} | {row['cpu_ratio']:.3f} | "
                     f"{row['sinks_ms_median']:.3f} | "
                     f"{row['published_median'] if row['published_median'] is not None else '-'} | "
                     f"{row['dropped_max'] if row['dropped_max'] is not None else '-'} |")
    default = report["rows"][1]
    lines += ["", f"`--mqtt` at its defaults: FPS ratio **{default['fps_ratio']:.3f}**, CPU per frame ratio "
              f"**{default['cpu_ratio']:.3f}** (target: at most 5% cost).", "",
              "FPS of each run: " + "; ".join(f"{r['setting']}: {', '.join(map(str, r['fps_runs']))}"
                                               for r in report["rows"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
