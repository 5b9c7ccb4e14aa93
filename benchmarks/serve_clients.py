"""What watching costs: pipeline FPS with 0, 1 and 3 live-view stream clients, side by side in one run.

    python -m fer_edge.benchmarks.serve_clients                      # 640x480 demo, 1 thread, 5 repeats
    python -m fer_edge.benchmarks.serve_clients --serve-fps 10,30 --seconds 5 --repeats 5

One pipeline (the shipped bundle, ``--threads`` interpreter threads) runs the
demo clip unpaced, as fast as it goes, with a `LiveView` sink on a loopback
port. For each setting it starts the stream clients as separate processes
(so their reading does not share this process's interpreter lock), waits
until the server counts them, warms up, then measures frames per second over
``--seconds``. Settings are interleaved (0, 1, 3, stalled, then the reverse
order, and so on, ``--repeats`` times) so a busy neighbour on the machine
slows them alike; the report gives the median and the range. "stalled" is one
client that asks for the stream and never reads: it must cost nothing beyond
what one reading client costs.

Writes ``serve_clients.json`` and ``serve_clients.md`` into ``--out``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fer_edge.benchmarks.bench import machine_facts
from fer_edge.bundle import load_bundle
from fer_edge.device.demo import DemoSource
from fer_edge.device.pipeline import Pipeline
from fer_edge.device.runtime import find_runtime
from fer_edge.device.serve import LiveView

#: A stream client process, started once: on "c" it connects to /stream.mjpg and reads everything (as a
#: browser shows it), or never reads when started with "stalled"; on "d" it disconnects; on "q" it exits.
_CLIENT = """
import socket, sys, threading
port, stalled = int(sys.argv[1]), sys.argv[2] == "stalled"
sock = None

def drain(s):
    try:
        while s.recv(1 << 16):
            pass
    except OSError:
        pass

for line in sys.stdin:
    if sock is not None:
        sock.close()
        sock = None
    if line.startswith("c"):
        sock = socket.socket()
        if stalled:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /stream.mjpg HTTP/1.0\\r\\n\\r\\n")
        if not stalled:
            threading.Thread(target=drain, args=(sock,), daemon=True).start()
    elif line.startswith("q"):
        break
"""
TARGETS = {1: 0.15, 3: 0.25}  # most FPS a number of clients may cost (the targets)


class _Clients:
    """Three reading client processes and one stalled one, started once and told to connect or leave."""

    def __init__(self, port: int) -> None:
        def start(kind: str) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-c", _CLIENT, str(port), kind], stdin=subprocess.PIPE, text=True)

        self.readers = [start("reader") for _ in range(3)]
        self.stalled = start("stalled")

    def connect(self, setting: str) -> int:
        chosen = [self.stalled] if setting == "stalled" else self.readers[:int(setting)]
        for proc in chosen:
            self._tell(proc, "c")
        return len(chosen)

    def disconnect(self) -> None:
        for proc in (*self.readers, self.stalled):
            self._tell(proc, "d")

    def close(self) -> None:
        for proc in (*self.readers, self.stalled):
            self._tell(proc, "q")
            proc.stdin.close()
            proc.wait(timeout=30)

    @staticmethod
    def _tell(proc: subprocess.Popen, command: str) -> None:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()


def _wait_watchers(view: LiveView, count: int, pipeline: Pipeline, source: DemoSource, timeout: float = 30.0) -> None:
    """Until the server counts `count` clients; runs frames meanwhile (a client that left is noticed on a send)."""
    deadline = time.monotonic() + timeout
    while view.watchers != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected {count} stream clients, the server counts {view.watchers}")
        pipeline.run(source, [view], duration=0.05)


def measure(settings: list[str], serve_fps: float, seconds: float, repeats: int, threads: int,
            resolution: tuple[int, int]) -> dict[str, Any]:
    """Per setting, lists over the cycles: FPS, stream frames sent per second, CPU ms per frame.

    One cycle measures every setting once, back to back (in alternating
    order), so each cycle's own no-client FPS is the baseline for its others.
    """
    bundle = load_bundle()
    runtime = find_runtime()
    pipeline = Pipeline.from_bundle(bundle, threads=threads, runtime=runtime)
    view = LiveView("127.0.0.1", 0, bundle.classes, fps=serve_fps)
    clients = _Clients(view.port)
    fps: dict[str, list[float]] = {s: [] for s in settings}
    sent: dict[str, list[float]] = {s: [] for s in settings}
    cpu: dict[str, list[float]] = {s: [] for s in settings}
    loop_cpu: dict[str, list[float]] = {s: [] for s in settings}
    try:
        with DemoSource(resolution, loop=True) as source:
            pipeline.run(source, [view], duration=2.0)  # warm up the models and caches once
            for r in range(repeats):
                for setting in (settings if r % 2 == 0 else settings[::-1]):
                    _wait_watchers(view, clients.connect(setting), pipeline, source)
                    pipeline.run(source, [view], duration=0.3)  # the clients are receiving
                    encoded, cpu_start, loop_start = view.encoded, time.process_time(), time.thread_time()
                    summary = pipeline.run(source, [view], duration=seconds)  # the frame loop runs in this thread
                    frames = max(summary.frames, 1)
                    fps[setting].append(summary.fps)
                    cpu[setting].append((time.process_time() - cpu_start) * 1e3 / frames)
                    loop_cpu[setting].append((time.thread_time() - loop_start) * 1e3 / frames)
                    sent[setting].append((view.encoded - encoded) / summary.elapsed_s)
                    clients.disconnect()
                    _wait_watchers(view, 0, pipeline, source)
                print(f"cycle {r + 1}/{repeats} serve-fps {serve_fps:g}: "
                      + ", ".join(f"{s} clients {fps[s][-1]:.1f}" for s in settings) + " FPS", file=sys.stderr)
    finally:
        clients.close()
        view.close()
    return {"serve_fps": serve_fps, "fps": fps, "stream_fps": sent, "cpu_ms": cpu, "loop_cpu_ms": loop_cpu,
            "runtime": runtime}


def _row(setting: str, result: dict[str, Any]) -> dict[str, Any]:
    values = result["fps"][setting]
    median = statistics.median(values)
    # Paired: each cycle's FPS against the same cycle's no-client FPS, so slow drifts of a shared machine cancel.
    costs = [1.0 - v / base for v, base in zip(values, result["fps"]["0"])]
    cost = statistics.median(costs)
    q1, _, q3 = statistics.quantiles(costs, n=4) if len(costs) > 1 else (cost, cost, cost)
    target = TARGETS.get(int(setting)) if setting.isdigit() else TARGETS[1]
    return {"serve_fps": result["serve_fps"], "clients": setting, "fps_median": round(median, 1),
            "fps_min": round(min(values), 1), "fps_max": round(max(values), 1),
            "stream_fps": round(statistics.median(result["stream_fps"][setting]), 1),
            "cpu_ms_per_frame": round(statistics.median(result["cpu_ms"][setting]), 2),
            "loop_cpu_ms_per_frame": round(statistics.median(result["loop_cpu_ms"][setting]), 2),
            "cost": round(cost, 4), "cost_q1": round(q1, 4), "cost_q3": round(q3, 4), "target": target,
            "ok": None if target is None else cost <= target}


def write_report(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_clients.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    m = meta["machine"]
    lines = [
        "# Live view: pipeline FPS with stream clients",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['resolution']} demo clip, unpaced, {meta['threads']} interpreter thread, shipped bundle, "
        f"a `LiveView` sink on a loopback port; clients are separate processes reading `/stream.mjpg` "
        f"(\"stalled\": one that never reads). {meta['repeats']} cycles of {meta['seconds']:g} s per setting, "
        "interleaved; FPS as median (min-max). Cost: 1 - FPS / the same cycle's FPS with no client, median over the "
        "cycles [interquartile range]. CPU ms per frame: the frame loop's thread, and the whole process (frame loop, "
        "encoder and server threads), over the frames; the clients' processes not counted. CPU time is what a "
        "busy shared machine disturbs least.",
        "",
        f"Machine: {m['cpu_model']} ({m['machine']}), {m['cores']} cores (usable {m['usable_cores']}); "
        f"{m['runtime']['name']} {m['runtime']['version']}; OpenCV {m['opencv']}; Python {m['python']}; "
        f"load average {meta['load_average'][0]:.2f} at start, {meta['load_average_end'][0]:.2f} at the end. "
        f"{meta['note']}",
        "",
        "| serve-fps | clients | pipeline FPS | stream frames/s | cost | target | CPU ms/frame, frame loop "
        "| CPU ms/frame, all threads |",
        "|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        target = "" if row["target"] is None or row["clients"] == "0" else \
            f"≤ {row['target']:.0%} {'ok' if row['ok'] else 'MISSED'}"
        cost = "" if row["clients"] == "0" else f"{row['cost']:.1%} [{row['cost_q1']:.1%}, {row['cost_q3']:.1%}]"
        lines.append(f"| {row['serve_fps']:g} | {row['clients']} | {row['fps_median']} ({row['fps_min']}-"
                     f"{row['fps_max']}) | {row['stream_fps']} | {cost} | {target} | "
                     f"{row['loop_cpu_ms_per_frame']} | {row['cpu_ms_per_frame']} |")
    (out / "serve_clients.md").write_text("\n".join(lines) + "\n")
    return out / "serve_clients.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-fps", default="10", help="comma-separated --serve-fps values (default 10)")
    parser.add_argument("--clients", default="0,1,3,stalled", help="settings: client counts and 'stalled'")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per setting and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", default="640x480")
    parser.add_argument("--note", default="", help="a line about the machine (e.g. shared with other jobs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.clients.split(",") if s.strip()]
    if "0" not in settings:
        settings.insert(0, "0")
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    runtime = None
    for serve_fps in (float(v) for v in args.serve_fps.split(",")):
        result = measure(settings, serve_fps, args.seconds, args.repeats, args.threads, (width, height))
        runtime = result["runtime"]
        rows += [_row(setting, result) for setting in settings]
    meta = {
        "command": "python -m fer_edge.benchmarks.serve_clients " + shlex.join(sys.argv[1:] if argv is None else argv),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "resolution": args.resolution,
        "threads": args.threads, "seconds": args.seconds, "repeats": args.repeats, "load_average": load,
        "load_average_end": os.getloadavg(),
        "machine": machine_facts(runtime), "note": args.note,
    }
    path = write_report(rows, meta, args.out)
    print(path.read_text())


if __name__ == "__main__":
    main()
