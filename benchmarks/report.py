"""The report: its JSON schema, the Markdown people read, PNG plots, and ``--compare``.

JSON (``schema: "fer-bench/1"``), top level::

    schema, created, command
    machine      cpu_model, machine, cores, usable_cores, os, python, runtime {name, version},
                 opencv, numpy, fer_edge
    load_average {start, end}: 1/5/15-minute load, to spot a busy machine
    bundle       path, sha256 (of the manifest, which pins every file), model_mode, accuracy
    config       source, frames, warmup, sinks, detector options
    models       {name: {path, bytes, sha256, input_dtype, ...}}
    variants     one row per variant:
        key, model, detector, resolution, faces_placed, threads, accuracy, status ("ok" or "error: ...")
        and when ok: frames, elapsed_s, fps, faces_mean, frames_with_faces,
        stages {capture, detect, preprocess, classify, track, draw, log, video, display, total:
                {p50, p90, p99, mean, std, min, max}} (milliseconds per frame),
        classify_per_face {same keys}, samples_ms {stage: [ms per timed frame]}

Plots need matplotlib (``pip install matplotlib``); without it the JSON and
Markdown are still written and a note says why there are no PNGs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from fer_edge.device.pipeline import STAGES
from fer_edge.errors import FerEdgeError
from fer_edge.files import save_figure, write_atomic
from fer_edge.benchmarks.bench import SCHEMA
from fer_edge.benchmarks.stats import SUMMARY_KEYS, ratio

#: Stages shown in the summary table (sinks other than the log are rarely measured here).
TABLE_STAGES: tuple[str, ...] = ("capture", "detect", "preprocess", "classify", "track", "draw", "log")
MACHINE_KEYS = ("cpu_model", "machine", "cores", "os", "python", "runtime")
VARIANT_KEYS = ("key", "model", "detector", "threads", "status")
OK_KEYS = ("frames", "fps", "stages", "classify_per_face")


# --------------------------------------------------------------------------- schema


def validate_report(data: Any, where: str = "report") -> dict[str, Any]:
    """Check a loaded report against the schema; a `FerEdgeError` names the first missing or wrong key."""
    def need(obj: Any, keys: Iterable[str], path: str) -> None:
        if not isinstance(obj, dict):
            raise FerEdgeError(f"{where}: {path} is not an object")
        for key in keys:
            if key not in obj:
                raise FerEdgeError(f"{where}: {path}.{key} missing" if path else f"{where}: '{key}' missing")

    need(data, ("schema", "created", "machine", "bundle", "config", "models", "variants"), "")
    if data["schema"] != SCHEMA:
        raise FerEdgeError(f"{where}: schema {data['schema']!r} is not {SCHEMA!r}")
    need(data["machine"], MACHINE_KEYS, "machine")
    need(data["machine"]["runtime"], ("name", "version"), "machine.runtime")
    need(data["bundle"], ("sha256",), "bundle")
    if not isinstance(data["variants"], list):
        raise FerEdgeError(f"{where}: variants is not a list")
    for i, row in enumerate(data["variants"]):
        need(row, VARIANT_KEYS, f"variants[{i}]")
        if row["status"] != "ok":
            continue
        need(row, OK_KEYS, f"variants[{i}]")
        need(row["stages"], (*STAGES, "total"), f"variants[{i}].stages")
        for stage, summary in row["stages"].items():
            need(summary, SUMMARY_KEYS, f"variants[{i}].stages.{stage}")
    return data


def load_report(path: Path | str) -> dict[str, Any]:
    """Read and validate a report JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FerEdgeError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FerEdgeError(f"{path}: not a JSON report ({exc})") from None
    return validate_report(data, str(path))


def dumps(report: dict[str, Any]) -> str:
    """Indented JSON with each flat list (samples, shapes, argv) on one line, so the file stays readable."""
    compact: dict[str, str] = {}

    def shrink(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: shrink(v) for k, v in obj.items()}
        if isinstance(obj, list):
            if all(not isinstance(v, (dict, list)) for v in obj):
                token = f"@@compact{len(compact)}@@"
                compact[token] = json.dumps(obj)
                return token
            return [shrink(v) for v in obj]
        return obj

    text = json.dumps(shrink(report), indent=2)
    for token, value in compact.items():
        text = text.replace(json.dumps(token), value)
    return text + "\n"


# --------------------------------------------------------------------------- Markdown


def _ms(value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _x(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}x"


def _res(row: dict[str, Any]) -> str:
    return f"{row['resolution'][0]}x{row['resolution'][1]}" if row.get("resolution") else "–"


def _ok(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["variants"] if r["status"] == "ok"]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def machine_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = (report.get("load_average") or {}).get("start")
    return (f"{m['cpu_model']} ({m['machine']}), {m['cores']} cores; {m['os']}; Python {m['python']}; "
            f"{m['runtime']['name']} {m['runtime']['version']}; OpenCV {m.get('opencv', '?')}"
            + (f"; load average {load[0]:.2f} at start" if load else ""))


def busy_note(report: dict[str, Any]) -> Optional[str]:
    """A warning when the 1-minute load average at the start was over half the cores: other work skews timings."""
    load = (report.get("load_average") or {}).get("start")
    cores = report["machine"].get("usable_cores") or report["machine"]["cores"] or 1
    if load and load[0] > 0.5 * cores:
        return (f"the machine was busy (load average {load[0]:.1f} on {cores} cores at the start): "
                "timings are noisy; rerun on an idle machine for numbers to quote")
    return None


def summary_table(report: dict[str, Any]) -> list[str]:
    """One row per variant: status, model size, accuracy, FPS and per-stage medians."""
    models = report.get("models", {})
    rows = []
    for r in report["variants"]:
        size = models.get(r["model"], {}).get("bytes")
        acc = r.get("accuracy") or {}
        head = [f"`{r['key']}`", "ok" if r["status"] == "ok" else r["status"].replace("|", "/"),
                f"{size / 1024:.0f}" if size else "–", f"{acc['top1']:.2%}" if acc.get("top1") is not None else "–"]
        if r["status"] != "ok":
            rows.append(head + ["–"] * (6 + len(TABLE_STAGES)))
            continue
        st = r["stages"]
        rows.append(head + [f"{r['faces_mean']:.2f}", f"**{r['fps']:.1f}**", _ms(st["total"]["p50"]),
                            _ms(st["total"]["p90"]), _ms(st["total"]["p99"]),
                            _ms(r["classify_per_face"]["p50"])] + [_ms(st[s]["p50"]) for s in TABLE_STAGES])
    return _table(["variant", "status", "model KB", "top-1", "faces/frame", "FPS", "total p50", "p90", "p99",
                   "classify/face p50"] + [f"{s} p50" for s in TABLE_STAGES], rows)


def _group(rows: Sequence[dict[str, Any]], axis: str) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by every sweep axis except `axis`."""
    axes = ("model", "detector", "resolution", "faces_placed", "threads")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = tuple(json.dumps(r.get(a)) for a in axes if a != axis)
        groups.setdefault(key, []).append(r)
    return groups


def _label(row: dict[str, Any], axis: str) -> str:
    parts = {"model": row["model"], "detector": row["detector"], "resolution": _res(row),
             "faces_placed": f"{row['faces_placed']} face(s)" if row.get("faces_placed") else "",
             "threads": f"{row['threads']} thr"}
    return ", ".join(v for k, v in parts.items() if k != axis and v)


def threads_table(report: dict[str, Any]) -> list[str]:
    """FPS and total p50 per thread count, one row per other combination; empty if threads were not swept."""
    rows = _ok(report)
    counts = sorted({r["threads"] for r in rows})
    if len(counts) < 2:
        return []
    out = []
    for group in _group(rows, "threads").values():
        by = {r["threads"]: r for r in group}
        base = by.get(counts[0])
        cells = []
        for t in counts:
            r = by.get(t)
            cells.append(f"{r['fps']:.1f} FPS ({_ms(r['stages']['total']['p50'])} ms p50)" if r else "–")
        top = by.get(counts[-1])
        out.append([_label(group[0], "threads"), *cells,
                    _x(ratio(top["fps"], base["fps"])) if top and base else "–"])
    return _table(["variant", *[f"{t} thread{'s' if t > 1 else ''}" for t in counts],
                   f"FPS {counts[-1]} vs {counts[0]} thread{'s' if counts[0] > 1 else ''}"], out)


def models_table(report: dict[str, Any]) -> list[str]:
    """Model variants side by side (e.g. float32 vs int8); empty if only one model was run."""
    rows = _ok(report)
    if len({r["model"] for r in rows}) < 2:
        return []
    models = report.get("models", {})
    out = []
    for group in _group(rows, "model").values():
        base = group[0]
        for r in group:
            facts = models.get(r["model"], {})
            acc = r.get("accuracy") or {}
            out.append([_label(r, "model"), r["model"], facts.get("input_dtype", "?"),
                        f"{facts['bytes'] / 1024:.0f}" if facts.get("bytes") else "–",
                        f"{acc['top1']:.2%}" if acc.get("top1") is not None else "–",
                        _ms(r["classify_per_face"]["p50"]), _ms(r["classify_per_face"]["p90"]),
                        _ms(r["stages"]["total"]["p50"]), f"{r['fps']:.1f}",
                        _x(ratio(r["classify_per_face"]["p50"], base["classify_per_face"]["p50"]))])
    first = rows[0]["model"]
    return _table(["setting", "model", "input", "KB", "top-1", "classify/face p50 ms", "p90", "total p50 ms", "FPS",
                   f"classify time vs {first}"], out)


def stages_table(report: dict[str, Any]) -> list[str]:
    """p50 / p90 / p99 / mean of every stage that ran, for every variant."""
    out = []
    for r in _ok(report):
        for stage in (*STAGES, "total"):
            s = r["stages"][stage]
            if s["max"] <= 0:
                continue
            out.append([f"`{r['key']}`", stage, _ms(s["p50"]), _ms(s["p90"]), _ms(s["p99"]), _ms(s["mean"])])
    return _table(["variant", "stage", "p50 ms", "p90 ms", "p99 ms", "mean ms"], out)


def to_markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The whole report for people: where it ran, the summary, the sweeps, every stage, the plots."""
    cfg, bundle = report["config"], report["bundle"]
    lines = ["# fer-bench report", "",
             f"- machine: {machine_line(report)}",
             f"- bundle: `{bundle['path']}` (sha256 `{bundle['sha256'][:16]}…`, model {bundle.get('model_mode')})",
             f"- input: {cfg.get('source_name') or cfg['source']}; {cfg['frames']} timed frames per variant "
             f"after {cfg['warmup']} warm-up frames; sinks: {', '.join(cfg['sinks']) or 'none'}",
             f"- created: {report['created']}"
             + (f"; command: `{' '.join(report['command'])}`" if report.get("command") else ""),
             *([f"- **note**: {busy_note(report)}"] if busy_note(report) else []),
             "", "Times are milliseconds per frame (classify/face: per face); FPS is end-to-end over the timed frames.",
             "", "## Summary", "", *summary_table(report)]
    threads = threads_table(report)
    if threads:
        lines += ["", "## Frames per second vs threads", "", *threads]
    models = models_table(report)
    if models:
        lines += ["", "## Models", "", *models]
    lines += ["", "## Every stage", "", *stages_table(report)]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def console_summary(report: dict[str, Any]) -> str:
    """What the command prints: where it ran and the summary tables (the file has every stage too)."""
    lines = [machine_line(report), "", *summary_table(report)]
    for extra in (threads_table(report), models_table(report)):
        if extra:
            lines += ["", *extra]
    return "\n".join(lines)


# --------------------------------------------------------------------------- --compare


def compare_reports(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Ratios B/A for FPS and each stage's p50, variant by variant (matched by key, else by position)."""
    rows_a, rows_b = {r["key"]: r for r in _ok(a)}, {r["key"]: r for r in _ok(b)}
    pairs = [(k, rows_a[k], rows_b[k]) for k in rows_a if k in rows_b]
    note = ""
    if not pairs:
        la, lb = list(rows_a.values()), list(rows_b.values())
        if len(la) != len(lb) or not la:
            raise FerEdgeError("the two reports have no variant in common (compare runs of the same sweep)")
        pairs = [(f"{x['key']} vs {y['key']}", x, y) for x, y in zip(la, lb)]
        note = "No variant keys in common: rows are paired by position."
    stages = [s for s in TABLE_STAGES
              if any(x["stages"][s]["p50"] > 0 or y["stages"][s]["p50"] > 0 for _, x, y in pairs)]
    rows = []
    for key, x, y in pairs:
        rows.append([f"`{key}`", f"{x['fps']:.1f}", f"{y['fps']:.1f}", f"**{_x(ratio(y['fps'], x['fps']))}**",
                     _x(ratio(y["stages"]["total"]["p50"], x["stages"]["total"]["p50"]))]
                    + [_x(ratio(y["stages"][s]["p50"], x["stages"][s]["p50"])) for s in stages])
    lines = [f"A: {name_a}", f"   {machine_line(a)}", f"   bundle sha256 {a['bundle']['sha256'][:16]}…",
             f"B: {name_b}", f"   {machine_line(b)}", f"   bundle sha256 {b['bundle']['sha256'][:16]}…", ""]
    if note:
        lines += [note, ""]
    lines += _table(["variant", "FPS A", "FPS B", "FPS B/A", "total p50 B/A", *[f"{s} p50 B/A" for s in stages]], rows)
    lines += ["", "B/A above 1 for FPS, below 1 for times, means B is faster."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short_labels(rows: Sequence[dict[str, Any]]) -> tuple[list[str], str]:
    """Labels naming only the axes that differ between `rows`, and the axes they share as one line."""
    parts = {"model": lambda r: r["model"], "detector": lambda r: r["detector"], "resolution": _res,
             "faces": lambda r: f"{r['faces_placed']} face(s)" if r.get("faces_placed") else "source faces",
             "threads": lambda r: f"{r['threads']} thread(s)"}
    varying = [f for f in parts.values() if len({f(r) for r in rows}) > 1]
    common = ", ".join(f(rows[0]) for f in parts.values() if f not in varying)
    if not varying:
        return [r["key"] for r in rows], common
    return ["/".join(f(r) for f in varying).replace(" thread(s)", "t").replace(" face(s)", "f") for r in rows], common


def plot_latency(report: dict[str, Any], path: Path) -> Optional[Path]:
    """Box plots (whiskers at p1 and p99) of each stage's per-frame latency, one box per variant."""
    rows = _ok(report)
    stages = [s for s in (*STAGES, "total") if any(max(r["samples_ms"][s], default=0) > 0 for r in rows)]
    if not rows or not stages:
        return None
    plt = _pyplot()
    cols = min(4, len(stages))
    nrows = math.ceil(len(stages) / cols)
    width = max(12, 0.45 * len(rows) * cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(width, 3.2 * nrows + 1.2), squeeze=False)
    labels, common = short_labels(rows)
    for ax, stage in zip(axes.flat, stages):
        ax.boxplot([r["samples_ms"][stage] for r in rows], whis=(1, 99), showfliers=False, widths=0.6)
        ax.set_title(stage)
        ax.set_ylabel("ms")
        slanted = max(map(len, labels)) > 8
        ax.set_xticks(range(1, len(rows) + 1), labels if len(rows) > 1 else [""], rotation=45 if slanted else 0,
                      ha="right" if slanted else "center", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(stages):]:
        ax.axis("off")
    title = f"fer-bench latency per stage (p1-p99 whiskers) - {report['machine']['cpu_model']}"
    title += f"\n{common}"
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_fps_threads(report: dict[str, Any], path: Path) -> Optional[Path]:
    """FPS against interpreter threads, one line per other combination; None if threads were not swept."""
    rows = _ok(report)
    if len({r["threads"] for r in rows}) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group in _group(rows, "threads").values():
        group = sorted(group, key=lambda r: r["threads"])
        xs, ys = [r["threads"] for r in group], [r["fps"] for r in group]
        ax.plot(xs, ys, marker="o", label=_label(group[0], "threads"))
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("interpreter threads")
    ax.set_ylabel("frames per second")
    ax.set_xticks(sorted({r["threads"] for r in rows}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"fer-bench FPS vs threads - {report['machine']['cpu_model']} ({report['machine']['cores']} cores)",
                 fontsize=9)
    return save_figure(fig, path)


def write_report(report: dict[str, Any], out_dir: Path, name: str = "bench", plots: bool = True) -> dict[str, Any]:
    """Write NAME.json, NAME.md and (with matplotlib) NAME_latency.png / NAME_fps_threads.png into `out_dir`.

    Returns {"json": path, "markdown": path, "plots": [paths], "note": why plots are missing or None}.
    Every file is written under a temporary name and renamed, and NAME.json comes last: it is what
    ``--compare`` reads, so its presence means the whole report was written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    text = dumps(validate_report(report))
    made: list[Path] = []
    note = None
    if plots:
        try:
            for plot, suffix in ((plot_latency, "latency"), (plot_fps_threads, "fps_threads")):
                path = plot(report, out_dir / f"{name}_{suffix}.png")
                if path is not None:
                    made.append(path)
        except ImportError:
            note = "matplotlib is not installed: no PNG plots (pip install matplotlib)"
    write_atomic(md_path, to_markdown(report, [str(p) for p in made]))
    write_atomic(json_path, text)
    return {"json": json_path, "markdown": md_path, "plots": made, "note": note}
