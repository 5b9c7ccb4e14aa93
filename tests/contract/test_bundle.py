"""Bundle round trip and every tampering case refused with a one-line error naming the file."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest

from fer_edge.bundle import (
    BUNDLE_VERSION, MANIFEST, default_bundle_path, load_bundle, write_bundle,
)
from fer_edge.errors import FerEdgeError
from fer_edge.labels import FER2013_CLASSES
from fer_edge.preprocess import PreprocessSpec

SHIPPED = default_bundle_path()


@pytest.fixture()
def bundle_dir(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x00TFL3 fake model bytes")
    detector = tmp_path / "d.tflite"
    detector.write_bytes(b"detector")
    spec = PreprocessSpec(crop_margin=0.3)
    return write_bundle(tmp_path / "bundle", model, ("a", "b", "c"), spec, {"mode": "int8"}, detector=detector,
                        detector_info={"license": "Apache-2.0"}, extra_files={"LICENSE-detector.txt": "text"})


def test_round_trip(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.classes == ("a", "b", "c")
    assert b.spec.crop_margin == 0.3
    assert b.model_path.read_bytes().startswith(b"\x00TFL3")
    assert b.detector_path.read_bytes() == b"detector"
    files = b.manifest["files"]
    assert set(files) == {"emotion.tflite", "labels.txt", "preprocess.json", "detector.tflite", "LICENSE-detector.txt"}
    assert len(b.checksum) == 64


def test_archive_round_trip(tmp_path, bundle_dir):
    model = bundle_dir / "emotion.tflite"
    tar = write_bundle(tmp_path / "b2", model, ("x", "y"), PreprocessSpec(), {"mode": "float32"}, archive=True)
    assert tar.name == "b2.tar.gz"
    assert load_bundle(tar).classes == ("x", "y")


def test_missing_file_refused(bundle_dir):
    (bundle_dir / "detector.tflite").unlink()
    with pytest.raises(FerEdgeError, match=r"detector.tflite: missing from the bundle"):
        load_bundle(bundle_dir)


def test_checksum_mismatch_refused(bundle_dir):
    with open(bundle_dir / "emotion.tflite", "ab") as fh:
        fh.write(b"!")
    with pytest.raises(FerEdgeError, match=r"emotion.tflite: checksum mismatch"):
        load_bundle(bundle_dir)


def test_unknown_version_refused(bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["version"] = BUNDLE_VERSION + 1
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FerEdgeError, match=r"manifest.json: unknown bundle version 2"):
        load_bundle(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(FerEdgeError, match="bundle not found"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(FerEdgeError, match="manifest.json: missing"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(FerEdgeError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_corrupt_archive_is_refused_in_one_line(tmp_path):
    corrupt = tmp_path / "bundle.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip" * 10)
    with pytest.raises(FerEdgeError, match="not a readable bundle archive") as info:
        load_bundle(corrupt)
    assert "\n" not in str(info.value)


def test_unsafe_archive_refused(tmp_path, bundle_dir):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(bundle_dir / MANIFEST, arcname="../manifest.json")
    with pytest.raises(FerEdgeError, match="unsafe archive member"):
        load_bundle(evil)


def test_shipped_bundle_verifies_and_is_small(tmp_path):
    b = load_bundle()
    assert b.classes == FER2013_CLASSES
    assert b.model_path.stat().st_size <= 1_000_000
    assert b.manifest["model"]["input"]["dtype"] == "int8"
    # Every detector is listed with its kind, file, licence and checksum; the default (YuNet) first.
    assert [d["kind"] for d in b.detectors] == ["yunet", "blazeface"]
    assert b.default_detector == "yunet"
    for entry in b.detectors:
        assert entry["license"] and (b.root / entry["license_file"]).is_file()
        assert entry["sha256"] == b.manifest["files"][entry["file"]]
    assert b.detectors[0]["sha256"] == "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31"
    assert b.detector_path == b.root / "detector.tflite"
    copy = shutil.copytree(SHIPPED, tmp_path / "copy")
    (copy / "labels.txt").write_text("a\nb\n")
    with pytest.raises(FerEdgeError, match="labels.txt: checksum mismatch"):
        load_bundle(copy)


def test_detector_list_round_trip_and_legacy_entry(tmp_path, bundle_dir):
    # A pre-list bundle (one "detector" entry) reads as a one-item list: BlazeFace, the default.
    legacy = load_bundle(bundle_dir)
    assert legacy.default_detector == "blazeface"
    assert legacy.detector_file("blazeface") == legacy.detector_path == bundle_dir / "detector.tflite"
    assert legacy.detector_file("yunet") is None
    # The list form: files copied under their entry names, checksums recorded in the entry and in files.
    from fer_edge.bundle import DetectorEntry

    onnx, tflite = tmp_path / "y.onnx", tmp_path / "b.tflite"
    onnx.write_bytes(b"yunet bytes")
    tflite.write_bytes(b"blazeface bytes")
    folder = write_bundle(tmp_path / "multi", bundle_dir / "emotion.tflite", ("a", "b"), PreprocessSpec(),
                          {"mode": "int8"},
                          detectors=[(onnx, DetectorEntry("yunet", "detector-yunet.onnx", "yunet-s", "MIT",
                                                          "LICENSE-y.txt")),
                                     (tflite, DetectorEntry("blazeface", "detector.tflite"))],
                          extra_files={"LICENSE-y.txt": "licence"})
    b = load_bundle(folder)
    assert [d["kind"] for d in b.detectors] == ["yunet", "blazeface"] and b.default_detector == "yunet"
    assert b.detector_file("yunet").read_bytes() == b"yunet bytes"
    assert b.detectors[0]["sha256"] == b.manifest["files"]["detector-yunet.onnx"]
    assert b.detectors[0]["license"] == "MIT" and "license" not in b.detectors[1]
    # A listed detector file that is missing from the file list is refused.
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["detector-yunet.onnx"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FerEdgeError, match="detector file detector-yunet.onnx is not listed"):
        load_bundle(folder)


# --------------------------------------------------------------------------- crops and shipped names (issue 42)


@pytest.mark.parametrize("aligned", [False, True])
def test_round_trip_with_and_without_the_aligned_crop(tmp_path, aligned):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x00TFL3 fake model bytes")
    spec = PreprocessSpec(crop_margin=0.3)
    if aligned:
        spec = spec.aligned([(14.6, 18.3), (32.8, 18.3), (23.2, 28.4), (23.8, 36.7)], level_eyes=False)
    folder = write_bundle(tmp_path / "b", model, ("a", "b"), spec, {"mode": "int8"}, archive=True)
    loaded = load_bundle(folder)
    assert loaded.spec == spec
    written = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    assert ("crop" in written) == aligned  # a box-crop bundle's preprocess.json is as it always was
    if aligned:
        assert written["crop"] == "aligned" and written["level_eyes"] is False and len(written["landmarks"]) == 4


def test_shipped_bundles_by_name_and_a_path_of_that_name_wins(tmp_path, monkeypatch):
    from fer_edge.bundle import DEFAULT_BUNDLE, SHIPPED_BUNDLES, resolve_bundle, shipped_bundle_path

    assert set(SHIPPED_BUNDLES) == {"fer2013", "ferplus"} and DEFAULT_BUNDLE in SHIPPED_BUNDLES
    for name in SHIPPED_BUNDLES:
        assert load_bundle(name).root == shipped_bundle_path(name)
    assert load_bundle().root == shipped_bundle_path(DEFAULT_BUNDLE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ferplus").mkdir()
    assert resolve_bundle("ferplus") == tmp_path.joinpath("ferplus").relative_to(tmp_path)
    with pytest.raises(FerEdgeError, match="manifest.json: missing"):
        load_bundle("ferplus")
