"""`fer-convert`: Keras model -> TFLite, accuracy gate, deployment bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import click
import numpy as np

from fer_edge import __version__
from fer_edge.cli_util import quiet_tensorflow_logs, run_cli, verbose_option
from fer_edge.errors import FerEdgeError
from fer_edge.files import write_atomic
from fer_edge.labels import validate_classes
from fer_edge.preprocess import PreprocessSpec, spec_beside

MODE_FLAGS = {"int8": "--int8", "float16": "--float16", "dynamic": "--dynamic-range", "float32": "--float32"}


def resolve_model(path: Path) -> Path:
    """Accept a run folder (its model.keras) or a .keras file."""
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise FerEdgeError(f"{path}: model not found")
    if path.suffix != ".keras":
        raise FerEdgeError(f"{path}: not a Keras model file (expected .keras)")
    return path


def run_facts(model_path: Path) -> tuple[Optional[tuple[str, ...]], PreprocessSpec, dict]:
    """Classes, preprocessing and training args recorded next to a model by fer-train."""
    folder = model_path.parent
    classes = None
    if (folder / "classes.json").exists():
        classes = validate_classes(json.loads((folder / "classes.json").read_text()))
    spec = spec_beside(model_path)
    args = {}
    if (folder / "config.json").exists():
        args = json.loads((folder / "config.json").read_text()).get("args", {})
    return classes, spec, args


def check_model_shape(model, path: Path, classes: tuple[str, ...], spec: PreprocessSpec) -> None:
    shape = tuple(model.input_shape)
    if shape[1:] != (spec.size, spec.size, 1):
        raise FerEdgeError(f"{path}: model input is {shape[1:]}, expected ({spec.size}, {spec.size}, 1)")
    if model.output_shape[-1] != len(classes):
        raise FerEdgeError(f"{path}: model has {model.output_shape[-1]} outputs but {len(classes)} classes "
                           f"({', '.join(classes)})")


def check_mac_budget(model, path: Path) -> None:
    """Refuse to bundle a model the device was not budgeted for (a teacher trained with --no-mac-budget).

    Converting one to TFLite stays allowed, for comparison; only the bundle,
    which `fer-device` runs per face, is held to the budget.
    """
    from fer_edge.train.model import MAC_BUDGET, count_macs

    macs = count_macs(model)
    if macs > MAC_BUDGET:
        raise FerEdgeError(f"{path}: {macs / 1e6:.1f}M MACs per face, over the device's {MAC_BUDGET / 1e6:.0f}M "
                           "budget: not bundled (convert it with --no-bundle)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--int8", "modes", flag_value="int8", multiple=True,
              help="Full-integer, int8 in/out, calibrated (the default).")
@click.option("--float16", "modes", flag_value="float16", multiple=True, help="float16 weights.")
@click.option("--dynamic-range", "modes", flag_value="dynamic", multiple=True, help="int8 weights, float activations.")
@click.option("--float32", "modes", flag_value="float32", multiple=True, help="Plain float32 export.")
@click.option("--all", "all_modes", is_flag=True, help="All four, for comparison.")
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset for calibration and the check (default: the one the model was trained on).")
@click.option("--labels", type=click.Choice(["fer2013", "ferplus", "ferplus-soft"]),
              help="Label set of --data (default: the training run's).")
@click.option("--calib-samples", type=click.IntRange(1), default=300, show_default=True,
              help="Representative faces from the train split, stratified by class.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split", default="val", show_default=True, help="Split for the accuracy check (val = PublicTest).")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Fail (exit 1) when TFLite top-1 is more than this many points below Keras.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default: <model folder>/export).")
@click.option("--bundle/--no-bundle", default=True, show_default=True,
              help="Write a deployment bundle from the first mode (int8 when converted).")
@click.option("--archive", is_flag=True, help="Also write the bundle as a .tar.gz.")
@click.option("--no-detector", is_flag=True, help="Bundle without face detectors (YuNet, BlazeFace).")
# Face detectors in the bundle (issue 41): where YuNet comes from.
@click.option("--yunet-model", type=click.Path(path_type=Path), default=None,
              help="YuNet .onnx to bundle as the default detector (default: the packaged bundle's; "
                   "e.g. ../shared/models/yunet/yunet_n_640_640.onnx).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="TFLite threads for the check.")
# Confidence calibration (temperature scaling, issue 42)
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Fit one temperature on PublicTest by NLL and fold it into the model before the softmax.")
@click.option("--calibration-test-split", default="test", show_default=True,
              help="Split reported before/after calibration (never used to fit; test = PrivateTest).")
# The device's face crop written into the bundle's preprocess.json (issue 42)
@click.option("--crop", type=click.Choice(["box", "aligned"]), default="box", show_default=True,
              help="Device face crop: the detector's box with the run's margin, or aligned on the landmarks to "
                   "FER2013's template.")
@click.option("--level-eyes/--keep-roll", default=True, show_default=True,
              help="Aligned crop: rotate the eyes level, or scale and shift only.")
@click.option("--landmarks", "landmarks_path", type=click.Path(path_type=Path), default=None,
              help="Template for --crop aligned (default: the package's landmarks_fer2013.json).")
@verbose_option
@click.version_option(__version__, prog_name="fer-convert")
def cli(model, modes, all_modes, data, labels, calib_samples, seed, split, max_drop, out, bundle, archive,
        no_detector, yunet_model, threads, calibrate, calibration_test_split, crop, level_eyes,
        landmarks_path) -> None:
    """Convert a trained model (a .keras file or a fer-train run folder) to TFLite.

    Scores the Keras model and each TFLite model on --split through the device's
    TFLite runtime, writes a JSON + Markdown report per mode, then the bundle.
    Exits 1 if any mode loses more than --max-drop points of top-1. With
    --calibrate (the default) the exported models carry a temperature fitted on
    PublicTest; ECE, NLL and a reliability diagram before and after, on PublicTest
    and PrivateTest, go into the first mode's report and the bundle.
    """
    from fer_edge.convert.quantize import calibration_faces
    from fer_edge.train.data import default_data_dir, load_dataset, resolve_split

    modes = list(dict.fromkeys(("int8", "float16", "dynamic", "float32") if all_modes else (modes or ("int8",))))
    model_path = resolve_model(model)
    classes, spec, args = run_facts(model_path)
    if crop == "aligned":
        from fer_edge.convert.template import load_template

        spec = spec.aligned(load_template(landmarks_path), level_eyes=level_eyes)
    data_path = data or (Path(args["data"]) if args.get("data") else default_data_dir())
    labels = labels or args.get("labels", "fer2013")
    if not data_path.exists():
        raise FerEdgeError(f"{data_path}: dataset not found")
    if bundle and not no_detector:
        from fer_edge.convert.build import detector_entries

        detector_entries(yunet_model)  # fail early, before minutes of conversion
    click.echo(f"loading {data_path} ({labels} labels)...")
    dataset = load_dataset(data_path, labels=labels, ferplus=args.get("ferplus"),
                           eight_classes=bool(args.get("eight_classes")))
    classes = classes or dataset.classes
    if tuple(dataset.classes) != tuple(classes):
        raise FerEdgeError(f"{data_path}: data classes {list(dataset.classes)} differ from the model's {list(classes)}")
    check_split = dataset.split(split)

    import keras  # noqa: F401  (after the cheap checks: TensorFlow takes seconds to import)

    from fer_edge.convert.build import build_bundle
    from fer_edge.convert.check import compare, markdown_report, tflite_probabilities
    from fer_edge.convert.quantize import convert_model  # imports TensorFlow
    from fer_edge.device.runtime import find_runtime
    from fer_edge.train.fit import load_keras_model
    from fer_edge.train.report import predict_logits, versions

    keras_model = load_keras_model(model_path)
    check_model_shape(keras_model, model_path, classes, spec)
    if bundle:
        check_mac_budget(keras_model, model_path)
    calibration = None
    if "int8" in modes:
        calibration = calibration_faces(dataset, calib_samples, seed)
        if len(calibration) < 300:
            click.echo(f"warning: only {len(calibration)} calibration faces; 300 or more give steadier ranges",
                       err=True)
    out_dir = out or model_path.parent / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime = find_runtime()
    click.echo(f"TFLite runtime for the check: {runtime}")
    ref_probs = predict_logits(keras_model, check_split.images, spec)
    if not np.allclose(ref_probs.sum(1), 1.0, atol=1e-3):  # a logits model: compare probabilities
        ref_probs = np.exp(ref_probs - ref_probs.max(1, keepdims=True))
        ref_probs /= ref_probs.sum(1, keepdims=True)

    source_model, temperature = keras_model, None
    if calibrate:
        from fer_edge.convert.calibrate import fit_temperature, fold_temperature, logits_from_probs, softmax
        from fer_edge.preprocess import normalize

        fit_split = dataset.split("val")
        fit_probs = ref_probs if resolve_split(split) == "val" else predict_logits(keras_model, fit_split.images, spec)
        temperature = fit_temperature(logits_from_probs(fit_probs), fit_split.labels)
        keras_model = fold_temperature(keras_model, temperature, normalize(fit_split.images[:256], spec))
        ref_probs = softmax(logits_from_probs(ref_probs), temperature).astype(np.float32)  # the gate compares like with like
        click.echo(f"calibration: temperature {temperature:.4f} fitted on PublicTest ({len(fit_split)} faces), "
                   "folded into the last Dense layer")

    failed, results = [], {}
    for mode in modes:
        click.echo(f"[{mode}] converting...")
        tflite_bytes = convert_model(keras_model, mode, spec, calibration)
        tflite_path = out_dir / f"emotion_{mode}.tflite"
        # Checked under a hidden name first: a run killed mid-check leaves the previous model and its
        # report together, never a new model beside an old report.
        unchecked = out_dir / f".{tflite_path.stem}.unchecked.tflite"
        write_atomic(unchecked, tflite_bytes)
        try:
            probs = tflite_probabilities(unchecked, check_split.images, spec, threads, runtime,
                                         desc=f"[{mode}] check")
        except BaseException:
            unchecked.unlink(missing_ok=True)
            raise
        check = compare(check_split.labels, ref_probs, probs, classes)
        report = {
            "mode": mode, "source_model": str(model_path), "split": split, "runtime": str(runtime),
            "max_drop_pp": max_drop, "passed": check["drop_pp"] <= max_drop,
            "calibration": {"samples": int(len(calibration)), "seed": seed, "split": "train"} if mode == "int8" else None,
            "sizes": {tflite_path.name: len(tflite_bytes)},
            "check": check, "versions": versions(),
        }
        if temperature is not None and mode == modes[0]:
            from fer_edge.convert.calibrate import markdown_section

            report["temperature_scaling"] = calibration_before_after(
                source_model, model_path.parent.name, unchecked, mode, spec, calibration, dataset, temperature,
                calibration_test_split, out_dir, threads, runtime)
            md = markdown_report(report) + markdown_section(report["temperature_scaling"])
        else:
            md = markdown_report(report)
        unchecked.replace(tflite_path)
        write_atomic(out_dir / f"report_{mode}.json", json.dumps(report, indent=2) + "\n")
        write_atomic(out_dir / f"report_{mode}.md", md)
        results[mode] = (tflite_path, report, md)
        click.echo(f"[{mode}] {len(tflite_bytes) / 1024:.0f} KiB; top-1 Keras {check['reference_top1']:.2%} -> "
                   f"TFLite {check['converted_top1']:.2%} (drop {check['drop_pp']:.2f} pp, agreement "
                   f"{check['agreement']:.2%}) {'PASS' if report['passed'] else 'FAIL'}")
        if not report["passed"]:
            failed.append(mode)

    if bundle:
        mode = modes[0]
        if mode in failed:
            click.echo(f"not writing a bundle: the {mode} model failed the accuracy gate", err=True)
        else:
            tflite_path, report, md = results[mode]
            model_info: dict = {"params": int(keras_model.count_params()), "label_set": labels}
            files: dict = {}
            if "temperature_scaling" in report:
                model_info["temperature"] = report["temperature_scaling"]["temperature"]
                plot = report["temperature_scaling"]["plot"]
                files[plot] = out_dir / plot  # the name accuracy.md links to
            folder = build_bundle(out_dir / "bundle", tflite_path, mode, classes, spec, report, md, versions(),
                                  model_info, archive=archive, with_detector=not no_detector,
                                  yunet_model=yunet_model, extra_files=files)
            click.echo(f"bundle: {folder}" + (f" (+ {folder.name}.tar.gz)" if archive else ""))
    if failed:
        raise SystemExit(1)


def calibration_before_after(source_model, stem: str, calibrated_path: Path, mode: str, spec: PreprocessSpec,
                             calibration, dataset, temperature: float, test_split: str, out_dir: Path,
                             threads: int, runtime) -> dict:
    """ECE, NLL and top-1 of the exported model without and with the temperature, plus the reliability PNG.

    "Before" is the same conversion of the uncalibrated model, so the two
    differ only by the temperature; both run through the device's runtime.
    """
    import tempfile

    from fer_edge.convert.calibrate import calibration_metrics, reliability_plot
    from fer_edge.convert.check import tflite_probabilities
    from fer_edge.convert.quantize import convert_model
    from fer_edge.train.data import resolve_split

    with tempfile.TemporaryDirectory() as tmp:
        before_path = Path(tmp) / "before.tflite"
        before_path.write_bytes(convert_model(source_model, mode, spec, calibration))
        splits: dict = {}
        names = {"val": "PublicTest (fit)", "test": "PrivateTest"}
        for key in dict.fromkeys(("val", resolve_split(test_split))):
            try:
                part = dataset.split(key)
            except FerEdgeError:
                continue
            rows = {}
            for name, path in (("before", before_path), ("after", calibrated_path)):
                probs = tflite_probabilities(path, part.images, spec, threads, runtime, desc=f"[{mode}] {key} {name}")
                probs /= np.maximum(probs.sum(1, keepdims=True), 1e-6)  # as the device renormalises
                rows[name] = calibration_metrics(probs, part.labels)
            splits[names.get(key, key)] = rows
    plot = f"reliability_{mode}.png"
    shown = {f"{split} {name}": m for split, rows in splits.items() for name, m in rows.items()
             if not split.startswith("PublicTest")} or {f"{s} {n}": m for s, r in splits.items() for n, m in r.items()}
    reliability_plot(shown, f"{stem}: T = {temperature:.3f}", out_dir / plot)
    click.echo(f"[{mode}] calibration: " + "; ".join(
        f"{split} ECE {rows['before']['ece']:.3f} -> {rows['after']['ece']:.3f}, top-1 "
        f"{rows['before']['top1']:.2%} -> {rows['after']['top1']:.2%}" for split, rows in splits.items()))
    return {"temperature": temperature, "fit_split": "PublicTest (val)", "fit_samples": int(len(dataset.split("val"))),
            "report_split": names.get(resolve_split(test_split), test_split), "splits": splits, "plot": plot}


def main() -> None:
    quiet_tensorflow_logs()
    run_cli(cli)
