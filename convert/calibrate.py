"""Confidence calibration: one temperature, fitted on PublicTest, folded into the model.

A classifier trained with cross-entropy (and, here, distillation and label
smoothing) is rarely calibrated: its top probability is not the chance that
it is right. Temperature scaling divides the logits by one number ``T`` before
the softmax; it changes no top-1 answer and, fitted by negative
log-likelihood on held-out faces, makes the probabilities honest (Guo et al.,
"On Calibration of Modern Neural Networks", 2017).

``T`` is fitted on the validation split (FER2013's PublicTest) only; the test
split (PrivateTest) is scored before and after but never used to fit.
`fold_temperature` writes ``1/T`` into the kernel and bias of the model's last
Dense layer, so the exported model keeps its ops (full int8 stays full int8)
and the device shows calibrated probabilities without knowing ``T``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from fer_edge.errors import FerEdgeError

ECE_BINS = 10
#: Probabilities are clipped here for the NLL: an int8 softmax output is a multiple of 1/256, so a
#: true class can read exactly 0, whose log is -inf.
NLL_FLOOR = 1e-4
T_RANGE = (0.05, 20.0)


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: the logits up to a per-row constant, which a softmax ignores."""
    return np.log(np.clip(probs.astype(np.float64), 1e-30, None))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    p = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, NLL_FLOOR, None)).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Per confidence bin (equal width on [0, 1]): faces, mean confidence, accuracy; and the ECE.

    ECE is the face-weighted mean gap between confidence and accuracy over
    the bins, the usual 10-bin definition.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_conf, acc = conf_sum / safe, acc_sum / safe
    ece = float(np.sum(counts * np.abs(mean_conf - acc)) / max(len(labels), 1))
    return {"ece": ece, "edges": edges.tolist(), "count": counts.tolist(),
            "confidence": mean_conf.tolist(), "accuracy": acc.tolist()}


def calibration_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1, mean top probability, ECE (10 bins), NLL and the reliability bins of one set of outputs."""
    rel = reliability(probs, labels)
    return {"samples": int(len(labels)), "top1": float((probs.argmax(1) == labels).mean()),
            "mean_confidence": float(probs.max(1).mean()), "ece": rel["ece"], "nll": nll(probs, labels),
            "bins": {k: rel[k] for k in ("count", "confidence", "accuracy")}}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` (bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        raise FerEdgeError("cannot fit a temperature on an empty split")
    logits = logits.astype(np.float64)
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))

    found = minimize_scalar(loss, bounds=tuple(np.log(T_RANGE)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


def _last_dense(model):
    """The last Dense layer, looking inside nested models (fer-train wraps the CNN in a mirror model)."""
    import keras

    found = None
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = _last_dense(layer)
            found = inner or found
        elif isinstance(layer, keras.layers.Dense):
            found = layer
    return found


def fold_temperature(model, temperature: float, check_faces: Optional[np.ndarray] = None):
    """A copy of `model` whose outputs are ``softmax(logits / T)``: the last Dense layer scaled by 1/T.

    Valid when everything between that layer and the softmax is linear in
    the logits (averaging mirrored views is); `check_faces` (model inputs)
    proves it on real data, refusing a model where it does not hold.
    """
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    dense = _last_dense(clone)
    if dense is None:
        raise FerEdgeError("calibration needs a model that ends in a Dense layer (none found)")
    weights = dense.get_weights()
    dense.set_weights([w / np.float32(temperature) for w in weights])
    if check_faces is not None and len(check_faces):
        before = model.predict_on_batch(check_faces)
        after = clone.predict_on_batch(check_faces)
        expected = softmax(logits_from_probs(np.asarray(before)), temperature)
        if not np.allclose(after, expected, atol=2e-3):
            raise FerEdgeError("the temperature could not be folded into this model's last Dense layer "
                               "(the layers after it are not linear in the logits); convert with --no-calibrate")
    return clone


def reliability_plot(curves: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    """Reliability diagram (accuracy against confidence per bin, with the diagonal) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for name, metrics in curves.items():
        bins = metrics["bins"]
        keep = [i for i, c in enumerate(bins["count"]) if c > 0]
        ax.plot([bins["confidence"][i] for i in keep], [bins["accuracy"][i] for i in keep], marker="o",
                label=f"{name}: ECE {metrics['ece']:.3f}, NLL {metrics['nll']:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability, 10 bins)", ylabel="accuracy",
           title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def markdown_section(calibration: dict[str, Any]) -> str:
    """The calibration part of the conversion report."""
    lines = ["", "## Calibration (temperature scaling)", "",
             f"Temperature T = {calibration['temperature']:.4f}, fitted by NLL on {calibration['fit_split']} "
             f"({calibration['fit_samples']} faces) and folded into the last Dense layer; "
             f"{calibration['report_split']} is reported, never used to fit. ECE: 10 equal-width bins.", "",
             "| split | model | top-1 | mean confidence | ECE | NLL |", "|---|---|---|---|---|---|"]
    for split, rows in calibration["splits"].items():
        for name, m in rows.items():
            lines.append(f"| {split} | {name} | {m['top1']:.2%} | {m['mean_confidence']:.3f} | {m['ece']:.3f} "
                         f"| {m['nll']:.3f} |")
    if calibration.get("plot"):
        lines += ["", f"![reliability diagram]({calibration['plot']})"]
    return "\n".join(lines) + "\n"
