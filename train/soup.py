"""Weight averaging ("model soups", Wortsman et al., 2022) of runs from one lineage.

Runs fine-tuned from the same trained start tend to stay in one basin of the
loss, so the average of their weights is itself a good model and often a
better one than each: the runs' independent errors partly cancel, as in an
ensemble, but the soup costs one model's inference instead of several. That
is the point on the device, where a second model would halve the frame rate.

Averaging only makes sense between models of the same architecture, classes
and preprocessing; runs that started from different random weights do not
share a basin and average into noise, which the validation score then shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fer_edge.convert.cli import resolve_model, run_facts
from fer_edge.errors import FerEdgeError


def average_models(sources: Sequence[Path], weights: Optional[Sequence[float]] = None):
    """Load the models in ``sources`` and return the logits model of their weighted mean.

    The logits model (see ``logits_of``) is what every model file shares,
    whether or not it ends in the bundle's softmax, so a run's ``model.keras``
    and a ``best.keras`` checkpoint average together.

    Every variable is averaged, batch-norm statistics included: with models
    this close, the mean of their running statistics is close to the
    statistics the averaged model would measure, and the validation score
    checks that. Models must agree on classes (the classes.json beside each),
    preprocessing (preprocess.json) and every variable's shape.
    """
    from fer_edge.train.model_files import load_keras_model
    from fer_edge.train.model import logits_of

    if len(sources) < 2:
        raise FerEdgeError("a soup needs at least two models")
    if weights is None:
        weights = [1.0] * len(sources)
    if len(weights) != len(sources) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise FerEdgeError(f"need one non-negative weight per model ({len(sources)}), not summing to 0")
    paths = [resolve_model(Path(s)) for s in sources]
    first_classes, first_spec, _ = run_facts(paths[0])
    soup = logits_of(load_keras_model(paths[0], compile=False))
    total = [np.zeros(v.shape, np.float64) for v in soup.get_weights()]
    for path, share in zip(paths, weights):
        classes, spec, _ = run_facts(path)
        if classes != first_classes:
            raise FerEdgeError(f"{path}: its classes.json differs from {paths[0]}'s; only runs on the same "
                               f"classes, in the same order, can be averaged")
        if spec != first_spec:
            raise FerEdgeError(f"{path}: its preprocess.json differs from {paths[0]}'s")
        model = soup if path == paths[0] else logits_of(load_keras_model(path, compile=False))
        values = model.get_weights()
        if [v.shape for v in values] != [t.shape for t in total]:
            raise FerEdgeError(f"{path}: its layers differ in shape from {paths[0]}'s; only models of one "
                               f"architecture can be averaged")
        for acc, value in zip(total, values):
            acc += np.float64(share) * value
    scale = 1.0 / float(sum(weights))
    soup.set_weights([(acc * scale).astype(v.dtype) for acc, v in zip(total, soup.get_weights())])
    return soup
