#!/usr/bin/env bash
# Build the benchmark-only environment for the `fer` PyPI package (the peer we compare with).
#
#   bash benchmarks/peer_env.sh            # creates .venv-peer/ (git-ignored) beside .venv/
#   FER_PEER_VENV=/tmp/peer bash benchmarks/peer_env.sh
#
# `fer` is never a dependency of fer-edge: it lives only in this venv, together with an
# editable, no-deps install of this repository, so one script in one process
# (benchmarks/compare_fer.py) can import both.
#
# The traps, and what this script does about each:
# - fer needs facenet-pytorch, hence torch. torch==2.13.0 goes in first and stays pinned
#   (a plain `torch` pulls GBs of CUDA packages); the CPU build must be findable by pip
#   (a local wheel in PIP_FIND_LINKS, or PyTorch's CPU index via PIP_EXTRA_INDEX_URL).
#   facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2, so 2.5.3 (unpinned) is used. fer
#   imports it only for FER(mtcnn=True); the default FER() uses OpenCV's Haar cascade.
# - fer calls cv2.CascadeClassifier, which OpenCV 5 removed: opencv-contrib-python<5.
# - fer imports pkg_resources, which setuptools>=81 no longer ships: setuptools<81.
# - fer's Requires-Dist says `tensorflow`; it imports TensorFlow at import time and runs
#   its TFLite model with tf.lite.Interpreter, so TensorFlow is needed. tensorflow-cpu
#   provides the same `tensorflow` module without GPU libraries, so fer is installed with
#   --no-deps and its requirements are listed here explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FER_PEER_VENV:-.venv-peer}
PYTHON=${PYTHON:-python3}
FER_VERSION=${FER_VERSION:-25.10.3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
cat > "$CONSTRAINTS" <<'PINS'
torch==2.13.0
setuptools<81
opencv-contrib-python<5
PINS

"${PIP[@]}" install -q -c "$CONSTRAINTS" "setuptools<81" wheel
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==2.13.0"
"${PIP[@]}" install -q -c "$CONSTRAINTS" \
    "opencv-contrib-python>=4.8,<5" tensorflow-cpu ai-edge-litert click \
    matplotlib pandas requests "tqdm>=4.62.1" "moviepy>=1.0.3,<2.0" "ffmpeg-python>=0.2.0" Pillow \
    "facenet-pytorch==2.5.3" torchvision
"${PIP[@]}" install -q --no-deps "fer==$FER_VERSION"
# fer-edge itself, editable and without its dependencies (they are above; its own
# opencv-python-headless would clash with opencv-contrib-python over the cv2 module).
"${PIP[@]}" install -q --no-deps -e .
# scikit-image only for the demo clip's photo (the comparison's video is made from it).
"${PIP[@]}" install -q -c "$CONSTRAINTS" scikit-image

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import cv2, torch
from fer.fer import FER  # noqa: F401  (imports TensorFlow and pkg_resources, as fer does)
import fer_edge.device.pipeline  # noqa: F401
assert hasattr(cv2, "CascadeClassifier"), f"OpenCV {cv2.__version__} has no CascadeClassifier"
print("peer env ready:", ", ".join(f"{d} {md.version(d)}" for d in (
    "fer", "tensorflow-cpu", "ai-edge-litert", "opencv-contrib-python", "torch", "facenet-pytorch", "setuptools")),
    "| torch CUDA:", torch.version.cuda)
PY
