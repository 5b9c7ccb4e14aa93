"""`fer-train`: train the edge CNN (default), score saved models (`evaluate`), compare runs (`runs`).

A thin layer: options in, a TrainConfig or a list of paths out, then one call
into the module that does the work. The training loop and run folder are in
`fit.py`, the teachers' targets in `distill.py`, `--init`'s weight surgery in
`surgery.py`, weight averaging in `soup.py`, the runs table in `runs.py`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click

from fer_edge import __version__
from fer_edge.cli_util import DefaultGroup, quiet_tensorflow_logs, run_cli, unique_run_dir, verbose_option
from fer_edge.errors import FerEdgeError
from fer_edge.train.augment import AugmentConfig
from fer_edge.train.data import FaceData, default_data_dir, load_dataset
from fer_edge.train.fit import TrainConfig

LABELS = click.Choice(["fer2013", "ferplus", "ferplus-soft"])


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, so commands that share them declare them once."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


class CommaListParam(click.ParamType):
    """A comma-separated list of numbers; subclasses set the number type, the example and the checks."""

    cast: type = int
    what = "numbers"
    example = "1,2"

    def check(self, values: tuple) -> None:
        """Raise ValueError with a one-line reason when ``values`` make no sense for this option."""

    def convert(self, value, param, ctx) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(self.cast(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r}: expected comma-separated {self.what}, e.g. {self.example}", param, ctx)
        try:
            self.check(values)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return values


class WidthsParam(CommaListParam):
    """Channels per stage as ``32,64,96,160,256``."""

    name = "C1,C2,C3,C4,C5"
    what = "channel counts"
    example = "32,64,96,160,256"

    def check(self, values: tuple) -> None:
        from fer_edge.train.model import stages_with_widths  # keras: imported only when --widths is given

        stages_with_widths(values)


WIDTHS = WidthsParam()


class BlocksParam(CommaListParam):
    """Residual blocks per stage as ``0,0,0,2,0``."""

    name = "B1,B2,B3,B4,B5"
    what = "block counts"
    example = "0,0,0,2,0"

    def check(self, values: tuple) -> None:
        from fer_edge.train.model import check_blocks  # keras: imported only when --blocks is given

        check_blocks(values)


BLOCKS = BlocksParam()


def _load(data: Optional[Path], labels: str, ferplus: Optional[Path], eight: bool, skip_bad: bool,
          seed: int = 0, votes: bool = False) -> FaceData:
    path = data or default_data_dir()
    if eight and labels == "fer2013":
        raise FerEdgeError("--eight-classes keeps FER+'s contempt votes as an 8th class: it needs --labels ferplus "
                           "or ferplus-soft")
    layout = "image folders" if (Path(path) / "train").is_dir() else f"{labels} labels"
    click.echo(f"loading {path} ({layout})...")
    dataset = load_dataset(path, labels=labels, ferplus=ferplus, eight_classes=eight, skip_bad=skip_bad,
                           seed=seed, votes=votes)
    if dataset.skipped:
        click.echo(f"skipped {dataset.skipped} bad rows/images (first: {dataset.notes[0]})", err=True)
    for note in dataset.notes:
        if note.startswith("FER+"):
            click.echo(note)
    return dataset


#: Where the faces come from and which labels they carry (fit, evaluate).
DATA_OPTIONS = options(
    click.option("--data", type=click.Path(path_type=Path), help="fer2013.csv(.gz), its folder, or an image-folder "
                 "dataset root (train/<class>/...). Default: $FER_EDGE_DATA or ../shared/data/fer2013."),
    click.option("--labels", type=LABELS, default="fer2013", show_default=True,
                 help="FER2013 labels, FER+ majority vote, or FER+ vote distributions."),
    click.option("--ferplus", type=click.Path(path_type=Path), help="fer2013new.csv (default: next to the CSV)."),
    click.option("--eight-classes", is_flag=True, help="FER+: keep contempt as an 8th class."),
)


#: Where a run is written, and what it continues or starts from.
RUN_FOLDER_OPTIONS = options(
    click.option("--out", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True),
    click.option("--name", help="Run folder name (default: the label set)."),
    click.option("--resume", "resume_dir", type=click.Path(path_type=Path), help="Continue the run in this folder."),
    click.option("--init", "init_from", type=click.Path(path_type=Path),
                 help="Start from this model's weights (a .keras file or a run folder) with a fresh schedule: "
                      "to train a finished run longer, or to start a new label set from FER2013 features."),
)


#: How long and how fast a run trains.
SCHEDULE_OPTIONS = options(
    click.option("--epochs", type=click.IntRange(1), default=40, show_default=True),
    click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True),
    click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.05, show_default=True,
                 help="Peak learning rate (SGD, Nesterov momentum, warm-up then cosine decay)."),
    click.option("--patience", type=click.IntRange(1), default=15, show_default=True,
                 help="Early stop after this many epochs without a better validation accuracy."),
    click.option("--warmup", type=click.FloatRange(0), default=TrainConfig.warmup_epochs, show_default=True,
                 help="Linear warm-up, in epochs."),
    click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=TrainConfig.ema, show_default=True,
                 help="Validate and checkpoint an exponential moving average of the weights with this momentum "
                      "per step (e.g. 0.999); 0 turns it off."),
)


#: What keeps a run from learning the training faces by heart.
REGULARISATION_OPTIONS = options(
    click.option("--weight-decay", type=click.FloatRange(0), default=TrainConfig.weight_decay, show_default=True,
                 help="Decoupled weight decay per SGD step, times the learning rate: the pull of every weight "
                      "towards zero. 0: off."),
    click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=TrainConfig.dropout,
                 show_default=True, help="Dropout before the classifier."),
    click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=TrainConfig.label_smoothing,
                 show_default=True),
    click.option("--erase-prob", type=click.FloatRange(0, 1), default=AugmentConfig.erase_prob, show_default=True,
                 help="Probability of random erasing per face."),
    click.option("--augment-strength", type=click.FloatRange(0), default=1.0, show_default=True,
                 help="Scale the rotation, shift, zoom, brightness and contrast ranges: 0.5 halves each, "
                      "1.3 makes them harder, 0 leaves only flips and erasing."),
    click.option("--class-weight", is_flag=True, help="Weight samples by inverse class frequency."),
    click.option("--no-augment", is_flag=True, help="Train on the faces as they are."),
)


#: Distillation: targets from trained models (fer_edge.train.distill).
TEACHER_OPTIONS = options(
    click.option("--teacher", type=click.Path(path_type=Path), multiple=True,
                 help="Distil from this model (a .keras file or a run folder with the same classes): each "
                      "training target mixes the label with the teacher's mirror-averaged distribution. "
                      "Repeat to distil from the average of several teachers."),
    click.option("--teacher-weight", type=click.FloatRange(0, 1), default=TrainConfig.teacher_weight,
                 show_default=True, help="Share of the teacher's distribution in each target."),
    click.option("--teacher-temperature", type=click.FloatRange(0, min_open=True),
                 default=TrainConfig.teacher_temperature, show_default=True,
                 help="Divides the teacher's logits; above 1 spreads its distribution."),
    click.option("--teacher-views", type=click.IntRange(0), default=TrainConfig.teacher_views, show_default=True,
                 help="With --teacher: augment each training face this many times up front and let the teachers "
                      "label each copy, so the targets describe the augmented image the student sees; epochs "
                      "cycle through the copies. 0: the teachers label the clean face once."),
    click.option("--teacher-tta", is_flag=True,
                 help="With --teacher: the teachers also average their logits over small shifts and zooms of each "
                      "face (14 copies with the mirrors), a steadier target; seven times as many teacher passes, once."),
    click.option("--teacher-tta-offset", is_flag=True,
                 help="With --teacher-views: score the clean faces once as --teacher-tta does and once with the "
                      "face and its mirror, and add the difference to every view's logits: the TTA ensemble's "
                      "correction for one TTA pass instead of one per view."),
    click.option("--teacher-mixup", type=click.FloatRange(0), default=TrainConfig.teacher_mixup, show_default=True,
                 metavar="ALPHA",
                 help="With --teacher-views: blend each face of a view with another face (mixup, weight from "
                      "Beta(ALPHA, ALPHA), the face keeping the larger share) before the teachers label it, so they "
                      "grade images they never trained on. 0: off."),
    click.option("--teacher-votes", type=click.FloatRange(0), default=TrainConfig.teacher_votes, show_default=True,
                 metavar="WEIGHT",
                 help="With --teacher: add what the other labelling of each training face says about its label to "
                      "the teachers' logits, times WEIGHT: FER+'s votes (fer2013new.csv, beside the CSV or --ferplus) "
                      "for FER2013 labels, FER2013's label for FER+ labels. 0: off."),
)


#: The network's shape (fer_edge.train.model); --init fits a source of another shape (fer_edge.train.surgery).
NETWORK_OPTIONS = options(
    click.option("--widths", type=WIDTHS, help="Channels per stage, comma-separated, five of them (default "
                 "32,64,96,160,256); with --init from a wider run, each layer keeps the source's channels with "
                 "the largest batch-norm scale."),
    click.option("--blocks", type=BLOCKS, help="Residual blocks per stage, comma-separated, five of them: pairs of "
                 "3x3 convolutions added back to their input after the stage's own (default: none). Depth at 6x6 "
                 "costs few MACs per weight: e.g. --widths 24,48,80,112,160 --blocks 0,0,0,2,0."),
    click.option("--head", type=click.IntRange(0), default=TrainConfig.head, show_default=True, metavar="N",
                 help="Add a 1x1 convolution of N channels on the last 3x3 map whose pooled features join the "
                      "classifier's input: capacity for few MACs. With --init from a model without one, the "
                      "model starts with the source's predictions. 0: none."),
    click.option("--fc", type=click.IntRange(0), default=TrainConfig.fc, show_default=True, metavar="N",
                 help="Flatten the last 3x3 map into a dense layer of N units instead of averaging it, so the "
                      "classifier sees where on the face each feature fires: capacity at one MAC per weight. With "
                      "--init from a pooled model, the model starts with the source's predictions (N at least the "
                      "last stage's width). 0: pooling."),
    click.option("--mirror", is_flag=True, help="Average the logits over the face and its mirror inside the model "
                 "(two backbone passes, both counted in the MAC budget)."),
    click.option("--no-mac-budget", is_flag=True,
                 help="Lift the 50M-MAC budget, for a teacher: a network that only scores faces here for "
                      "--teacher and never ships (fer-convert refuses to bundle a model over the budget)."),
)


#: Reproducibility, CPU threads, smoke runs, bad input.
RUNTIME_OPTIONS = options(
    click.option("--seed", type=int, default=1234, show_default=True),
    click.option("--threads", type=click.IntRange(0), default=0, help="TensorFlow intra-op threads (0: all cores)."),
    click.option("--limit", type=click.IntRange(0), default=0, help="Use only N training faces (smoke runs)."),
    click.option("--skip-bad", is_flag=True, help="Skip bad rows/images and report how many, instead of stopping."),
)



#: The split scored into metrics.json (fit, finish, soup).
REPORT_SPLIT_OPTION = click.option("--report-split", default="test", show_default=True,
                                   help="Split scored into metrics.json (FER2013: test = PrivateTest).")


def _command() -> str:
    """The command line as typed, for config.json and metrics.json."""
    return " ".join(shlex.quote(a) for a in ["fer-train", *sys.argv[1:]])


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fer-train")
def cli() -> None:
    """Train the fer-edge emotion CNN on FER2013, FER+ or an image-folder dataset.

    With no subcommand, runs `fit` on the built-in defaults.
    """


def _train_config(opts: dict[str, Any]) -> TrainConfig:
    """The TrainConfig that fit's options describe."""
    return TrainConfig(
        epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"], weight_decay=opts["weight_decay"],
        patience=opts["patience"], dropout=opts["dropout"], label_smoothing=opts["label_smoothing"],
        warmup_epochs=opts["warmup"], class_weight=opts["class_weight"], seed=opts["seed"],
        threads=opts["threads"], limit=opts["limit"],
        init=str(opts["init_from"]) if opts["init_from"] else None, ema=opts["ema"],
        teachers=tuple(str(t) for t in opts["teacher"]), teacher_weight=opts["teacher_weight"],
        teacher_temperature=opts["teacher_temperature"], teacher_views=opts["teacher_views"],
        teacher_tta=opts["teacher_tta"], teacher_tta_offset=opts["teacher_tta_offset"],
        teacher_mixup=opts["teacher_mixup"], teacher_votes=opts["teacher_votes"],
        widths=opts["widths"] or (), blocks=opts["blocks"] or (), head=opts["head"], fc=opts["fc"],
        mirror=opts["mirror"], mac_budget=not opts["no_mac_budget"],
        augment=AugmentConfig(enabled=not opts["no_augment"],
                              erase_prob=opts["erase_prob"]).scaled(opts["augment_strength"]))


@cli.command()
@DATA_OPTIONS
@RUN_FOLDER_OPTIONS
@SCHEDULE_OPTIONS
@REGULARISATION_OPTIONS
@TEACHER_OPTIONS
@NETWORK_OPTIONS
@RUNTIME_OPTIONS
@REPORT_SPLIT_OPTION
@verbose_option
def fit(**opts: Any) -> None:
    """Train, select the best epoch on the validation split, and write a run folder."""
    from fer_edge.train import fit as loop

    command = _command()
    cfg = _train_config(opts)
    cfg.check()
    resume_dir = opts["resume_dir"]
    if resume_dir and opts["init_from"]:
        raise FerEdgeError("--resume and --init do not mix: --resume continues a run with its own weights; "
                           "use --init for a new run")
    if resume_dir:
        run_dir = Path(resume_dir)
        saved, cfg, (data, labels, ferplus, eight_classes) = loop.saved_run(run_dir)
    else:
        data, labels, ferplus, eight_classes = opts["data"], opts["labels"], opts["ferplus"], opts["eight_classes"]
    dataset = _load(data, labels, ferplus, eight_classes, opts["skip_bad"], cfg.seed, votes=cfg.teacher_votes > 0)
    loop.configure_tensorflow(cfg.threads, cfg.seed)
    if not resume_dir:
        run_dir = unique_run_dir(opts["out"], opts["name"] or labels)
        loop.start_run_folder(run_dir, command, {"data": str(data) if data else None, "labels": labels,
                                                 "ferplus": str(ferplus) if ferplus else None,
                                                 "eight_classes": eight_classes}, cfg)
    click.echo(f"run folder: {run_dir}")
    loop.write_contract(run_dir, dataset.classes, cfg.spec)

    resumed_at = loop.committed_epochs(run_dir) if resume_dir else 0
    t0 = time.time()
    try:
        model, macs = loop.train(dataset, run_dir, cfg, resume=bool(resume_dir))
    except (FerEdgeError, KeyboardInterrupt):
        if not resume_dir:
            loop.discard_unstarted(run_dir)
        if (run_dir / "last.keras").exists():
            click.echo(f"continue with: fer-train fit --resume {run_dir}", err=True)
        raise
    wall = time.time() - t0
    epochs_now = loop.epochs_logged(run_dir) - resumed_at  # wall time covers this invocation's epochs only
    timing = {"wall_seconds": round(wall, 1), "seconds_per_epoch": round(wall / max(1, epochs_now), 1)}
    extra = {"resumed": {"command": command, "at_epoch": resumed_at}} if resume_dir else {}
    loop.write_outputs(run_dir, dataset, cfg, model, macs, opts["report_split"],
                       {**timing, "command": command if not resume_dir else saved["command"], **extra}, labels)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@REPORT_SPLIT_OPTION
@verbose_option
def finish(run_dir: Path, report_split: str) -> None:
    """End a stopped run (Ctrl-C, a kill) at its best epoch so far, without training more.

    Writes what a run that used all its epochs writes (model.keras, the
    SavedModel, curves, confusion matrices, metrics.json) from best.keras,
    so a run that will not finish in the time left still gives a usable,
    documented model. `fit --resume` instead trains on to the last epoch.
    The wall time is the span from config.json to last.keras (teacher
    scoring included), read from the file times.
    """
    from fer_edge.train import fit as loop

    if not run_dir.is_dir():
        raise FerEdgeError(f"{run_dir}: run folder not found")
    saved, cfg, (data, labels, ferplus, eight_classes) = loop.saved_run(run_dir)
    best, last, state_path = run_dir / "best.keras", run_dir / "last.keras", run_dir / "state.json"
    if not (best.exists() and last.exists() and state_path.exists()):
        raise FerEdgeError(f"{run_dir}: no finished epoch to end at (best.keras, last.keras and state.json "
                           f"are needed)")
    dataset = _load(data, labels, ferplus, eight_classes, False, cfg.seed)
    loop.configure_tensorflow(cfg.threads, cfg.seed)
    from fer_edge.train.model import count_macs

    state = json.loads(state_path.read_text())
    loop.trim_history(run_dir / "history.csv", int(state["epoch"]))
    model = loop.load_keras_model(best)
    command = _command()
    wall = last.stat().st_mtime - (run_dir / "config.json").stat().st_mtime
    loop.write_outputs(run_dir, dataset, cfg, model, count_macs(model), report_split,
                       {"wall_seconds": round(wall, 1), "command": saved["command"],
                        "finished": {"command": command, "at_epoch": int(state["epoch"]),
                                     "of_epochs": cfg.epochs, "wall_from": "file times"}}, labels)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@DATA_OPTIONS
@click.option("--split", default="test", show_default=True, help="train/val/test or a FER2013 Usage name.")
@click.option("--mirror", is_flag=True, help="Average each model's logits over the face and its mirror image "
                                              "(test-time flip; how --teacher scores its teachers).")
@click.option("--tta", is_flag=True, help="Also average over small shifts and zooms of each face "
                                          "(how --teacher-tta scores its teachers).")
@click.option("--votes", type=click.FloatRange(0), default=0.0, metavar="WEIGHT",
              help="Add the other labelling's evidence on each face's label (FER+ votes for FER2013 labels, "
                   "FER2013's label for FER+), times WEIGHT, fitted on the training split (how --teacher-votes "
                   "teaches). 0: off.")
@click.option("--json-out", type=click.Path(path_type=Path), help="Write the metrics here as JSON.")
@verbose_option
def evaluate(models, data, labels, ferplus, eight_classes, split, mirror, tta, votes, json_out) -> None:
    """Score saved models (.keras files or run folders) on one split of a dataset.

    Several MODELS are scored as one ensemble (their mean logits): the figure
    to check before distilling from them with repeated --teacher options.
    """
    from fer_edge.train.fit import configure_tensorflow

    for path in models:
        if not path.exists():
            raise FerEdgeError(f"{path}: model not found")
    dataset = _load(data, labels, ferplus, eight_classes, False, votes=votes > 0)
    configure_tensorflow(0, 0)
    from fer_edge.train.distill import mean_logits, vote_offset
    from fer_edge.train.report import classification_metrics, write_json

    part = dataset.split(split)
    logits = mean_logits(models, part.images, dataset.classes, mirror=mirror, tta=tta)
    if votes:
        logits += vote_offset(part, votes, fit_on=dataset.split("train"))
    metrics = classification_metrics(part.labels, logits.argmax(1), dataset.classes)
    what = f"{len(models)} models" if len(models) > 1 else "1 model"
    click.echo(f"{split}: top-1 {metrics['accuracy']:.2%}, macro-F1 {metrics['macro_f1']:.3f} "
               f"on {metrics['samples']} faces ({what}{', mirror-averaged' if mirror else ''}"
               f"{', shift/zoom-averaged' if tta else ''}{f', other labelling x {votes:g}' if votes else ''})")
    for name, row in metrics["per_class"].items():
        click.echo(f"  {name:>9}: P {row['precision']:.2f}  R {row['recall']:.2f}  F1 {row['f1']:.2f}  "
                   f"n={row['support']}")
    if json_out:
        write_json(json_out, {"models": [str(m) for m in models], "mirror": mirror, "tta": tta, "votes": votes,
                              "split": split, **metrics})


class SharesParam(CommaListParam):
    """Non-negative shares, one per model, as ``1,1,2``."""

    name = "W1,W2,..."
    cast = float
    what = "numbers, one per model"
    example = "1,1,2"

    def check(self, values: tuple) -> None:
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise ValueError(f"{','.join(map(str, values))}: shares must be non-negative and not all 0")


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--weights", "shares", type=SharesParam(),
              help="One share per model, comma-separated (default: all equal).")
@click.option("--data", type=click.Path(path_type=Path), help="As for fit (default: the first run's data).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True)
@click.option("--name", default="soup", show_default=True, help="Run folder name.")
@REPORT_SPLIT_OPTION
@verbose_option
def soup(models, shares, data, out, name, report_split) -> None:
    """Average the weights of runs fine-tuned from one start into a new run folder.

    A "model soup": runs that share a trained start stay close in weight space,
    so their average often scores above each of them at one model's cost on
    the device, where an ensemble would cost one pass per model. The soup is
    scored on the validation split (choose on that, as for any run) and on
    --report-split; its folder takes `fer-convert` like a trained run.
    """
    from fer_edge.convert.cli import resolve_model, run_facts
    from fer_edge.train.fit import configure_tensorflow, evaluate_model, write_contract

    paths = list(models)
    first = resolve_model(paths[0])
    _, spec, args = run_facts(first)  # spec: preprocess.json; args: how the first run read its data
    config = first.parent / "config.json"
    saved = json.loads(config.read_text()) if config.exists() else {}
    labels = args.get("labels", "fer2013")
    dataset = _load(data or (Path(args["data"]) if args.get("data") else None), labels,
                    Path(args["ferplus"]) if args.get("ferplus") else None, args.get("eight_classes", False), False)
    configure_tensorflow(0, 0)
    from fer_edge.train.model_files import atomic_save, export_saved_model
    from fer_edge.train.model import with_softmax
    from fer_edge.train.report import versions, write_json
    from fer_edge.train.soup import average_models

    command = _command()
    model = average_models(paths, shares)
    if model.output.shape[-1] != len(dataset.classes):
        raise FerEdgeError(f"the models have {model.output.shape[-1]} outputs but the data has "
                           f"{len(dataset.classes)} classes")
    run_dir = unique_run_dir(out, name)
    write_json(run_dir / "config.json", {
        "command": command,
        "args": args,
        "soup": {"models": [str(p) for p in paths], "weights": list(shares or [1.0] * len(paths))},
        "train": saved.get("train", {}),
    })
    write_contract(run_dir, dataset.classes, spec)
    final = with_softmax(model)
    atomic_save(final, run_dir / "model.keras")
    export_saved_model(final, run_dir)
    val = evaluate_model(model, dataset, "val", spec, run_dir, "val")
    report = evaluate_model(model, dataset, report_split, spec, run_dir, report_split)
    write_json(run_dir / "metrics.json", {
        "split": report_split,
        **report,
        "val_accuracy": val["accuracy"],
        "val_macro_f1": val["macro_f1"],
        "params": int(model.count_params()),
        "command": command,
        "versions": versions(),
        "data": {"source": dataset.source, "sha256": dataset.checksum, "labels": labels,
                 "skipped": dataset.skipped},
    })
    click.echo(f"val top-1 {val['accuracy']:.2%} (macro-F1 {val['macro_f1']:.3f}); {report_split} top-1 "
               f"{report['accuracy']:.2%}. Outputs in {run_dir}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sort", "sort_by", type=click.Choice(["val", "name"]), default="val", show_default=True,
              help="val: best validation accuracy first (the split runs are chosen on); name: alphabetical.")
@click.option("--out", type=click.Path(path_type=Path), help="Also write the table to this Markdown file.")
@verbose_option
def runs(run_dirs, sort_by, out) -> None:
    """Compare finished run folders in one Markdown table.

    One row per folder: labels, the run it started from, teachers, params,
    MACs, epochs, wall seconds per epoch (teacher scoring included),
    validation top-1 and the report split's top-1 and macro-F1. Folders without a metrics.json (a run stopped before
    its first epoch, a folder of other files) and files (a README beside the
    runs, as a glob like `train/results/*` picks up) are listed as skipped.
    """
    from fer_edge.files import write_atomic
    from fer_edge.train.runs import markdown_table, read_run, sort_runs

    summaries, skipped = [], []
    for run_dir in run_dirs:
        if not run_dir.exists():
            raise FerEdgeError(f"{run_dir}: not found")
        summary = read_run(run_dir) if run_dir.is_dir() else None
        if summary is None:
            skipped.append(run_dir.name)
        else:
            summaries.append(summary)
    table = markdown_table(sort_runs(summaries, sort_by))
    click.echo(table, nl=False)
    if skipped:
        click.echo(f"skipped {len(skipped)} without a metrics.json: {', '.join(skipped)}", err=True)
    if out:
        write_atomic(out, table)


def main() -> None:
    quiet_tensorflow_logs()
    run_cli(cli)
