"""The shipped bundle's models give the x86 answers on aarch64 (run by tests/arm64/run.sh).

The host writes the reference natively (`arm64_parity.py --write`); this test
runs the same inputs through the same steps under emulation and compares.
Outside the emulated stage (no $FER_EDGE_ARM64_REF) it is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import arm64_parity as parity

pytestmark = pytest.mark.arm64

REF_ENV = "FER_EDGE_ARM64_REF"
REPORT_ENV = "FER_EDGE_ARM64_REPORT"
BUNDLE_ENV = "FER_EDGE_ARM64_BUNDLE"


def test_bundle_models_match_x86():
    ref_path = os.environ.get(REF_ENV)
    if not ref_path:
        if os.environ.get("FER_EDGE_ARM64") == "1":
            pytest.fail(f"${REF_ENV} is not set: run through tests/arm64/run.sh")
        pytest.skip(f"needs ${REF_ENV}: a host reference written by arm64_parity.py (tests/arm64/run.sh does both)")
    meta, arrays, ref = parity.load_reference(Path(ref_path))

    from fer_edge.bundle import load_bundle

    bundle_path = os.environ.get(BUNDLE_ENV) or None  # default: the bundle shipped in the wheel
    assert load_bundle(bundle_path).checksum == meta["bundle_checksum"], "the host compared a different bundle"
    got = parity.run_all(arrays, bundle_path, ref_faces48=ref["faces48"])
    report, failures = parity.compare(ref, got)
    report.update(host={k: meta[k] for k in ("machine", "runtime", "numpy", "cv2", "python")},
                  emulated=parity._facts(), inputs=meta["source"], bundle_checksum=meta["bundle_checksum"],
                  qemu_cpu=os.environ.get("QEMU_CPU", ""))
    if os.environ.get(REPORT_ENV):
        Path(os.environ[REPORT_ENV]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    assert not failures, "; ".join(failures)
