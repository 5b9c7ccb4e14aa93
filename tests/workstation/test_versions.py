"""Every command-line tool answers --version with the package's version (one source: fer_edge.__version__)."""

from __future__ import annotations

import importlib

import pytest
from click.testing import CliRunner

from fer_edge import __version__


@pytest.mark.parametrize("tool, module", [
    ("fer-train", "fer_edge.train.cli"),
    ("fer-convert", "fer_edge.convert.cli"),
    ("fer-device", "fer_edge.device.cli"),
    ("fer-bench", "fer_edge.benchmarks.cli"),
])
def test_version_is_the_package_version(tool, module):
    result = CliRunner().invoke(importlib.import_module(module).cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"{tool}, version {__version__}"


def test_the_installed_metadata_carries_the_same_version():
    from importlib.metadata import version

    assert version("fer-edge") == __version__
