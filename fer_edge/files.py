"""Writing outputs so that a kill, a power cut or a full disk never leaves a torn file under its real name.

Both sides use it (run folders, conversion reports, benchmark reports): the
data goes to a hidden temporary file beside the target, is flushed to disk,
then renamed over the target in one step. A failed write removes the
temporary file, so a full disk leaves the previous version or nothing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; on success rename it over ``path``, on failure remove it.

    The temporary name keeps the suffix (``.model.tmp.keras``) because Keras
    and matplotlib choose the format from it. Any failure, Ctrl-C and SIGTERM
    included, leaves the previous version of ``path`` or nothing.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8) in one rename, after an fsync."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def save_figure(fig: Any, path: Path | str) -> Path:
    """Lay out, write and close a matplotlib figure, under a temporary name first, like `write_atomic`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)
