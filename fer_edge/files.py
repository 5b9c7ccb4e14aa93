"""Writing outputs so that a kill, a power cut or a full disk never leaves a torn file under its real name.

Both sides use it (run folders, conversion reports, benchmark reports): the
data goes to a hidden temporary file beside the target, is flushed to disk,
then renamed over the target in one step. A failed write removes the
temporary file, so a full disk leaves the previous version or nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8) in one rename, after an fsync."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_figure(fig: Any, path: Path | str) -> Path:
    """Lay out, write and close a matplotlib figure, under a temporary name first, like `write_atomic`."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
