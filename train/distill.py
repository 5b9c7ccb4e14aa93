"""Distillation: the teachers' targets for a student, and every variant of them.

``fer-train --teacher RUN`` trains on targets that mix each face's label with
what one or more trained models (the teachers) say about it. Everything that
makes those targets lives here: scoring faces with an ensemble
(``mean_logits``, shared with ``fer-train evaluate``), softening
(``teacher_targets``), mixing with the label (``distillation_targets``), and
the options that make the teachers' answer richer: augmented views
(``teacher_views``, ``--teacher-views``), shift/zoom averaging
(``--teacher-tta``, ``tta_offset``), mixup (``--teacher-mixup``) and the other
labelling's votes (``vote_offset``, ``--teacher-votes``). All of it runs once,
before the first epoch; the training loop (``fit.py``) only reads the result.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from fer_edge.errors import FerEdgeError
from fer_edge.preprocess import spec_beside
from fer_edge.train.augment import TTA_TRANSFORMS, augment_batch, mixup_batch, warp_batch
from fer_edge.train.data import FaceData
from fer_edge.train.model_files import has_classes, load_keras_model, model_path

if TYPE_CHECKING:
    from fer_edge.train.fit import TrainConfig


def one_hot_labels(data: FaceData) -> np.ndarray:
    """Each face's (majority) label as a one-hot distribution, the form the loss and accuracy metric take."""
    return np.eye(len(data.classes), dtype=np.float32)[data.labels]


def label_distributions(data: FaceData) -> np.ndarray:
    """Each face's target as a distribution: the soft labels if the data has them, else one-hot."""
    if data.soft is not None:
        return data.soft
    return one_hot_labels(data)


def load_scorer(source: Path, classes: tuple[str, ...], role: str):
    """(path, logits model, its preprocess spec) for one source of ``mean_logits``, checked against ``classes``."""
    from fer_edge.train.model import logits_of

    path = model_path(source)
    model = logits_of(load_keras_model(path, compile=False))
    if not has_classes(path, classes):
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
    models = [load_scorer(source, classes, role) for source in sources]
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
