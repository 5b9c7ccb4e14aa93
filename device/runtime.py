"""Pick a TFLite interpreter and wrap a model with its tensor facts resolved once.

Preference: ``ai-edge-litert`` (the maintained successor, wheels for Python
3.9-3.14 on aarch64 and x86-64), then ``tflite-runtime`` (frozen at 2.14,
Python <= 3.11), then ``tf.lite`` (a workstation with TensorFlow). Setting
``FER_EDGE_RUNTIME`` to ``litert``, ``tflite-runtime`` or ``tensorflow``
forces one, which is how tests and benchmarks compare them.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from fer_edge.errors import FerEdgeError

#: (name, module, attribute path) in order of preference.
RUNTIMES: tuple[tuple[str, str, str], ...] = (
    ("litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)
RUNTIME_ENV = "FER_EDGE_RUNTIME"


@dataclass(frozen=True)
class Runtime:
    """The interpreter class in use, with a name and version to report."""

    name: str
    version: str
    interpreter_class: Callable[..., Any]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def _version_of(module_name: str) -> str:
    top = module_name.split(".")[0]
    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow"}[top]
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(dist)
        except PackageNotFoundError:
            return version(dist + "-cpu") if top == "tensorflow" else "unknown"
    except Exception:  # metadata is informative only
        return "unknown"


def find_runtime(preferred: Optional[str] = None) -> Runtime:
    """The first importable runtime (or `preferred` / $FER_EDGE_RUNTIME when set)."""
    wanted = preferred or os.environ.get(RUNTIME_ENV) or None
    names = [r[0] for r in RUNTIMES]
    if wanted and wanted not in names:
        raise FerEdgeError(f"unknown TFLite runtime '{wanted}': choose one of {', '.join(names)}")
    errors = []
    for name, module_name, attr in RUNTIMES:
        if wanted and name != wanted:
            continue
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # ImportError, or a broken install raising anything
            errors.append(f"{name}: {exc.__class__.__name__}")
            continue
        return Runtime(name, _version_of(module_name), obj)
    raise FerEdgeError(
        "no TFLite runtime found (" + "; ".join(errors) + "): pip install ai-edge-litert "
        "(or tflite-runtime on Python <= 3.11)"
    )


@dataclass(frozen=True)
class TensorInfo:
    """What a model tensor needs: index, shape, dtype and (scale, zero point) if quantised."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, d: dict[str, Any]) -> "TensorInfo":
        scale, zero = d.get("quantization", (0.0, 0))
        return cls(int(d["index"]), str(d.get("name", "")), tuple(int(s) for s in d["shape"]),
                   np.dtype(d["dtype"]), float(scale), int(zero))

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype != np.float32


class TFLiteModel:
    """One interpreter, allocated once; `run` copies the input in and returns an output view.

    Use a model from one thread at a time; the device pipeline owns its own.
    """

    def __init__(self, path: Path | str, threads: int = 1, runtime: Optional[Runtime] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FerEdgeError(f"{self.path}: model file not found")
        self.runtime = runtime or find_runtime()
        try:
            self.interpreter = self.runtime.interpreter_class(model_path=str(self.path), num_threads=max(1, threads))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise FerEdgeError(f"{self.path}: not a usable TFLite model ({str(exc).splitlines()[0]})") from None
        self.inputs = [TensorInfo.from_details(d) for d in self.interpreter.get_input_details()]
        self.outputs = [TensorInfo.from_details(d) for d in self.interpreter.get_output_details()]
        self.input = self.inputs[0]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Invoke on one input array (already in the model's dtype) and return every output.

        Outputs are fresh arrays (``get_tensor`` copies), safe to keep after the next call.
        """
        self.interpreter.set_tensor(self.input.index, x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o.index) for o in self.outputs]

    def output_by_name(self, fragment: str) -> int:
        """Position in `outputs` of the tensor whose name contains `fragment` (resolved once at set-up)."""
        for i, o in enumerate(self.outputs):
            if fragment in o.name:
                return i
        raise FerEdgeError(f"{self.path}: no output tensor named like '{fragment}'")
