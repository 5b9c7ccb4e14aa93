"""Fixtures for the fer-bench tests: one tiny real benchmark report, made once per session.

Timings are never asserted (the numbers depend on the machine); the tests check
the report's shape, the compare mode, the synthetic workload and the errors.
"""

from __future__ import annotations

import pytest
from bench_helpers import have_face_photo

from fer_edge.bundle import Bundle, load_bundle


@pytest.fixture(scope="session")
def shipped_bundle() -> Bundle:
    return load_bundle()


@pytest.fixture(scope="session")
def tiny_report(shipped_bundle: Bundle) -> dict:
    """A real fer-bench run on the synthetic input: 2 models x 2 thread counts, 4 timed frames each."""
    if not have_face_photo():
        pytest.skip("needs scikit-image's astronaut photo")
    from fer_edge.benchmarks import bench as b
    from fer_edge.device.runtime import find_runtime

    models = [b.ModelChoice.from_bundle(shipped_bundle), b.ModelChoice("copy", shipped_bundle.model_path)]
    variants = b.make_variants(models, ["blazeface"], [(320, 240)], [2], [1, 2])
    config = b.BenchConfig(frames=4, warmup=1)
    return b.run_benchmark(shipped_bundle, variants, config, find_runtime(), progress=False, argv=["test"])
