"""`run_cli`: every error a user or the machine causes ends as one line and a non-zero exit code."""

from __future__ import annotations

import errno
import os
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


# A stand-in for TensorFlow's import: native code that logs to file descriptor 2 (past sys.stderr),
# one line of TensorFlow's start-up noise and one line that is not noise.
FAKE_TENSORFLOW = '''
import os
os.write(2, b"I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\\n")
os.write(2, b"something real went wrong\\n")
'''


def _import_fake_tensorflow(tmp_path, verbose: bool) -> str:
    """stderr of a child that quiets TensorFlow's logs (as fer-train's main does), then imports it."""
    import subprocess

    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from fer_edge.cli_util import quiet_tensorflow_logs, show_tensorflow_logs\n"
            "quiet_tensorflow_logs()\n"
            f"{'show_tensorflow_logs()' if verbose else ''}\n"
            "import os; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
            "import tensorflow\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_tensorflow_start_up_noise_is_dropped_and_anything_else_kept(tmp_path):
    out = _import_fake_tensorflow(tmp_path, verbose=False)
    assert out.splitlines() == ["3", "something real went wrong"]


def test_verbose_shows_tensorflow_start_up_noise(tmp_path):
    out = _import_fake_tensorflow(tmp_path, verbose=True)
    assert "cudart_stub.cc:31] Could not find cuda drivers" in out and "something real went wrong" in out
    assert out.splitlines()[0] == "None"
