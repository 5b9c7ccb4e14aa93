"""`run_cli`: every error a user or the machine causes ends as one line and a non-zero exit code."""

from __future__ import annotations

import errno
import sys

import click
import pytest

from fer_edge.cli_util import run_cli


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/model.keras"),
     "error: /data/run/model.keras: No space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/runs"), "error: /mnt/ro/runs: Read-only file system"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.csv"), "error: x.csv: No such file or directory"),
    (OSError(errno.EIO, "Input/output error"), "error: Input/output error"),
])
def test_os_errors_are_one_line_exit_2(exc, line, capsys, monkeypatch):
    @click.command()
    def failing() -> None:
        raise exc

    monkeypatch.setattr(sys, "argv", ["failing"])
    with pytest.raises(SystemExit) as done:
        run_cli(failing)
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]
