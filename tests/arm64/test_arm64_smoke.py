"""The emulated stage really runs aarch64 code, with the wheels under test (run by tests/arm64/run.sh).

Outside the stage ($FER_EDGE_ARM64 unset) the platform checks are skipped and
the rest runs natively, so `pytest -m arm64` stays green on a workstation.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.arm64

EMULATED = os.environ.get("FER_EDGE_ARM64") == "1"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not EMULATED, reason="only meaningful under tests/arm64/run.sh")
def test_interpreter_is_aarch64():
    assert platform.machine() == "aarch64"
    assert sys.version_info[:2] == (3, 11)
    import numpy.lib  # a compiled extension of the guest's architecture must have loaded
    assert np.zeros(3).sum() == 0.0


@pytest.mark.skipif(not EMULATED, reason="only meaningful under tests/arm64/run.sh")
def test_fer_edge_comes_from_the_built_wheel():
    """The source tree must not shadow the installed wheel (its package-dir mapping is what ships)."""
    import fer_edge
    import fer_edge.device

    package = Path(fer_edge.__file__).resolve().parent
    assert package != REPO / "fer_edge", f"fer_edge imported from the source tree: {package}"
    assert (package / "device" / "runtime.py").is_file() and (package / "data" / "bundles" / "ferplus" / "manifest.json").is_file()


def test_litert_runs_the_shipped_detector():
    from fer_edge.bundle import load_bundle
    from fer_edge.device.runtime import TFLiteModel, find_runtime

    runtime = find_runtime()
    assert runtime.name == "litert"
    bundle = load_bundle()
    model = TFLiteModel(bundle.detector_path, threads=2)
    x = np.linspace(-1.0, 1.0, int(np.prod(model.input.shape)), dtype=np.float32).reshape(model.input.shape)
    outputs = model.run(x)
    assert sorted(o.shape for o in outputs) == [(1, 896, 1), (1, 896, 16)]
    assert all(np.isfinite(o).all() for o in outputs)
