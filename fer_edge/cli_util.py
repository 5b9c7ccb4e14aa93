"""Helpers shared by the four command-line tools.

`run_cli` turns `FerEdgeError` and OS errors (a missing path, a full disk, a
read-only filesystem) into a one-line message on stderr and exit code 2, so bad
input never shows a traceback. It also turns SIGTERM into an exception, so a
`kill` or a service stop runs the same cleanups as Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

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
