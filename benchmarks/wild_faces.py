"""Score ``fer-device run --json`` output on wild-faces: photos with no face, and accuracy.

    fer-device run --source ../shared/data/wild-faces/images --json > out.jsonl
    python -m fer_edge.benchmarks.wild_faces out.jsonl [--labels ../shared/data/wild-faces/labels.csv]

The wild-faces README's rule: each photo's largest face is its answer, and a
photo where no face is found counts as wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Optional


def score(lines: list[str], labels: dict[str, str]) -> dict[str, Any]:
    """Counts from `StillPrinter`'s JSON lines (`labels` maps a file name to its label)."""
    records = [json.loads(line) for line in lines if line.startswith("{")]
    no_face = correct = 0
    for record in records:
        if not record["faces"]:
            no_face += 1
            continue
        largest = max(record["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        correct += largest["label"] == labels.get(Path(record["image"]).name)
    n = len(records)
    return {"photos": n, "no_face": no_face, "no_face_rate": no_face / n if n else 0.0,
            "accuracy": correct / n if n else 0.0}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("--labels", type=Path, default=Path("../shared/data/wild-faces/labels.csv"))
    args = parser.parse_args(argv)
    with open(args.labels, newline="", encoding="utf-8") as fh:
        labels = {Path(r["path"]).name: r["label"] for r in csv.DictReader(fh)}
    r = score(args.jsonl.read_text(encoding="utf-8").splitlines(), labels)
    print(f"{r['photos']} photos, no face in {r['no_face']} ({r['no_face_rate']:.2%}), "
          f"accuracy {r['accuracy']:.1%} (largest face; no face counts as wrong)")


if __name__ == "__main__":
    main()
