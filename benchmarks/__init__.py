"""``fer-bench``: what this board can do, per stage, before you deploy; and the side-by-side with `fer`.

Modules:

- `stats`: outlier-robust summaries (p50 / p90 / p99 / mean) of per-frame timings
- `workload`: sources that need no camera: the synthetic workload (a real face from
  the preprocessing test photo, composed 1..N times into frames) and in-memory frame lists
- `bench`: build one pipeline per variant (model x detector x resolution x faces x
  threads), run it with warm-up, and collect one report row per variant
- `report`: the JSON report's schema, its Markdown, PNG plots, and ``--compare``
- `cli`: the ``fer-bench`` command
- `compare_fer`: fer-edge vs the `fer` PyPI package, run in the benchmark-only venv
  that `peer_env.sh` builds (never a dependency of the kit)

Everything reuses `fer_edge.device` (the pipeline, its stages and their timings); nothing
here re-implements a stage.
"""
