"""Which YuNet `fer-convert` bundles, and the repacking that gave the shipped bundle its detectors."""

from __future__ import annotations

import pytest

from fer_edge.bundle import load_bundle
from fer_edge.convert.build import find_yunet, repack_bundle
from fer_edge.errors import FerEdgeError


def test_find_yunet_defaults_to_the_packaged_one_and_checks_a_given_file(tmp_path) -> None:
    shipped = load_bundle()
    path, model = find_yunet()
    assert path == shipped.detector_file("yunet") and model == shipped.detectors[0]["model"]
    with pytest.raises(FerEdgeError, match="YuNet model file not found"):
        find_yunet(tmp_path / "gone.onnx")
    other = tmp_path / "other.onnx"
    other.write_bytes(path.read_bytes() + b"\0")  # one byte more: not a checked export
    with pytest.raises(FerEdgeError, match="not one of the checked YuNet exports"):
        find_yunet(other)


def test_repack_keeps_the_model_and_lists_the_detectors(tmp_path, legacy_bundle) -> None:
    assert legacy_bundle.default_detector == "blazeface"
    out = repack_bundle(legacy_bundle.root, tmp_path / "repacked")
    new = load_bundle(out)
    assert [d["kind"] for d in new.detectors] == ["yunet", "blazeface"]
    assert new.model_path.read_bytes() == legacy_bundle.model_path.read_bytes()
    assert new.classes == legacy_bundle.classes and new.spec == legacy_bundle.spec
    for entry in new.detectors:
        assert (new.root / entry["license_file"]).is_file() and entry["sha256"] == new.manifest["files"][entry["file"]]
    # Repacking in place works too (the source files are copied out first).
    assert load_bundle(repack_bundle(out, out)).detectors == new.detectors
