"""The accuracy gate: the source Keras model vs the converted TFLite model on one split.

The TFLite side runs through `fer_edge.device` (the same runtime, input
encoder and dequantisation the device uses), so the number reported is the
number the device gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from fer_edge.device.runtime import Runtime, TFLiteModel
from fer_edge.preprocess import InputEncoder, PreprocessSpec, dequantize


def tflite_probabilities(model_path: Path, faces: np.ndarray, spec: PreprocessSpec, threads: int = 1,
                         runtime: Optional[Runtime] = None, progress: bool = True,
                         desc: str = "tflite") -> np.ndarray:
    """Probabilities of a single-face TFLite model for uint8 faces (N, H, W)."""
    model = TFLiteModel(model_path, threads=threads, runtime=runtime)
    info, out_info = model.input, model.outputs[0]
    encoder = InputEncoder(spec, info.dtype, info.scale, info.zero_point)
    x = np.empty(info.shape, info.dtype)
    probs = np.empty((len(faces), out_info.shape[-1]), np.float32)
    for i in tqdm(range(len(faces)), desc=desc, disable=not progress, leave=False, mininterval=1.0):
        encoder.encode(faces[i], out=x)
        probs[i] = dequantize(model.run(x)[0][0], out_info.scale, out_info.zero_point)
    return probs


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    correct = np.bincount(y_true[y_true == y_pred], minlength=k)
    return correct / np.maximum(np.bincount(y_true, minlength=k), 1)


def compare(y_true: np.ndarray, ref_probs: np.ndarray, new_probs: np.ndarray,
            classes: tuple[str, ...]) -> dict[str, Any]:
    """Top-1 of each, the drop in percentage points, per-class deltas and agreement."""
    ref_pred, new_pred = ref_probs.argmax(1), new_probs.argmax(1)
    ref_acc, new_acc = float((ref_pred == y_true).mean()), float((new_pred == y_true).mean())
    k = len(classes)
    ref_pc, new_pc = per_class_accuracy(y_true, ref_pred, k), per_class_accuracy(y_true, new_pred, k)
    return {
        "samples": int(len(y_true)),
        "reference_top1": ref_acc,
        "converted_top1": new_acc,
        "drop_pp": round((ref_acc - new_acc) * 100, 3),
        "agreement": float((ref_pred == new_pred).mean()),
        "max_abs_prob_diff": float(np.abs(ref_probs - new_probs).max()),
        "per_class": {
            name: {"reference": float(ref_pc[i]), "converted": float(new_pc[i]),
                   "delta_pp": round(float(new_pc[i] - ref_pc[i]) * 100, 3)}
            for i, name in enumerate(classes)
        },
    }


def markdown_report(report: dict[str, Any]) -> str:
    """The JSON report as a short Markdown page for humans."""
    lines = [f"# fer-convert accuracy report ({report['mode']})", "",
             f"- model: `{report['source_model']}`",
             f"- split: {report['split']} ({report['check']['samples']} faces), runtime {report['runtime']}",
             f"- gate: drop <= {report['max_drop_pp']} pp -> **{'PASS' if report['passed'] else 'FAIL'}**", "",
             "| | top-1 |", "|---|---|",
             f"| Keras (float) | {report['check']['reference_top1']:.2%} |",
             f"| TFLite {report['mode']} | {report['check']['converted_top1']:.2%} |", "",
             f"Drop: {report['check']['drop_pp']:.2f} pp; agreement: {report['check']['agreement']:.2%}; "
             f"max |Δp|: {report['check']['max_abs_prob_diff']:.3f}", "",
             "| class | Keras | TFLite | Δ pp |", "|---|---|---|---|"]
    for name, row in report["check"]["per_class"].items():
        lines.append(f"| {name} | {row['reference']:.2%} | {row['converted']:.2%} | {row['delta_pp']:+.2f} |")
    if report.get("sizes"):
        lines += ["", "| file | bytes |", "|---|---|"]
        lines += [f"| {name} | {size:,} |" for name, size in report["sizes"].items()]
    return "\n".join(lines) + "\n"
