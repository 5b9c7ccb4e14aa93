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


def test_sigterm_runs_the_cleanups_and_exits_143(tmp_path, capsys, monkeypatch):
    """A `kill` takes Ctrl-C's path: ``finally`` blocks run, then one line and the shell's 128+15."""
    import os
    import signal

    cleaned = []

    @click.command()
    def killed() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            cleaned.append(True)

    monkeypatch.setattr(sys, "argv", ["killed"])
    runner_handler = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a fresh process, not the test runner's
    try:
        with pytest.raises(SystemExit) as done:
            run_cli(killed)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the default is back after the command
    finally:
        signal.signal(signal.SIGTERM, runner_handler)
    assert done.value.code == 143 and cleaned == [True]
    assert capsys.readouterr().err.strip().splitlines() == ["terminated"]
