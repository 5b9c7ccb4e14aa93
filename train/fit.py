"""Training: input pipeline, schedule, checkpoints and the run directory.

A run directory (``runs/train/<name>``) gets ``config.json`` first, then per
epoch ``last.keras`` (for `--resume`) and ``best.keras`` (highest accuracy on
the validation split, FER2013's PublicTest). Every model file is written to a
temporary name and renamed, so a crash or Ctrl-C never leaves a half-written
model under a final name.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fer_edge.errors import FerEdgeError
from fer_edge.files import replacing, write_atomic
from fer_edge.preprocess import DEFAULT_SPEC, PreprocessSpec, normalize, spec_beside
from fer_edge.train.augment import TTA_TRANSFORMS, AugmentConfig, augment_batch, mixup_batch, warp_batch
from fer_edge.train.data import FaceData


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


def load_keras_model(path: Path, compile: bool = True):
    """Load a `.keras` file, turning Keras' many failure types into one FerEdgeError line."""
    import keras

    import fer_edge.train.model  # noqa: F401  registers the Mirror layer that mirrored models use

    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises many exception types for a bad file
        raise FerEdgeError(f"{path}: not a loadable Keras model ({exc.__class__.__name__})") from None


def atomic_save(model, path: Path) -> None:
    """Save a Keras model via a temporary file and an atomic rename."""
    with replacing(path) as tmp:
        model.save(tmp)


def one_hot_labels(data: FaceData) -> np.ndarray:
    """Each face's (majority) label as a one-hot distribution, the form the loss and accuracy metric take."""
    return np.eye(len(data.classes), dtype=np.float32)[data.labels]


def label_distributions(data: FaceData) -> np.ndarray:
    """Each face's target as a distribution: the soft labels if the data has them, else one-hot."""
    if data.soft is not None:
        return data.soft
    return one_hot_labels(data)


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


def _model_path(source: Path) -> Path:
    """The model file of a source: a .keras file, or a run folder's best.keras, else its model.keras.

    A run in progress has only best.keras; a folder committed under
    train/results keeps only model.keras (the same weights with the softmax
    the bundle ships, which ``logits_of`` strips).
    """
    source = Path(source)
    if source.is_dir():
        found = [source / n for n in ("best.keras", "model.keras") if (source / n).exists()]
        if found:
            return found[0]
    elif source.exists():
        return source
    raise FerEdgeError(f"{source}: no model found (expected a .keras file, or a run folder with best.keras "
                       f"or model.keras)")


def _has_classes(model_path: Path, classes: tuple[str, ...]) -> bool:
    """Whether the run beside ``model_path`` was trained on ``classes``, in this order (its classes.json)."""
    classes_file = model_path.parent / "classes.json"
    return classes_file.exists() and tuple(json.loads(classes_file.read_text())) == tuple(classes)


def _load_scorer(source: Path, classes: tuple[str, ...], role: str):
    """(path, logits model, its preprocess spec) for one source of ``mean_logits``, checked against ``classes``."""
    from fer_edge.train.model import logits_of

    path = _model_path(source)
    model = logits_of(load_keras_model(path, compile=False))
    if not _has_classes(path, classes):
        raise FerEdgeError(f"{path}: the {role} must be a run trained on the same classes, in the same "
                           f"order (no matching classes.json beside it)")
    if model.output.shape[-1] != len(classes):
        raise FerEdgeError(f"{path}: the {role} has {model.output.shape[-1]} outputs, not {len(classes)}")
    return path, model, spec_beside(path)


def mean_logits(sources: Sequence[Path], faces: np.ndarray, classes: tuple[str, ...], mirror: bool = True,
                role: str = "model", tta: bool = False) -> np.ndarray:
    """Logits averaged over several models and, with ``mirror``, over each face and its mirror image.

    With ``tta``, also over the small shifts and zooms of ``TTA_TRANSFORMS``
    (each mirrored too when ``mirror``): a model's reading of a face should
    not hinge on where the crop put it by a pixel or two, and averaging the
    copies cancels that jitter. It costs one pass per copy, which a teacher
    pays once, offline, and the student never does.

    One function serves distillation targets and ``fer-train evaluate``, so
    the ensemble that teaches a student is scored exactly as it teaches.
    Averaging over the mirror image cancels a model's left/right quirks
    (a mirrored face keeps its emotion), and averaging models trained from
    different starts cancels part of each one's own errors. Each source must
    sit beside a classes.json that matches ``classes``, because a model with
    the right number of outputs in another order would be silently wrong.
    Each model is fed through the preprocess.json beside it (the contract it
    was trained with).
    """
    from tqdm import tqdm

    from fer_edge.train.report import predict_logits

    if not sources:
        raise FerEdgeError(f"no {role} given")
    copies = [warp_batch(faces, *t) for t in (TTA_TRANSFORMS if tta else TTA_TRANSFORMS[:1])]
    if mirror:
        copies += [np.ascontiguousarray(c[:, :, ::-1]) for c in copies]
    # Every model is loaded and checked first, so a bad one fails before an hour of scoring the others.
    models = [_load_scorer(source, classes, role) for source in sources]
    logits = np.zeros((len(faces), len(classes)), np.float32)
    # One bar over every pass: teachers with --teacher-tta over many views run for an hour or more.
    with tqdm(total=len(models) * len(copies) * len(faces), desc=f"{role}s scoring", unit="pass",
              unit_scale=True, file=sys.stderr, leave=False, mininterval=1.0) as bar:
        for path, model, model_spec in models:
            bar.write(f"{role} {path}: scoring {len(faces)} faces x {len(copies)} copies...", file=sys.stdout)
            logits += sum(predict_logits(model, c, model_spec, on_batch=bar.update)
                          for c in copies) / np.float32(len(copies))
    return logits / np.float32(len(sources))


def teacher_targets(sources: Sequence[Path], faces: np.ndarray, classes: tuple[str, ...],
                    temperature: float, tta: bool = False, offset: Optional[np.ndarray] = None) -> np.ndarray:
    """The teachers' class distribution for each face, from their mirror-averaged mean logits.

    With ``tta`` the logits are also averaged over ``TTA_TRANSFORMS``' shifts and zooms.
    ``offset`` (N, C) is added to the mean logits before the softening (see ``tta_offset``).

    Offline distillation: computed once before training, so it costs one
    inference pass per teacher instead of a teacher forward pass per step.
    Each teacher is fed through its own run's preprocess.json, as it was
    trained and as ``fer-train evaluate`` scores it, not through the student's.
    The temperature spreads probability onto the classes the teachers find
    plausible, which is the signal hard labels lack on an ambiguous face.
    """
    z = mean_logits(sources, faces, classes, mirror=True, role="teacher", tta=tta)
    if offset is not None:
        z += offset
    z /= np.float32(temperature)
    z -= z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def distillation_targets(sources: Sequence[Path], faces: np.ndarray, data: FaceData, cfg: TrainConfig,
                         labels: Optional[np.ndarray] = None, offset: Optional[np.ndarray] = None) -> np.ndarray:
    """Each face's training target: ``cfg.teacher_weight`` of the teachers' distribution, the rest its label.

    ``faces`` are ``data``'s faces as the teachers should see them: as they are, or an augmented copy.
    ``labels`` replaces ``data``'s label distributions where a view changed what a face shows (mixup).
    ``offset`` shifts the teachers' logits per face (``tta_offset``).
    """
    taught = teacher_targets(sources, faces, data.classes, cfg.teacher_temperature, cfg.teacher_tta, offset)
    labels = label_distributions(data) if labels is None else labels
    return (1 - cfg.teacher_weight) * labels + cfg.teacher_weight * taught


#: Added to each vote share before its log, so a class nobody chose is unlikely rather than impossible.
VOTE_SHARE_FLOOR = 0.05


def vote_offset(data: FaceData, weight: float, fit_on: Optional[FaceData] = None) -> np.ndarray:
    """Per-face logits of what the other labelling of each face says about its label, beyond the base rate.

    Ten annotators' votes (FER+) and the FER2013 label often disagree (a
    regression on the votes alone gets 67.9% of the Training labels right),
    yet the votes still tell which labels a face is likely to carry: on PublicTest, adding this evidence to the two-teacher
    shift/zoom ensemble raised its top-1 from 71.6% to 73.2% (weight 0.5,
    ``fer-train evaluate --votes``). The other way round, FER2013's one
    label as evidence on a FER+ label, helps less (85.2% to 85.6% for the
    FER+ teachers). Neither labelling exists for a face the device sees,
    so they teach a student and stop there.

    The model of P(label | votes) is a multinomial logistic regression on
    the log vote shares, fitted on ``fit_on``'s faces and labels (default:
    ``data`` itself; for FER+ votes an 11x7 model on tens of thousands of
    faces, nothing to overfit). Returned for ``data``: ``weight`` x
    (log P(label | votes) - log P(label)), (N, C), to add to the teachers'
    mean logits, which already hold the base rate once.
    """
    from scipy.optimize import minimize

    fit_on = data if fit_on is None else fit_on
    for part in (data, fit_on):
        if part.votes is None:
            raise FerEdgeError("--teacher-votes needs the other labelling of the faces: FER2013 and FER+ rows "
                               "joined (fer2013.csv with fer2013new.csv)")
    x = _vote_features(fit_on.votes)
    k = len(fit_on.classes)
    onehot = np.eye(k)[fit_on.labels]

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        logp = _log_softmax(x @ w.reshape(x.shape[1], k))
        return -(onehot * logp).sum() / len(x), (x.T @ (np.exp(logp) - onehot) / len(x)).ravel()

    w = minimize(loss_and_grad, np.zeros(x.shape[1] * k), jac=True, method="L-BFGS-B").x.reshape(x.shape[1], k)
    fitted_top1 = ((x @ w).argmax(axis=1) == fit_on.labels).mean()
    print(f"teacher votes: P(label | the other labelling) fitted on {len(fit_on)} faces, top-1 {fitted_top1:.1%} "
          f"on them; weight {weight:g}", flush=True)
    prior = np.bincount(fit_on.labels, minlength=k) / len(fit_on)
    logp = _log_softmax(_vote_features(data.votes) @ w)
    return (weight * (logp - np.log(np.maximum(prior, 1e-6)))).astype(np.float32)


def _vote_features(votes: np.ndarray) -> np.ndarray:
    """Log vote shares plus a constant, (N, K + 1): the regression's inputs (a one-hot vote is one share of 1)."""
    shares = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1.0)
    return np.hstack([np.log(shares + VOTE_SHARE_FLOOR), np.ones((len(votes), 1))]).astype(np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def tta_offset(sources: Sequence[Path], faces: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """How far the teachers' TTA-averaged logits of each clean face lie from their face-and-mirror logits.

    The shift-and-zoom average is the strongest teacher there is, but it
    costs seven times the passes of the face and its mirror, so scoring
    every augmented view with it takes hours on a CPU. Added to a view's
    face-and-mirror logits, this per-face correction carries the TTA
    ensemble's second opinion into every view for the price of one TTA
    pass over the clean faces, while the view's own logits still say what
    an augmentation hid.
    """
    print("teacher TTA offset: clean faces with and without the shifts and zooms", flush=True)
    return (mean_logits(sources, faces, classes, mirror=True, role="teacher", tta=True)
            - mean_logits(sources, faces, classes, mirror=True, role="teacher", tta=False))


@dataclass(frozen=True)
class TeacherViews:
    """K augmented copies of the training faces, (K, N, H, W) uint8, and the targets for each, (K, N, C)."""

    images: np.ndarray
    targets: np.ndarray


def teacher_views(sources: Sequence[Path], data: FaceData, cfg: TrainConfig,
                  offset: Optional[np.ndarray] = None) -> TeacherViews:
    """Augment each training face ``cfg.teacher_views`` times and have the teachers label every copy.

    Distilling from targets computed on the clean face while the student sees
    an augmented one is inconsistent: once a rotation or an erased patch hides
    the mouth, the clean face's "happy" is no longer what the image shows.
    Teaching on the very image the student gets is "consistent teaching"
    (Beyer et al., 2022, "Knowledge distillation: a good teacher is patient
    and consistent"). A teacher pass per training step would cost several
    times the student's step on a CPU, so a fixed pool of views is scored
    once and the epochs cycle through it.

    With ``cfg.teacher_mixup``, each copy is also blended with another
    face's copy, and its label part mixes the two labels by the same weight.
    With ``cfg.teacher_tta_offset``, every view's logits get ``tta_offset``
    of its clean face; ``offset`` (N, C), if given, is added to every view too.
    """
    images = np.empty((cfg.teacher_views, *data.images.shape), np.uint8)
    targets = np.empty((cfg.teacher_views, len(data), len(data.classes)), np.float32)
    labels = label_distributions(data)
    if cfg.teacher_tta_offset:
        tta = tta_offset(sources, data.images, data.classes)
        offset = tta if offset is None else tta + offset
    for view in range(cfg.teacher_views):
        rng = np.random.default_rng((cfg.seed, view))
        faces = augment_batch(data.images, rng, cfg.augment)
        view_labels = labels
        if cfg.teacher_mixup > 0:
            faces, partner, lam = mixup_batch(faces, rng, cfg.teacher_mixup)
            view_labels = lam[:, None] * labels + (1 - lam[:, None]) * labels[partner]
        np.rint(faces, out=images[view], casting="unsafe")
        print(f"teacher view {view + 1}/{cfg.teacher_views}", flush=True)
        targets[view] = distillation_targets(sources, images[view], data, cfg, view_labels, offset)
    return TeacherViews(images, targets)


def _slim(src_weights: list[np.ndarray], shapes: list[tuple[int, ...]], keep_in: Optional[np.ndarray],
          keep_out: Optional[np.ndarray]) -> Optional[list[np.ndarray]]:
    """Cut a wider layer's weights down to ``shapes``: input channels ``keep_in``, output channels ``keep_out``.

    Returns None when the source is not a wider copy of the target.
    """
    out = []
    for w, shape in zip(src_weights, shapes):
        if w.ndim >= 2 and keep_in is not None:  # kernel: (..., in, out)
            w = np.take(w, keep_in, axis=-2)
        if keep_out is not None and w.shape[-1] != shape[-1]:
            w = np.take(w, keep_out, axis=-1)
        if tuple(w.shape) != tuple(shape):
            return None
        out.append(w)
    return out


def _grow_classifier(src_weights: list[np.ndarray], keep_in: Optional[np.ndarray],
                     in_features: int) -> list[np.ndarray]:
    """The source's classifier with zero weights for the extra inputs a pooled head adds.

    The head's features then change no logit until training gives them
    weight, so a model grown from a headless one starts with its predictions.
    """
    kernel, bias = src_weights
    if keep_in is not None:
        kernel = np.take(kernel, keep_in, axis=0)
    grown = np.zeros((in_features, kernel.shape[1]), kernel.dtype)
    grown[:len(kernel)] = kernel
    return [grown, bias]


def _fc_as_pooling(layer, map_shape: Sequence[Optional[int]]) -> list[np.ndarray]:
    """Weights that make a spatial head (``make_model(fc=N)``) output the pooled features first.

    Unit j < channels averages channel j over the flattened map, as global
    average pooling did; the input is a ReLU map, so the head's ReLU passes
    the average unchanged, and the grown classifier (``_grow_classifier``)
    reads it as before. The other units keep their fresh initialisation and
    feed zero classifier weights, so the model starts with the pooled
    model's predictions and training decides what the spatial weights add.
    """
    _, h, w, channels = map_shape
    kernel, bias = (np.array(v) for v in layer.get_weights())
    if kernel.shape[1] < channels:
        raise FerEdgeError(f"a spatial head of {kernel.shape[1]} units cannot start as the pooling of "
                           f"{channels} channels; give it at least {channels} units")
    flat = kernel.reshape(h * w, channels, kernel.shape[1])  # Flatten of an NHWC map: position-major
    flat[:, :, :channels] = np.eye(channels, dtype=kernel.dtype)[None] / (h * w)
    bias[:channels] = 0
    return [flat.reshape(kernel.shape), bias]


#: Layer names inside a residual block (``make_model(blocks=...)``).
RESIDUAL_LAYER = re.compile(r"s\d+_r\d+_")


def init_weights(model, source: Path, classes: tuple[str, ...]) -> None:
    """Copy a trained model's weights into ``model``, layer by layer name.

    This is how a run continues a finished one with a fresh schedule, or how a
    new label set starts from FER2013 features: the backbone is always copied;
    the classifier layer only when the source was trained on the same classes
    in the same order (read from the ``classes.json`` beside it), otherwise it
    starts fresh.

    A narrower model (fewer channels per stage, e.g. the half-size backbone of
    a mirrored model) starts from a wider trained one by keeping, in each
    convolution, the channels whose batch-norm scale is largest: a channel
    with a small scale contributes little downstream, so dropping it costs the
    least accuracy to win back in fine-tuning ("network slimming", Liu et al.,
    2017). Plain and mirrored models initialise each other through their
    backbones. A model with a pooled head (``make_model(head=N)``) starts from
    one without: the head is fresh and the classifier is grown so the pair
    predict the same before training; so does one with a spatial head
    (``make_model(fc=N)``), whose first units start as the pooling.
    """
    from fer_edge.train.model import backbone_of

    path = _model_path(source)
    trained = backbone_of(load_keras_model(path, compile=False))
    same_classes = _has_classes(path, classes)
    by_name = {layer.name: layer for layer in trained.layers}
    copied, slimmed, skipped = 0, 0, []
    keep_in: Optional[np.ndarray] = None  # the source channels feeding the current layer
    for layer in backbone_of(model).layers:
        src = by_name.get(layer.name)
        if layer.name == "fc":
            if src is None:  # a spatial head grown on a pooled model
                layer.set_weights(_fc_as_pooling(layer, backbone_of(model).get_layer("flatten").input.shape))
                copied += 1
                continue
            if tuple(src.kernel.shape) != tuple(layer.kernel.shape):
                raise FerEdgeError(f"{path}: its spatial head (fc) has another shape; a flattened map cannot be "
                                   "cut down: --init from a run of the same last-stage width and head size")
            keep_in = None  # its units, not the map's channels, feed the classifier
        if src is None or not layer.weights:
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        src_weights = src.get_weights()
        keep_out = keep_in if "_bn" in layer.name else None
        if layer.name.startswith("s") and "_conv" in layer.name:
            out_channels = shapes[0][-1]
            bn = by_name.get(layer.name.replace("_conv", "_bn"))  # make_model puts a BN after every conv
            if bn is None:
                raise FerEdgeError(f"{path}: {layer.name} has no batch norm after it; not a fer-edge CNN")
            keep_out = np.sort(np.argsort(-np.abs(bn.get_weights()[0]))[:out_channels])
        if layer.name == "logits" and shapes[0][0] > src_weights[0].shape[0]:
            src_weights, keep_in = _grow_classifier(src_weights, keep_in, shapes[0][0]), None
        weights = _slim(src_weights, shapes, keep_in, keep_out)
        if "_conv" in layer.name:
            keep_in = keep_out
        if weights is None or (layer.name == "logits" and not same_classes):
            skipped.append(layer.name)
            continue
        cut = any(a.shape != b.shape for a, b in zip(src_weights, weights))
        if cut and RESIDUAL_LAYER.match(layer.name):
            raise FerEdgeError(f"{path}: {layer.name} is in a residual block, whose channels cannot be cut "
                               "down (the skip adds them one to one); --init from a run of the same widths")
        slimmed += cut
        layer.set_weights(weights)
        copied += 1
    if copied == 0:
        raise FerEdgeError(f"{path}: no layer matches this model; it is not a fer-edge CNN of this shape")
    note = f" ({slimmed} cut down to fewer channels)" if slimmed else ""
    note += f"; fresh: {', '.join(skipped)}" if skipped else ""
    print(f"initialised {copied} layers from {path}{note}", flush=True)


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
        _load_scorer(teacher, data.classes, "teacher")

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


def export_saved_model(model, run_dir: Path) -> Path:
    """Write the probability model as a TF SavedModel (what some converters and servers take)."""
    target = run_dir / "saved_model"
    tmp = run_dir / ".saved_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.export(str(tmp), format="tf_saved_model", verbose=False)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
