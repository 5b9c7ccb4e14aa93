"""Training speed of the edge CNN with TensorFlow's oneDNN CPU kernels off and on, side by side.

`fer_edge.train` turns oneDNN on (``TF_ENABLE_ONEDNN_OPTS=1``) because TensorFlow
leaves it off on some x86 CPUs (the AMD EPYC this kit is developed on, for one).
This benchmark is the evidence: the variable is read once, when TensorFlow loads,
so each setting runs in its own child process, and the two settings take turns
(off, on, off, on, ...) so a change in machine load hits both alike.

Each child builds the model ``fer-train fit`` would build for ``--widths`` and
``--mirror``, compiles it as fer-train does and trains it on ``--faces`` random
faces through fer-train's own input pipeline (augmentation included): one epoch
untimed (tracing, warm-up), then ``--epochs`` timed; then it times as many
inference batches (what scoring teachers costs). The medians over ``--repeats``
children per setting are reported with the ratios.

    python -m fer_edge.benchmarks.train_speed                 # the shipped model's shape
    python -m fer_edge.benchmarks.train_speed --faces 256 --repeats 1 --out /tmp/ts

Writes ``<name>.json`` and ``<name>.md`` into ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from fer_edge.cli_util import run_cli

SCHEMA = "fer-train-speed/1"
SETTINGS = ("off", "on")
ENV = "TF_ENABLE_ONEDNN_OPTS"
#: The shipped FER2013 model's channels (fer2013-offset16 and the runs before it).
SHIPPED_WIDTHS = "24,46,68,116,192"


def measure_here(widths: tuple[int, ...], mirror: bool, batch_size: int, faces: int, epochs: int,
                 threads: int) -> dict[str, Any]:
    """Seconds per training epoch and per inference batch in this process (TensorFlow loads here).

    The epoch goes through fer-train's own input pipeline (`make_sequence`: augmentation in
    worker threads), model, optimiser and loss (`compile_model`), on `faces` random faces;
    the first epoch (tracing, warm-up) is not counted.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from fer_edge.labels import FER2013_CLASSES
    from fer_edge.preprocess import normalize
    from fer_edge.train.data import FaceData
    from fer_edge.train.fit import TrainConfig, compile_model, configure_tensorflow, make_sequence
    from fer_edge.train.model import count_macs, make_model, stages_with_widths

    cfg = TrainConfig(widths=widths, mirror=mirror, batch_size=batch_size, threads=threads, epochs=1 + epochs)
    configure_tensorflow(threads, cfg.seed)
    rng = np.random.default_rng(0)
    data = FaceData(images=rng.integers(0, 256, (faces, 48, 48), dtype=np.uint8),
                    labels=rng.integers(0, len(FER2013_CLASSES), faces), splits=np.full(faces, "train"),
                    classes=FER2013_CLASSES, source="synthetic", checksum="")
    sequence = make_sequence(data, cfg, train=True)
    model = make_model(len(FER2013_CLASSES), stages=stages_with_widths(widths), dropout=cfg.dropout, mirror=mirror)
    compile_model(model, cfg, len(sequence))

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    clock = EpochClock()
    model.fit(sequence, epochs=cfg.epochs, callbacks=[clock], verbose=0)
    epoch_s = statistics.median(clock.seconds[1:])
    batch = normalize(data.images[:batch_size], cfg.spec)
    model.predict_on_batch(batch)
    start = time.perf_counter()
    for _ in range(len(sequence)):
        model.predict_on_batch(batch)
    predict_s = (time.perf_counter() - start) / len(sequence)
    return {"epoch_s": epoch_s, "train_step_s": epoch_s / len(sequence), "predict_batch_s": predict_s,
            "macs": count_macs(model), "tensorflow": tf.__version__, "onednn_env": os.environ.get(ENV)}


def run_child(setting: str, args: list[str]) -> dict[str, Any]:
    """One measurement in a fresh interpreter with oneDNN ``setting``; its JSON line is the answer."""
    env = dict(os.environ, **{ENV: "1" if setting == "on" else "0", "TF_CPP_MIN_LOG_LEVEL": "2"})
    done = subprocess.run([sys.executable, "-m", "fer_edge.benchmarks.train_speed", "--child", setting, *args],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"the oneDNN-{setting} child failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median seconds per setting and the off/on ratios (above 1: oneDNN is faster)."""
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in ("epoch_s", "train_step_s", "predict_batch_s")}
           for s in SETTINGS}
    return {"median": med,
            "train_speedup": med["off"]["epoch_s"] / med["on"]["epoch_s"],
            "predict_speedup": med["off"]["predict_batch_s"] / med["on"]["predict_batch_s"]}


def to_markdown(report: dict[str, Any]) -> str:
    """The table people read; every figure comes from `report`."""
    cfg, res = report["config"], report["result"]
    med = res["median"]
    rows = [f"| oneDNN {s} | {med[s]['epoch_s']:.1f} | {med[s]['train_step_s']:.3f} | {med[s]['predict_batch_s']:.3f} |"
            for s in SETTINGS]
    return "\n".join([
        "# Training speed: TensorFlow's oneDNN kernels off vs on",
        "",
        f"- machine: {report['machine']['cpu_model']} ({report['machine']['cores']} cores), "
        f"TensorFlow {report['tensorflow']}, {cfg['threads']} intra-op threads",
        f"- model: widths {cfg['widths']}, mirror {cfg['mirror']}, {report['macs'] / 1e6:.1f}M MACs per face; "
        f"batch {cfg['batch_size']}; {cfg['faces']} random faces through fer-train's input pipeline, "
        f"{cfg['epochs']} timed epochs after one untimed, median of {cfg['repeats']} alternating children "
        f"per setting",
        f"- command: `{report['command']}`",
        "",
        "| setting | s per epoch | s per training step | s per inference batch |",
        "|---|---|---|---|",
        *rows,
        "",
        f"oneDNN on trains **{res['train_speedup']:.2f}x** as fast and infers {res['predict_speedup']:.2f}x as fast.",
        "",
    ])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--widths", default=SHIPPED_WIDTHS, show_default=True, help="Channels per stage, as for fer-train.")
@click.option("--mirror/--no-mirror", default=True, show_default=True, help="The face-and-mirror model, as shipped.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--faces", type=click.IntRange(1), default=1280, show_default=True,
              help="Random training faces per epoch.")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True,
              help="Timed epochs per child, after one untimed.")
@click.option("--repeats", type=click.IntRange(1), default=2, show_default=True, help="Children per setting.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="TensorFlow intra-op threads.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results"), show_default=True)
@click.option("--name", default="train_speed", show_default=True)
@click.option("--child", type=click.Choice(SETTINGS), hidden=True)
def cli(widths: str, mirror: bool, batch_size: int, faces: int, epochs: int, repeats: int, threads: int, out: Path,
        name: str, child: str | None) -> None:
    """Time training epochs of the edge CNN with oneDNN off and on, in alternating child processes."""
    try:
        width_tuple = tuple(int(w) for w in widths.split(","))
    except ValueError:
        raise click.BadParameter(f"{widths!r} is not a comma-separated list of integers", param_hint="--widths")
    if child:
        click.echo(json.dumps(measure_here(width_tuple, mirror, batch_size, faces, epochs, threads)))
        return
    from tqdm import tqdm

    from fer_edge.benchmarks.bench import load_average
    from fer_edge.device.info import cpu_facts
    from fer_edge.files import write_atomic

    passed = ["--widths", widths, "--mirror" if mirror else "--no-mirror", "--batch-size", str(batch_size),
              "--faces", str(faces), "--epochs", str(epochs), "--threads", str(threads)]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    for _ in tqdm(range(repeats), desc="alternating children", unit="round"):
        for setting in SETTINGS:
            runs[setting].append(run_child(setting, passed))
    cpu = cpu_facts()
    report = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m fer_edge.benchmarks.train_speed", *sys.argv[1:]]),
        "machine": {"cpu_model": cpu["model"], "cores": cpu["cores"], "load_average": load_average()},
        "tensorflow": runs["on"][0]["tensorflow"], "macs": runs["on"][0]["macs"],
        "config": {"widths": widths, "mirror": mirror, "batch_size": batch_size, "faces": faces, "epochs": epochs,
                   "repeats": repeats, "threads": threads},
        "runs": runs, "result": summarise(runs),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{name}.json", json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    write_atomic(out / f"{name}.md", markdown)
    click.echo(markdown)


def main() -> None:
    run_cli(cli)


if __name__ == "__main__":
    main()
