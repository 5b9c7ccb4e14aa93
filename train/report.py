"""Scores and pictures of a run: accuracy, per-class P/R/F1, confusion matrix, curves.

Plain numpy for the numbers (the converter and benchmarks reuse `classification_metrics`
on TFLite predictions) and matplotlib's Agg backend for the PNGs, so reports
render on a headless machine.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fer_edge.files import save_figure


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Top-1 accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix.

    Rows of the confusion matrix are true classes, columns predictions.
    """
    k = len(classes)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "samples": int(len(y_true)),
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(cm[i].sum())}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def predict_logits(model, faces: np.ndarray, spec, batch_size: int = 256,
                   on_batch: Optional[Callable[[int], object]] = None) -> np.ndarray:
    """Run a Keras model on uint8 faces through the contract's normalisation.

    ``on_batch`` gets the size of each batch once it is scored, so a caller
    scoring many copies (teachers over their views) can drive one progress bar.
    """
    from fer_edge.preprocess import normalize

    outs = []
    for i in range(0, len(faces), batch_size):
        outs.append(model.predict_on_batch(normalize(faces[i:i + batch_size], spec)))
        if on_batch is not None:
            on_batch(len(outs[-1]))
    return np.concatenate(outs).astype(np.float32)


def versions() -> dict[str, str]:
    """Versions that shaped a result, for reproducibility records."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("numpy", "cv2", "tensorflow", "keras", "ai_edge_litert"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "unknown")
    from fer_edge import __version__

    found["fer_edge"] = __version__
    return found


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix: each row shows where one true class went."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, path)


def plot_curves(history_csv: Path, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation, from Keras' CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax1), ("accuracy", ax2)):
        ax.plot(epochs, [float(r[key]) for r in rows], label="train")
        if f"val_{key}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    from fer_edge.files import write_atomic

    write_atomic(path, json.dumps(data, indent=2) + "\n")
