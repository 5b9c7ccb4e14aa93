"""Fixtures for the device tests: the shipped bundle and a real face (fakes are in device_fakes.py).

Every image and clip is made by the tests themselves. The only real face is
scikit-image's public-domain astronaut photo, read from the installed wheel
(tests that need it are skipped when scikit-image is missing).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest

from fer_edge.bundle import Bundle, load_bundle


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    """The bundle shipped in the package, verified."""
    return load_bundle()


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """scikit-image's astronaut.png; $FER_EDGE_ASTRONAUT may point at a copy (e.g. in an emulated ARM root)."""
    override = os.environ.get("FER_EDGE_ASTRONAUT")
    if override:
        path: Optional[Path] = Path(override)
    else:
        spec = importlib.util.find_spec("skimage")
        path = Path(spec.submodule_search_locations[0]) / "data" / "astronaut.png" if spec else None
    if path is None or not path.is_file():
        pytest.skip("no astronaut photo: install scikit-image or set FER_EDGE_ASTRONAUT")
    return path


@pytest.fixture(scope="session")
def astronaut_bgr(astronaut_path: Path) -> np.ndarray:
    image = cv2.imread(str(astronaut_path), cv2.IMREAD_COLOR)
    image.flags.writeable = False
    return image


@pytest.fixture(scope="session")
def astronaut_gray(astronaut_bgr: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    gray.flags.writeable = False
    return gray

