"""Summaries of latency samples: percentiles first, because a benchmark's tail is where the trouble is.

The median and p90 ignore the odd frame that the OS scheduler or a page fault
slowed down; p99 and max show those frames on purpose. The mean is there for
totals (mean x frames = time spent), not as the headline.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: The keys of every stage summary, in the order reports print them.
SUMMARY_KEYS: tuple[str, ...] = ("p50", "p90", "p99", "mean", "std", "min", "max")


def summarize(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 / p90 / p99 / mean / std / min / max of millisecond samples (all 0.0 when there are none)."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return dict.fromkeys(SUMMARY_KEYS, 0.0)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    values = (p50, p90, p99, x.mean(), x.std(), x.min(), x.max())
    return {k: round(float(v), 4) for k, v in zip(SUMMARY_KEYS, values)}


def fps_from_timestamps(stamps: Iterable[float]) -> float:
    """Frames per second from the perf_counter times at which consecutive frames finished.

    ``n`` stamps span ``n - 1`` frame intervals; the first stamp is the end of
    the last warm-up frame, so no warm-up time leaks into the rate.
    """
    t = list(stamps)
    if len(t) < 2 or t[-1] <= t[0]:
        return 0.0
    return (len(t) - 1) / (t[-1] - t[0])


def ratio(new: float, old: float) -> float:
    """``new / old``, or NaN when `old` is zero (a stage that did not run)."""
    return float(new) / float(old) if old else float("nan")
