"""Training: the loop, its schedule and checkpoints, and the run folder it fills.

A run folder (``runs/train/<name>``) gets ``config.json`` first, then per
epoch ``last.keras`` (for `--resume`) and ``best.keras`` (highest accuracy on
the validation split, FER2013's PublicTest), and at the end the files a
finished run keeps (``write_outputs``). Every model file is written to a
temporary name and renamed, so a crash or Ctrl-C never leaves a half-written
model under a final name.

What the loop trains on comes from elsewhere: the teachers' targets from
``distill.py``, the starting weights of ``--init`` from ``surgery.py``, the
network from ``model.py`` and the augmentation from ``augment.py``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fer_edge.errors import FerEdgeError
from fer_edge.files import write_atomic
from fer_edge.preprocess import DEFAULT_SPEC, PreprocessSpec, normalize
from fer_edge.train.augment import AugmentConfig, augment_batch
from fer_edge.train.data import FaceData
from fer_edge.train.distill import (TeacherViews, distillation_targets, label_distributions, load_scorer,
                                    one_hot_labels, teacher_views, vote_offset)
from fer_edge.train.model_files import atomic_save, export_saved_model, load_keras_model
from fer_edge.train.surgery import init_weights


@dataclass
class TrainConfig:
    """Everything that defines a run; written to ``config.json`` before training starts."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    dropout: float = 0.4
    patience: int = 15
    class_weight: bool = False
    seed: int = 1234
    threads: int = 0  # 0: TensorFlow's default
    limit: int = 0  # use only this many training samples (0: all); for smoke runs
    init: Optional[str] = None  # start from this model's weights (a .keras file or a run folder)
    ema: float = 0.0  # momentum of the weight average used for validation and checkpoints (0: off)
    teachers: tuple[str, ...] = ()  # distil from these models (.keras files or run folders), averaged
    teacher_weight: float = 0.5  # share of the teacher's distribution in each training target
    teacher_temperature: float = 2.0  # softens the teacher's logits before they become targets
    teacher_views: int = 0  # >0: the teachers score this many augmented copies of each face (consistent teaching)
    teacher_tta: bool = False  # the teachers also average over TTA_TRANSFORMS' shifts and zooms
    teacher_tta_offset: bool = False  # views get the clean face's TTA-minus-plain logits (with teacher_views)
    teacher_mixup: float = 0.0  # >0: each view blends every face with another (mixup, Beta(a, a)); 0: off
    teacher_votes: float = 0.0  # >0: weight of the other labelling's evidence added to the teachers' logits
    widths: tuple[int, ...] = ()  # channels per stage (): the default network
    head: int = 0  # channels of the pooled 1x1 head before the classifier (0: none)
    fc: int = 0  # units of the spatial head: the flattened last map into a dense layer (0: pooling)
    blocks: tuple[int, ...] = ()  # residual blocks per stage (): none
    mirror: bool = False  # average the logits over the face and its mirror, inside the model
    mac_budget: bool = True  # False: a teacher, exempt from the device's MAC budget (fer-convert won't bundle it)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    spec: PreprocessSpec = DEFAULT_SPEC

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    def check(self) -> None:
        """Refuse option combinations that would silently do nothing, before any data loads."""
        if self.teacher_views and not self.teachers:
            raise FerEdgeError("--teacher-views needs at least one --teacher to label the views")
        if self.teacher_mixup and not self.teacher_views:
            raise FerEdgeError("--teacher-mixup blends the teacher views: it needs --teacher-views")
        if self.teacher_tta and not self.teachers:
            raise FerEdgeError("--teacher-tta needs at least one --teacher to average")
        if self.teacher_tta_offset and (not self.teacher_views or self.teacher_tta):
            raise FerEdgeError("--teacher-tta-offset corrects the face-and-mirror teacher views: it needs "
                               "--teacher-views and no --teacher-tta")
        if self.teacher_votes and not self.teachers:
            raise FerEdgeError("--teacher-votes adds the other labelling's evidence to the teachers' logits: it "
                               "needs at least one --teacher")
        if self.head and self.fc:
            raise FerEdgeError("--head and --fc both replace the classifier's input: choose one")


def recorded_teachers(train: dict[str, Any]) -> tuple[str, ...]:
    """The teachers a config.json's "train" section names; runs written before --teacher could repeat
    recorded one "teacher"."""
    old = train.get("teacher")
    return tuple(train.get("teachers") or ([old] if old else []))


def configure_tensorflow(threads: int, seed: int) -> None:
    """Set thread pools and seeds before any op runs (TensorFlow refuses later changes)."""
    import keras
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran ops in this process (e.g. a second run in tests)
            print("note: TensorFlow is already initialised; keeping its thread settings", flush=True)
    keras.utils.set_random_seed(seed)


#: What the input pipeline still does to a teacher view: a flip, which a mirror-averaged teacher cannot tell apart.
FLIP_ONLY = AugmentConfig(rotate_deg=0.0, shift=0.0, zoom=0.0, brightness=0.0, contrast=0.0, erase_prob=0.0)


def make_sequence(data: FaceData, cfg: TrainConfig, train: bool, views: Optional[TeacherViews] = None):
    """A Keras `PyDataset` yielding (normalised faces, targets[, sample weights]).

    Training targets are label distributions: one-hot for hard labels, the
    FER+ vote distribution for soft labels, so one loss serves both.
    Validation targets are always the one-hot labels: the checkpoint is chosen
    on the same labels that metrics.json and ``evaluate`` report, because a
    vote distribution's argmax breaks ties unlike the majority label.

    With ``views`` (training only), epoch e trains on view e mod K and that
    view's own targets; the view is already augmented, so only a random flip
    is added on top.
    """
    import keras

    num_classes = len(data.classes)
    targets = label_distributions(data) if train else one_hot_labels(data)
    # --no-augment (or no flip) still means exactly that for a view.
    augment = cfg.augment if views is None else replace(FLIP_ONLY, enabled=cfg.augment.enabled,
                                                        flip=cfg.augment.flip)
    weights = None
    if train and cfg.class_weight:
        counts = np.maximum(data.class_counts(), 1)
        per_class = len(data) / (num_classes * counts)
        weights = per_class[data.labels].astype(np.float32)

    class FaceSequence(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=2 if train else 1, use_multiprocessing=False)
            self.rng = np.random.default_rng(cfg.seed)
            self.epoch = 0  # seeds each batch's augmentation; `train` sets it when resuming
            self.order = np.arange(len(data))
            if train:
                self.rng.shuffle(self.order)

        def __len__(self) -> int:
            return math.ceil(len(data) / cfg.batch_size)

        def __getitem__(self, index: int):
            idx = self.order[index * cfg.batch_size:(index + 1) * cfg.batch_size]
            if views is None:
                faces, batch_targets = data.images[idx], targets[idx]
            else:
                view = self.epoch % len(views.images)
                faces, batch_targets = views.images[view][idx], views.targets[view][idx]
            if train:
                # A per-batch generator keeps worker threads independent and the run reproducible.
                rng = np.random.default_rng((cfg.seed, self.epoch, index))
                pixels = augment_batch(faces, rng, augment)
                x = (pixels * np.float32(cfg.spec.scale) + np.float32(cfg.spec.offset))[..., None]
            else:
                x = normalize(faces, cfg.spec)
            if weights is not None:
                return x, batch_targets, weights[idx]
            return x, batch_targets

        def on_epoch_end(self) -> None:
            if train:
                self.epoch += 1
                self.rng.shuffle(self.order)

    return FaceSequence()


def build_callbacks(run_dir: Path, cfg: TrainConfig, start_best: float):
    import keras

    class Checkpoints(keras.callbacks.Callback):
        """best.keras on a new best val accuracy, last.keras + state.json every epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.best = start_best
            self.wait = 0

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            logs = logs or {}
            acc = float(logs.get("val_accuracy", float("nan")))
            improved = acc > self.best
            if improved:
                self.best = acc
                self.wait = 0
                atomic_save(self.model, run_dir / "best.keras")
                # The new best score is recorded at once (the epoch not yet committed), so a kill before
                # last.keras is saved cannot let a worse epoch of the resumed run overwrite best.keras.
                self._write_state(epoch)
            else:
                self.wait += 1
            atomic_save(self.model, run_dir / "last.keras")
            self._write_state(epoch + 1)
            if self.wait >= cfg.patience:
                print(f"early stop: no val improvement for {cfg.patience} epochs", flush=True)
                self.model.stop_training = True

        def _write_state(self, epochs_done: int) -> None:
            state = {"epoch": epochs_done, "best_val_accuracy": self.best, "wait": self.wait}
            write_atomic(run_dir / "state.json", json.dumps(state, indent=2))

    # With an EMA, the averaged weights are swapped in before the checkpoints see the model, so
    # validation, best.keras and last.keras all hold the average (it must come first in the list).
    # A resumed run therefore continues from the averaged weights, a small, harmless restart of the average.
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema > 0 else []
    # The history row goes first and state.json (which commits the epoch for --resume) last, so a kill
    # in between leaves a row that --resume drops (`trim_history`) rather than a committed epoch with no row.
    return swap + [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        Checkpoints(),
    ]


def trim_history(history_csv: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs: those state.json committed.

    Rows are written one per epoch, in order, so any uncommitted row is at the end.
    """
    if not history_csv.exists():
        return
    lines = history_csv.read_text().splitlines(keepends=True)
    if len(lines) > 1 + epochs:
        write_atomic(history_csv, "".join(lines[:1 + epochs]))


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr * 0.1 if warmup else cfg.lr,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=cfg.lr if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay,
                                     use_ema=cfg.ema > 0, ema_momentum=cfg.ema or 0.99)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def train(data: FaceData, run_dir: Path, cfg: TrainConfig, resume: bool = False, verbose: Optional[int] = None):
    """Fit the edge CNN on ``train``, select on ``val``; returns the best model (logits)."""
    import keras

    from fer_edge.train.model import (DEFAULT_STAGES, MAC_BUDGET, check_blocks, count_macs, make_model,
                                      stages_with_widths)

    train_data, val_data = data.split("train"), data.split("val")
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(train_data), size=min(cfg.limit, len(train_data)), replace=False))
        train_data = train_data.subset(keep)
    # Everything that can fail in seconds (model shape, MAC budget, --init, the teachers' files) is
    # checked before the teachers score the training set, which can take an hour.
    start_epoch, best = 0, -1.0
    state_path = run_dir / "state.json"
    if resume:
        if not (run_dir / "last.keras").exists():
            raise FerEdgeError(f"{run_dir}: nothing to resume (no last.keras)")
        model = load_keras_model(run_dir / "last.keras")
        if state_path.exists():
            state = json.loads(state_path.read_text())
            start_epoch, best = int(state["epoch"]), float(state["best_val_accuracy"])
        trim_history(run_dir / "history.csv", start_epoch)
        print(f"resuming from epoch {start_epoch} (best val accuracy {best:.4f})", flush=True)
    else:
        try:
            stages = stages_with_widths(cfg.widths) if cfg.widths else DEFAULT_STAGES
            if cfg.blocks:
                check_blocks(cfg.blocks)
        except ValueError as exc:
            raise FerEdgeError(f"widths or blocks: {exc}") from None
        model = make_model(len(data.classes), cfg.spec.size, stages, dropout=cfg.dropout, mirror=cfg.mirror,
                           head=cfg.head, blocks=cfg.blocks, fc=cfg.fc)
    macs = count_macs(model)
    budget = f"budget {MAC_BUDGET / 1e6:.0f}M" if cfg.mac_budget else "no budget: a teacher, never bundled"
    print(f"model: {model.count_params():,} parameters, {macs / 1e6:.1f}M MACs per face "
          f"({budget}); {len(train_data)} train / {len(val_data)} val faces", flush=True)
    if cfg.mac_budget and macs > MAC_BUDGET:
        raise FerEdgeError(f"model needs {macs / 1e6:.1f}M MACs, over the {MAC_BUDGET / 1e6:.0f}M budget "
                           "(--no-mac-budget for a teacher that never ships)")
    if cfg.init and not resume:
        init_weights(model, Path(cfg.init), data.classes)
    teachers = [Path(t) for t in cfg.teachers]
    for teacher in teachers:
        load_scorer(teacher, data.classes, "teacher")

    views = None
    votes = vote_offset(train_data, cfg.teacher_votes) if teachers and cfg.teacher_votes else None
    if teachers and cfg.teacher_views:  # a resumed run rebuilds the same views and targets
        views = teacher_views(teachers, train_data, cfg, offset=votes)
    elif teachers:
        train_data = replace(train_data, soft=distillation_targets(teachers, train_data.images, train_data, cfg,
                                                                   offset=votes))
    train_seq = make_sequence(train_data, cfg, train=True, views=views)
    val_seq = make_sequence(val_data, cfg, train=False)
    if not resume:
        compile_model(model, cfg, len(train_seq))
    if start_epoch >= cfg.epochs:
        print("already trained for all epochs", flush=True)
    else:
        train_seq.epoch = start_epoch
        t0 = time.time()
        model.fit(
            train_seq,
            validation_data=val_seq,
            epochs=cfg.epochs,
            initial_epoch=start_epoch,
            callbacks=build_callbacks(run_dir, cfg, best),
            verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
        )
        print(f"training took {time.time() - t0:.0f} s", flush=True)
    best_path = run_dir / "best.keras"
    if best_path.exists():
        model = load_keras_model(best_path)
    return model, macs


# The run folder: what a run writes before, between and after its epochs.


def start_run_folder(run_dir: Path, command: str, data_args: dict[str, Any], cfg: TrainConfig) -> None:
    """Write ``config.json`` (the exact command and every setting) before anything else can fail."""
    from fer_edge.train.report import write_json

    write_json(run_dir / "config.json", {"command": command, "args": data_args, "train": cfg.to_dict()})


def write_contract(run_dir: Path, classes: tuple[str, ...], spec: PreprocessSpec) -> None:
    """``classes.json`` and ``preprocess.json``: what the converter and the device need to read the model."""
    (run_dir / "classes.json").write_text(json.dumps(list(classes)) + "\n")
    (run_dir / "preprocess.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")


def saved_run(run_dir: Path) -> tuple[dict[str, Any], TrainConfig, tuple]:
    """A run folder's config.json: the raw dict, its TrainConfig, and its data arguments."""
    saved = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else None
    if saved is None:
        raise FerEdgeError(f"{run_dir}: no config.json, not a fer-train run folder")
    args = saved["args"]
    data_args = (Path(args["data"]) if args["data"] else None, args["labels"],
                 Path(args["ferplus"]) if args["ferplus"] else None, args["eight_classes"])
    cfg_dict = dict(saved["train"])
    cfg_dict["teachers"] = recorded_teachers(cfg_dict)
    cfg_dict.pop("teacher", None)
    cfg_dict["widths"] = tuple(cfg_dict.get("widths") or ())
    cfg_dict["blocks"] = tuple(cfg_dict.get("blocks") or ())  # runs written before --blocks have none
    cfg = TrainConfig(**{k: v for k, v in cfg_dict.items() if k not in ("augment", "spec")},
                      augment=AugmentConfig(**{**cfg_dict["augment"],
                                               "erase_area": tuple(cfg_dict["augment"]["erase_area"])}))
    return saved, cfg, data_args


def committed_epochs(run_dir: Path) -> int:
    """How many epochs ``state.json`` has committed (0 before the first)."""
    state_path = run_dir / "state.json"
    return int(json.loads(state_path.read_text())["epoch"]) if state_path.exists() else 0


def discard_unstarted(run_dir: Path) -> None:
    """Remove a new run's folder when it failed before its first epoch ended.

    Such a folder holds only the config and contract files, which are
    rewritten by the next try; left behind, it would push that retry to
    ``<name>2``. A run that finished an epoch (last.keras) is kept for --resume.
    """
    import shutil

    if not (run_dir / "last.keras").exists() and not (run_dir / "best.keras").exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def epochs_logged(run_dir: Path) -> int:
    return len((run_dir / "history.csv").read_text().strip().splitlines()) - 1


def evaluate_model(model, dataset: FaceData, split: str, spec: PreprocessSpec, run_dir: Optional[Path],
                   tag: str) -> dict:
    """Score `model` on one split; with `run_dir`, also draw the confusion matrix there."""
    from fer_edge.train.report import classification_metrics, plot_confusion, predict_logits

    part = dataset.split(split)
    pred = predict_logits(model, part.images, spec).argmax(1)
    metrics = classification_metrics(part.labels, pred, dataset.classes)
    if run_dir is not None:
        plot_confusion(np.asarray(metrics["confusion_matrix"]), dataset.classes, run_dir / f"confusion_{tag}.png",
                       f"{tag}: top-1 {metrics['accuracy']:.1%}, macro-F1 {metrics['macro_f1']:.3f}")
    return metrics


def write_outputs(run_dir: Path, dataset: FaceData, cfg: TrainConfig, model, macs: int, report_split: str,
                  run_info: dict, labels: str) -> None:
    """Write a run's final files from its selected model: model.keras, SavedModel, plots, metrics.json.

    Shared by ``fit`` and ``finish`` so a run stopped early ends with exactly the files of one that ran out.
    ``run_info`` carries the timing and the command(s) that made the run.
    """
    from fer_edge.train.model import with_softmax
    from fer_edge.train.report import plot_curves, versions, write_json

    final = with_softmax(model)
    atomic_save(final, run_dir / "model.keras")
    export_saved_model(final, run_dir)
    plot_curves(run_dir / "history.csv", run_dir / "curves.png")

    val = evaluate_model(model, dataset, "val", cfg.spec, run_dir, "val")
    report = evaluate_model(model, dataset, report_split, cfg.spec, run_dir, report_split)
    write_json(run_dir / "metrics.json", {
        "split": report_split,
        **report,
        "val_accuracy": val["accuracy"],
        "val_macro_f1": val["macro_f1"],
        "params": int(model.count_params()),
        "macs": macs,
        "epochs_run": epochs_logged(run_dir),
        **run_info,
        "versions": versions(),
        "data": {"source": dataset.source, "sha256": dataset.checksum, "labels": labels,
                 "skipped": dataset.skipped},
    })
    print(f"{report_split} top-1 {report['accuracy']:.2%} (macro-F1 {report['macro_f1']:.3f}); "
          f"val top-1 {val['accuracy']:.2%}. Outputs in {run_dir}", flush=True)
