"""Makes tests/helpers.py importable as `helpers` from every test folder; fixtures more than one folder uses."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def legacy_bundle(tmp_path_factory: pytest.TempPathFactory) -> "Bundle":
    """A bundle as written before bundles listed several detectors: one BlazeFace under ``detector``."""
    from fer_edge.bundle import load_bundle, write_bundle

    bundle = load_bundle()
    model_info = {k: v for k, v in bundle.manifest["model"].items() if k != "file"}
    folder = write_bundle(tmp_path_factory.mktemp("legacy") / "bundle", bundle.model_path, bundle.classes,
                          bundle.spec, model_info, detector=bundle.detector_file("blazeface"),
                          detector_info={"kind": "blazeface-short-range", "license": "Apache-2.0"},
                          extra_files={"LICENSE-detector.txt": (bundle.root / "LICENSE-detector.txt").read_bytes()})
    return load_bundle(folder)
