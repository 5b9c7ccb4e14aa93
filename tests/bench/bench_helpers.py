"""Shared by the fer-bench tests (a name no other test folder uses, unlike conftest)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def have_face_photo() -> bool:
    """Whether scikit-image's astronaut photo, the synthetic workload's face, is installed."""
    spec = importlib.util.find_spec("skimage")
    return bool(spec and spec.submodule_search_locations
                and (Path(spec.submodule_search_locations[0]) / "data" / "astronaut.png").is_file())


needs_face_photo = pytest.mark.skipif(not have_face_photo(), reason="the synthetic workload's face photo comes "
                                      "from scikit-image (pip install scikit-image)")
