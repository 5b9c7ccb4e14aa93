"""Weight surgery for ``fer-train --init``: start a model from another model's trained weights.

Copying layer by layer name is the easy part; the rest fits a source of
another shape into the new model: fewer channels (network slimming), a
pooled head or a spatial (dense) head grown on a model without one, a new
classifier when the classes differ. Each grown part starts so that the new
model predicts what the source predicted, and training decides the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fer_edge.errors import FerEdgeError
from fer_edge.train.model_files import has_classes, load_keras_model, model_path


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

    path = model_path(source)
    trained = backbone_of(load_keras_model(path, compile=False))
    same_classes = has_classes(path, classes)
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
