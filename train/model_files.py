"""Model files on disk: load a .keras file, save one atomically, export a SavedModel, find a run's model.

Shared by training (checkpoints), distillation (teachers), weight surgery
(``--init``) and ``fer-train soup``/``fer-convert``, which all read or write
the same run folders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fer_edge.errors import FerEdgeError
from fer_edge.files import replacing


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


def model_path(source: Path) -> Path:
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


def has_classes(model_path: Path, classes: tuple[str, ...]) -> bool:
    """Whether the run beside ``model_path`` was trained on ``classes``, in this order (its classes.json)."""
    classes_file = model_path.parent / "classes.json"
    return classes_file.exists() and tuple(json.loads(classes_file.read_text())) == tuple(classes)


def export_saved_model(model, run_dir: Path) -> Path:
    """Write the probability model as a TF SavedModel (what some converters and servers take)."""
    target = run_dir / "saved_model"
    tmp = run_dir / ".saved_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.export(str(tmp), format="tf_saved_model", verbose=False)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
