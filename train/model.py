"""The edge CNN: a compact VGG-style network sized for int8 on a Raspberry Pi.

Only ops that full-integer TFLite handles well and fast: 3x3 convolutions,
batch norm (folded into the convolution at conversion), ReLU, max-pooling,
global average pooling, dense. No augmentation layers inside the model:
augmentation runs in the input pipeline, so the exported model is the bare
inference graph.

Budget: at most 50M multiply-accumulates per 48x48 face. Width goes where
the image is small (a 3x3 conv on a 6x6 map costs 1/64 of the same conv on
48x48), depth early is kept to one conv per stage.

Mirror averaging (`mirror=True`): the model runs its backbone on the face
and on the face flipped left to right and averages the logits, so the
prediction cannot depend on which side of the face an expression shows
more. Both passes count against the budget, so a mirrored model has a
backbone of half the MACs. The flip (TFLite REVERSE_V2) and the average stay
in the int8 graph, so the device runs one model as before.

Residual blocks (`blocks=(b1, ..., b5)`): after a stage's plain convolutions,
b more pairs of 3x3 convolutions at the stage's width, each pair added back
to its input (He et al., 2016). They put depth where the map is small: at
6x6 a 3x3 conv costs a quarter of the same conv at 12x12 and about 36 MACs
per weight, which balances the MAC budget against the int8 file size. The
skip keeps a deep stack trainable from scratch, and int8 TFLite runs the
ADD natively.

Pooled head (`head=N`): a 1x1 convolution expands the last 3x3 map to N
channels, and their pooled values join the stage's own pooled features
before the classifier. At 3x3 a channel costs 9 MACs per input channel, so
the head adds classifier capacity (the MobileNet "last 1x1 expansion") for a
few percent of the budget; a model with a head starts from a trained model
without one exactly where it left off (its extra classifier inputs start at
zero, see `fer_edge.train.surgery.init_weights`).

Spatial head (`fc=N`): the last 3x3 map is flattened, not averaged, into a
dense layer of N ReLU units before the classifier. FER2013 faces are roughly
aligned, so where a feature fires (brow, mouth) carries meaning that global
pooling throws away, and a dense weight costs one MAC: N=256 adds 0.44M MACs
per pass for 442k weights, the cheapest capacity there is within the MAC
budget (the int8 file's 1 MB limit bounds it instead). A model with the head
starts from a pooled model exactly where it left off: its first units are set
to the channel averages the pooled model used (see `init_weights`).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

MAC_BUDGET = 50_000_000

#: (channels, convs) per stage; a 2x2 max-pool follows every stage but the last.
DEFAULT_STAGES: tuple[tuple[int, int], ...] = ((32, 1), (64, 1), (96, 2), (160, 2), (256, 1))


def check_blocks(blocks: Sequence[int]) -> tuple[int, ...]:
    """Residual blocks per stage, one non-negative count per stage; ValueError otherwise."""
    blocks = tuple(int(b) for b in blocks)
    if len(blocks) != len(DEFAULT_STAGES) or min(blocks) < 0:
        raise ValueError(f"expected {len(DEFAULT_STAGES)} non-negative block counts, one per stage, "
                         f"not {','.join(map(str, blocks))}")
    return blocks


def stages_with_widths(widths: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The default network's stages with other channel counts, one per stage.

    Width is the knob that trades accuracy for MACs (a mirrored model needs
    about half the default width to stay in budget); depth stays as designed.
    Raises ValueError on a wrong count or a non-positive width, so the CLI and
    code that builds a TrainConfig get the same check.
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(DEFAULT_STAGES) or min(widths) < 1:
        raise ValueError(f"expected {len(DEFAULT_STAGES)} positive channel counts, one per stage, "
                         f"not {','.join(map(str, widths))}")
    return tuple((w, convs) for w, (_, convs) in zip(widths, DEFAULT_STAGES))


#: Name of the single-pass network inside a mirrored model.
BACKBONE_NAME = "fer_edge_cnn"


@keras.saving.register_keras_serializable(package="fer_edge")
class Mirror(layers.Layer):
    """Flips a batch of NHWC faces left to right (the width axis)."""

    def call(self, x):
        return keras.ops.flip(x, axis=2)


def make_model(
    num_classes: int,
    input_size: int = 48,
    stages: Sequence[tuple[int, int]] = DEFAULT_STAGES,
    dropout: float = 0.4,
    weight_decay: float = 0.0,
    mirror: bool = False,
    head: int = 0,
    blocks: Sequence[int] = (),
    fc: int = 0,
) -> keras.Model:
    """Build the classifier: input (size, size, 1) float in [0, 1] -> class logits.

    Logits, not softmax, come out so label smoothing and soft labels train
    stably; `with_softmax` adds the softmax for export. `head` > 0 adds the
    pooled head of that many channels, `blocks` the residual blocks per stage,
    `fc` > 0 the spatial head of that many units (module docstring; empty or
    0: none). `head` and `fc` both replace the classifier's input: ValueError
    for both.
    """
    if head and fc:
        raise ValueError("a model has a pooled head (head) or a spatial head (fc), not both")
    if mirror:
        return with_mirror(make_model(num_classes, input_size, stages, dropout, weight_decay, head=head,
                                      blocks=blocks, fc=fc))
    blocks = check_blocks(blocks) if blocks else (0,) * len(stages)
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = inputs
    for s, (width, convs) in enumerate(stages):
        for c in range(convs):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=reg,
                              name=f"s{s}_conv{c}")(x)
            x = layers.BatchNormalization(name=f"s{s}_bn{c}")(x)
            x = layers.ReLU(name=f"s{s}_relu{c}")(x)
        for b in range(blocks[s]):
            x = _residual_block(x, width, reg, f"s{s}_r{b}")
        if s < len(stages) - 1:
            x = layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    if fc:
        pooled = layers.Flatten(name="flatten")(x)
        pooled = layers.Dense(fc, kernel_regularizer=reg, name="fc")(pooled)
        pooled = layers.ReLU(name="fc_relu")(pooled)
    else:
        pooled = layers.GlobalAveragePooling2D(name="gap")(x)
    if head:
        e = layers.Conv2D(head, 1, use_bias=False, kernel_regularizer=reg, name="head_conv")(x)
        e = layers.BatchNormalization(name="head_bn")(e)
        e = layers.ReLU(name="head_relu")(e)
        pooled = layers.Concatenate(name="head_concat")([pooled, layers.GlobalAveragePooling2D(name="head_gap")(e)])
    x = layers.Dropout(dropout, name="dropout")(pooled)
    logits = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, logits, name=BACKBONE_NAME)


def _residual_block(x, width: int, reg, name: str):
    """Two 3x3 conv + batch-norm layers whose output is added to their input, then ReLU."""
    y = x
    for c in range(2):
        y = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv{c}")(y)
        y = layers.BatchNormalization(name=f"{name}_bn{c}")(y)
        if c == 0:
            y = layers.ReLU(name=f"{name}_relu{c}")(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def with_mirror(backbone: keras.Model) -> keras.Model:
    """Average a logits model over the face and its mirror image (one model, two passes)."""
    face = keras.Input(backbone.input.shape[1:], name="face")
    flipped = Mirror(name="mirror")(face)
    logits = layers.Average(name="mirror_average")([backbone(face), backbone(flipped)])
    return keras.Model(face, logits, name=BACKBONE_NAME + "_mirrored")


def backbone_of(model: keras.Model) -> keras.Model:
    """The single-pass network: the model itself, or the one inside a mirrored model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name == BACKBONE_NAME:
            return layer
    return model


def with_softmax(model: keras.Model) -> keras.Model:
    """Wrap a logits model so it outputs probabilities (what the bundle ships)."""
    probs = layers.Softmax(name="probs")(model.output)
    return keras.Model(model.input, probs, name=model.name + "_probs")


def logits_of(model: keras.Model) -> keras.Model:
    """The logits model: ``model`` itself, or the one inside a ``with_softmax`` wrapper.

    A run's ``model.keras`` (the file committed under train/results) ends in
    the softmax the bundle ships, while ensembles and distillation average
    logits: probabilities divided by a temperature would make a near-uniform
    target, with no error to show for it.
    """
    last = model.layers[-1]
    if isinstance(last, layers.Softmax):
        return keras.Model(model.input, last.input, name=model.name.removesuffix("_probs"))
    return model


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one input, counted from the layer shapes.

    A nested model counts once per call, so a mirrored model costs two backbones.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer) * len(layer._inbound_nodes)
        elif isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = layer.output.shape
            total += h * w * kh * kw * c
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, cout = layer.output.shape
            cin = layer.input.shape[-1]
            total += h * w * kh * kw * cin * cout // layer.groups
        elif isinstance(layer, layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return int(total)
