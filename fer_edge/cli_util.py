"""Helpers shared by the four command-line tools.

`run_cli` turns `FerEdgeError` and OS errors (a missing path, a full disk, a
read-only filesystem) into a one-line message on stderr and exit code 2, so bad
input never shows a traceback. It also turns SIGTERM into an exception, so a
`kill` or a service stop runs the same cleanups as Ctrl-C.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import click

from fer_edge.errors import FerEdgeError


def quiet_native_logs() -> None:
    """Keep OpenCV's and FFmpeg's own warnings off stderr, where fer-edge says what went wrong in one line.

    An unreadable video or a refused stream would otherwise print FFmpeg's
    "[mov,mp4,...] moov atom not found" or OpenCV's "[ WARN:0@0.1] ..." above
    that line. A user who wants them sets OPENCV_FFMPEG_LOGLEVEL or
    OPENCV_LOG_LEVEL, which are left as they are. FFmpeg reads its variable
    when OpenCV first opens a video, so this must run before any source opens.
    """
    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        import cv2

        log = getattr(getattr(cv2, "utils", None), "logging", None)  # absent from some distro builds
        if log is not None:
            log.setLogLevel(log.LOG_LEVEL_ERROR)


#: TensorFlow's start-up lines on a CPU machine: absl's pre-init notice, the CUDA stub and cuInit
#: failures, oneDNN's and the CPU-feature notes. Nothing a fer-train or fer-convert user can act on.
TENSORFLOW_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub\.cc|cuda_platform\.cc|cuda_driver\.cc|cuInit|oneDNN custom operations"
    r"|cpu_feature_guard\.cc|To enable the following instructions|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered|TF-TRT Warning")


def quiet_tensorflow_logs() -> None:
    """Keep TensorFlow's start-up noise off the terminal of fer-train and fer-convert (--verbose shows it).

    Every run otherwise opens with half a dozen native log lines (oneDNN, the
    CUDA stub, cuInit) above what the command itself says. TensorFlow reads
    TF_CPP_MIN_LOG_LEVEL when it loads, so this must run before it is
    imported; a value the user set is left as it is. Some lines are written
    before TensorFlow's logger reads that variable, so the import itself runs
    with the process's stderr captured, and every captured line that is not
    one of ``TENSORFLOW_NOISE`` is written back (a real error still shows).
    """
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.meta_path.insert(0, _QuietTensorFlowImport())


def show_tensorflow_logs() -> None:
    """Undo ``quiet_tensorflow_logs`` (for --verbose) if TensorFlow has not been imported yet."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3" and "tensorflow" not in sys.modules:
        del os.environ["TF_CPP_MIN_LOG_LEVEL"]


def _show_logs(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        show_tensorflow_logs()


#: ``--verbose`` for the TensorFlow commands; eager, so it acts before another option's check imports TensorFlow.
verbose_option = click.option("--verbose", is_flag=True, is_eager=True, expose_value=False, callback=_show_logs,
                              help="Show TensorFlow's own start-up log lines (oneDNN, CUDA, CPU features).")


class _QuietTensorFlowImport:
    """A meta-path finder that wraps the first ``import tensorflow`` in ``_native_stderr_filtered``."""

    def find_spec(self, fullname: str, path: object, target: object = None):
        if fullname != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)  # once: TensorFlow's own submodules import as usual
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            loader = spec.loader
            run = loader.exec_module

            def exec_module(module: object) -> None:
                try:
                    with _native_stderr_filtered(TENSORFLOW_NOISE):
                        run(module)
                finally:
                    del loader.exec_module  # back to the class's own method

            loader.exec_module = exec_module
        return spec


@contextmanager
def _native_stderr_filtered(noise: re.Pattern) -> Iterator[None]:
    """Capture file descriptor 2 (C++ logs write there, past sys.stderr); write back what ``noise`` misses."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt.

    By default SIGTERM ends Python at once: no ``finally`` runs, so a
    temporary file stays beside its target and a run refused before its
    first epoch keeps its folder. As a KeyboardInterrupt it takes every
    cleanup path Ctrl-C already takes.
    """


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def run_cli(command: Callable[..., object]) -> None:
    """Call a click command; print user errors as one line and exit non-zero."""
    # Only where nobody chose otherwise (SIG_DFL): an ignored SIGTERM stays ignored. The device loop
    # installs its own handler for the frames and restores this one after.
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _run(command)
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _run(command: Callable[..., object]) -> None:
    try:
        command(standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and so SIGTERM) into Abort
        if isinstance(exc.__cause__, Terminated):
            click.echo("terminated", err=True)
            sys.exit(128 + signal.SIGTERM)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FerEdgeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a missing or unwritable path, a full disk, a read-only filesystem
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


class DefaultGroup(click.Group):
    """A group that runs `default_command` when no subcommand is named.

    So ``fer-train`` trains with defaults while ``fer-train evaluate ...`` still works.
    """

    default_command = "fit"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def unique_run_dir(parent: "Path", name: str) -> "Path":  # noqa: F821 - Path imported lazily
    """``parent/name``, or ``name2``, ``name3``... if taken, so runs never overwrite each other."""
    from pathlib import Path

    parent = Path(parent)
    candidate = parent / name
    n = 2
    while candidate.exists():
        candidate = parent / f"{name}{n}"
        n += 1
    candidate.mkdir(parents=True)
    return candidate
