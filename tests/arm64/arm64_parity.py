"""x86 <-> aarch64 parity of the shipped bundle's two models, on a fixed set of faces.

`tests/arm64/run.sh` runs this module natively first (``python arm64_parity.py
--write REF.npz``): it builds the fixed inputs, runs the bundle's emotion model
and face detector on the host and stores inputs and outputs. The emulated
pytest (`test_arm64_parity.py`) then runs the same steps on aarch64 from the
stored inputs and compares with `compare`.

The inputs come from files shipped inside scikit-image (``lfw_subset.npy``:
the 100 25x25 LFW faces; ``astronaut.png``, ``camera.png``, ``chelsea.png``) when it is
installed on the host, else from deterministic drawn faces; the repository
holds no third-party images. The emulated side needs neither: every input
travels in the reference file.

Three comparisons, each on identical inputs so a difference is the platform's:

* preprocessing: the contract's `prepare_face` (OpenCV resize) gives the same
  48x48 face bytes (within `CROP_TOL` grey levels);
* emotion model: the host's 48x48 faces -> int8 model -> probabilities: same
  top-1, max absolute probability difference <= `PROB_TOL` (end to end from the
  source images through each platform's own `prepare_face` is reported too);
* detector (BlazeFace, float): letterboxed canvases -> 896 scores: max score
  difference <= `SCORE_TOL`, same best anchor, its box within `BOX_TOL` pixels;
  then the chain detector box -> `crop_face` -> emotion model, end to end;
* YuNet (the bundle's default detector, OpenCV DNN, float) on the same scenes
  at their own size: the same faces (paired by IoU), scores within
  `YUNET_SCORE_TOL`, boxes and landmarks within `YUNET_BOX_TOL` pixels; and
  its best box -> `crop_face` -> emotion model. Skipped for bundles without YuNet.

A top-1 is only demanded where the host's top-two margin exceeds twice the
tolerance (a near-tie has no platform-independent winner); such faces are
counted as ``ambiguous`` in the report. This module needs only numpy, OpenCV
and fer_edge, so it imports on the emulated side.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

#: Largest accepted |p_x86 - p_arm| of one class probability (the int8 output's step is 1/256).
PROB_TOL = 2.0 / 256.0
#: Largest accepted |score_x86 - score_arm| of one BlazeFace anchor (sigmoid of a float output).
SCORE_TOL = 1e-3
#: Largest accepted box-corner difference, in pixels of the source image.
BOX_TOL = 1.0
#: Largest accepted grey-level difference of a preprocessed 48x48 face. OpenCV's uint8 INTER_LINEAR
#: (what `resize_face` uses to enlarge a face smaller than 48 px) is not bit-exact across
#: x86-64 and aarch64 (about a quarter of the pixels differ by 1, a few by 2); INTER_AREA
#: (shrinking) and INTER_LINEAR_EXACT are.
CROP_TOL = 2

#: YuNet through OpenCV's DNN: float32 convolutions whose summation order differs between AVX and NEON.
YUNET_SCORE_TOL = 2e-3
YUNET_BOX_TOL = 1.0
#: YuNet detections kept per scene (best first), and the score they must reach.
YUNET_TOP = 5
YUNET_MIN_SCORE = 0.3

N_FACES = 100
REF_FORMAT = "fer-edge-arm64-parity/1"


# --------------------------------------------------------------------------- fixed inputs


def _drawn_face(rng: np.random.Generator, size: int) -> np.ndarray:
    """A deterministic cartoon face (head, eyes, brows, mouth) on a noisy background."""
    import cv2

    img = rng.integers(30, 90, (size, size)).astype(np.uint8)
    c = size / 2.0
    cv2.ellipse(img, (int(c), int(c)), (int(size * 0.32), int(size * 0.42)), 0, 0, 360, int(rng.integers(150, 210)), -1)
    eye_y, dx = int(c - size * 0.1), int(size * 0.13)
    for sx in (-1, 1):
        cv2.circle(img, (int(c + sx * dx), eye_y), max(1, size // 24), 20, -1)
        tilt = int(rng.integers(-3, 4)) * size // 96
        cv2.line(img, (int(c + sx * dx - size // 16), eye_y - size // 12 + sx * tilt),
                 (int(c + sx * dx + size // 16), eye_y - size // 12 - sx * tilt), 40, max(1, size // 48))
    smile = int(rng.integers(-1, 2))
    cv2.ellipse(img, (int(c), int(c + size * 0.2)), (int(size * 0.12), max(1, abs(smile) * size // 20)),
                0, 0 if smile >= 0 else 180, 180 if smile >= 0 else 360, 30, max(1, size // 32))
    return img


def _letterbox(gray: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Scale so the longer side is `size`, top-left aligned on black: what the device's detector feeds."""
    import cv2

    h, w = gray.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((size, size), np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:nh, :nw] = cv2.resize(gray, (nw, nh), interpolation=interp)
    return canvas, scale


def build_inputs() -> tuple[dict[str, np.ndarray], str]:
    """The fixed inputs: small face images for the emotion model and grey scenes for the detector."""
    from fer_edge.preprocess import to_gray

    arrays: dict[str, np.ndarray] = {}
    try:
        import skimage.data as skd

        lfw = skd.lfw_subset()[:100]  # the first 100 of the 200 are faces (25x25)
        faces = np.clip(np.round(lfw * 255.0), 0, 255).astype(np.uint8)
        arrays["faces_src"] = np.concatenate([faces, faces[:, :, ::-1]])[:N_FACES]  # mirrored past 100
        astronaut = to_gray(np.ascontiguousarray(skd.astronaut()[:, :, ::-1]))
        camera = skd.camera()
        scenes = [
            astronaut,
            np.ascontiguousarray(astronaut[:, ::-1]),
            np.ascontiguousarray(astronaut[0:256, 64:320]),
            camera,
            np.ascontiguousarray(camera[0:256, 128:384]),
            to_gray(np.ascontiguousarray(skd.chelsea()[:, :, ::-1])),  # a cat: scored, not a face
        ]
        source = "scikit-image " + getattr(sys.modules.get("skimage"), "__version__", "?") + \
                 " (lfw_subset.npy, astronaut.png, camera.png, chelsea.png)"
    except ImportError:
        rng = np.random.default_rng(20240606)
        arrays["faces_src"] = np.stack([_drawn_face(rng, 48) for _ in range(N_FACES)])
        scenes = []
        for i in range(6):
            scene = rng.integers(20, 120, (240, 320)).astype(np.uint8)
            side = int(rng.integers(60, 180))
            y, x = int(rng.integers(0, 240 - side)), int(rng.integers(0, 320 - side))
            scene[y:y + side, x:x + side] = _drawn_face(rng, side)
            scenes.append(scene)
        source = "drawn faces (scikit-image not installed on the host)"
    for i, scene in enumerate(scenes):
        arrays[f"scene_{i}"] = scene
    return arrays, source


# --------------------------------------------------------------------------- running the models


def _softmax_if_logits(values: np.ndarray) -> np.ndarray:
    if values.min() >= 0 and abs(float(values.sum()) - 1.0) < 0.05:
        return values
    e = np.exp(values - values.max())
    return e / e.sum()


def run_all(arrays: dict[str, np.ndarray], bundle_path: Optional[str] = None,
            ref_faces48: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Run preprocessing, the emotion model and the detector on the fixed inputs; one thread each.

    ``face_probs`` classifies `ref_faces48` (the host's preprocessed faces) when given, so the
    model is compared on byte-identical inputs; ``face_probs_own`` classifies this platform's
    own preprocessing of the same source images (the end-to-end answer).
    """
    from fer_edge.bundle import load_bundle
    from fer_edge.device.runtime import TFLiteModel
    from fer_edge.preprocess import InputEncoder, PreprocessSpec, crop_face, dequantize, prepare_face

    bundle = load_bundle(bundle_path)
    emotion = TFLiteModel(bundle.model_path, threads=1)
    e_in, e_out = emotion.input, emotion.outputs[0]
    e_enc = InputEncoder(bundle.spec, e_in.dtype, e_in.scale, e_in.zero_point)
    e_buf = np.zeros(e_in.shape, e_in.dtype)

    def classify(face48: np.ndarray) -> np.ndarray:
        e_enc.encode(face48, out=e_buf)
        raw = emotion.run(e_buf)[0]
        return _softmax_if_logits(dequantize(raw, e_out.scale, e_out.zero_point).reshape(-1).astype(np.float32))

    out: dict[str, np.ndarray] = {}
    faces48 = np.stack([prepare_face(f, bundle.spec) for f in arrays["faces_src"]])
    out["faces48"] = faces48
    out["face_probs_own"] = np.stack([classify(f) for f in faces48])
    out["face_probs"] = out["face_probs_own"] if ref_faces48 is None else np.stack([classify(f) for f in ref_faces48])

    if bundle.detector_path is None:
        raise RuntimeError(f"{bundle.root}: the bundle has no detector")
    det = TFLiteModel(bundle.detector_path, threads=1)
    size = det.input.shape[1]
    names = [o.name for o in det.outputs]
    reg_pos = next(i for i, n in enumerate(names) if "regressors" in n) if any("regressors" in n for n in names) \
        else int(np.argmax([o.shape[-1] for o in det.outputs]))
    cls_pos = 1 - reg_pos
    anchors = _anchors(size, det.outputs[reg_pos].shape[1])
    d_enc = InputEncoder(PreprocessSpec(size=size, crop_margin=0.0, scale=2.0 / 255.0, offset=-1.0),
                         det.input.dtype, det.input.scale, det.input.zero_point)
    d_buf = np.zeros(det.input.shape, det.input.dtype)
    scores, boxes, tops, chain_faces, chain_probs = [], [], [], [], []
    scene_keys = sorted((k for k in arrays if k.startswith("scene_")), key=lambda k: int(k.split("_")[1]))
    for key in scene_keys:
        canvas, scale = _letterbox(arrays[key], size)
        d_buf[0] = d_enc.encode(canvas)[:, :, None]  # grey replicated into the 3 channels, as on the device
        outs = det.run(d_buf)
        ci, ri = det.outputs[cls_pos], det.outputs[reg_pos]
        logits = dequantize(outs[cls_pos], ci.scale, ci.zero_point).reshape(-1)
        s = (1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))).astype(np.float32)
        reg = dequantize(outs[reg_pos], ri.scale, ri.zero_point)[0]
        top = int(np.argmax(s))
        cx, cy = reg[top, 0] + anchors[top, 0] * size, reg[top, 1] + anchors[top, 1] * size
        w, h = reg[top, 2], reg[top, 3]
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64) / scale  # source pixels
        face = crop_face(arrays[key], tuple(float(v) for v in box), bundle.spec)
        scores.append(s)
        tops.append(top)
        boxes.append(box)
        chain_faces.append(face)
        chain_probs.append(classify(face))
    out.update(det_scores=np.stack(scores), det_top=np.array(tops), det_box=np.stack(boxes),
               chain_faces48=np.stack(chain_faces), chain_probs=np.stack(chain_probs))
    yunet_path = bundle.detector_file("yunet")
    if yunet_path is not None:
        from fer_edge.device.detect import DetectorOptions, YuNetDetector

        yunet = YuNetDetector(yunet_path, DetectorOptions(min_confidence=YUNET_MIN_SCORE, min_face=1,
                                                          max_faces=YUNET_TOP), threads=1, max_side=0)
        rows = np.zeros((len(scene_keys), YUNET_TOP, 15), np.float64)  # x0 y0 x1 y1 score, 5 landmarks; 0 = none
        y_faces, y_probs = [], []
        for i, key in enumerate(scene_keys):
            found = yunet(arrays[key])
            for j, d in enumerate(found):
                rows[i, j, :5] = (*d.box.as_tuple(), d.score)
                rows[i, j, 5:] = np.array(d.keypoints, np.float64).reshape(-1)
            best = found[0].box.as_tuple() if found else (0.0, 0.0, float(arrays[key].shape[1]), float(arrays[key].shape[0]))
            face = crop_face(arrays[key], best, bundle.spec)
            y_faces.append(face)
            y_probs.append(classify(face))
        out.update(yunet_rows=rows, yunet_chain_faces48=np.stack(y_faces), yunet_chain_probs=np.stack(y_probs))
    return out


def compare_yunet(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    """YuNet's faces on each scene, x86 vs aarch64: paired by IoU, then scores, boxes and landmarks."""
    failures: list[str] = []
    score_diff = box_diff = 0.0
    faces = 0
    for i, (r_rows, g_rows) in enumerate(zip(ref["yunet_rows"], got["yunet_rows"])):
        r_rows, g_rows = r_rows[r_rows[:, 4] > 0], g_rows[g_rows[:, 4] > 0]
        used: set[int] = set()
        for r in r_rows:
            ious = [_iou(r[:4], g[:4]) if j not in used else 0.0 for j, g in enumerate(g_rows)]
            j = int(np.argmax(ious)) if ious else -1
            if j < 0 or ious[j] < 0.5:
                if r[4] > YUNET_MIN_SCORE + YUNET_SCORE_TOL:  # not a face at the threshold's edge
                    failures.append(f"YuNet face {r[:4].round(1).tolist()} (score {r[4]:.3f}) of scene {i} not found")
                continue
            used.add(j)
            faces += 1
            score_diff = max(score_diff, abs(float(r[4] - g_rows[j][4])))
            box_diff = max(box_diff, float(np.abs(r[:4] - g_rows[j][:4]).max()), float(np.abs(r[5:] - g_rows[j][5:]).max()))
        for j, g in enumerate(g_rows):
            if j not in used and g[4] > YUNET_MIN_SCORE + YUNET_SCORE_TOL:
                failures.append(f"YuNet face {g[:4].round(1).tolist()} (score {g[4]:.3f}) of scene {i} only on aarch64")
    if score_diff > YUNET_SCORE_TOL:
        failures.append(f"YuNet scores differ by {score_diff:.5f} (> {YUNET_SCORE_TOL})")
    if box_diff > YUNET_BOX_TOL:
        failures.append(f"YuNet boxes/landmarks differ by {box_diff:.3f} px (> {YUNET_BOX_TOL})")
    cc = int(np.abs(ref["yunet_chain_faces48"].astype(int) - got["yunet_chain_faces48"].astype(int)).max())
    cp = float(np.abs(ref["yunet_chain_probs"] - got["yunet_chain_probs"]).max())
    _, _, bad = _top1_agreement(ref["yunet_chain_probs"], got["yunet_chain_probs"], PROB_TOL)
    if cc > 8:
        failures.append(f"YuNet->crop faces differ by {cc} grey levels")
    if cp > 4 * PROB_TOL or bad:
        failures.append(f"YuNet->crop->emotion differs: max prob diff {cp:.5f}, top-1 differs on {bad}")
    report = {"scenes": len(ref["yunet_rows"]), "faces_paired": faces, "max_score_diff": score_diff,
              "max_box_or_landmark_diff_px": box_diff, "chain_crop_max_diff": cc, "chain_max_prob_diff": cp,
              "tolerances": {"score": YUNET_SCORE_TOL, "box_px": YUNET_BOX_TOL}}
    return report, failures


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _anchors(size: int, count: int) -> np.ndarray:
    """BlazeFace SSD anchor centres in [0, 1] (short range: 16x16x2 + 8x8x6; full range: 48x48x1)."""
    layout = {896: ((8, 2), (16, 6)), 2304: ((4, 1),)}.get(count)
    if layout is None:
        raise RuntimeError(f"unknown BlazeFace variant with {count} anchors")
    centres = []
    for stride, per_cell in layout:
        cells = -(-size // stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


# --------------------------------------------------------------------------- reference and comparison


def _facts() -> dict[str, Any]:
    from fer_edge.device.runtime import find_runtime

    try:
        import cv2

        cv = cv2.__version__
    except Exception:  # pragma: no cover
        cv = "?"
    return {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "cv2": cv, "runtime": str(find_runtime())}


def write_reference(path: Path, bundle_path: Optional[str] = None) -> dict[str, Any]:
    """Build the inputs, run them natively, save inputs + outputs + facts in one .npz."""
    from fer_edge.bundle import load_bundle

    arrays, source = build_inputs()
    outputs = run_all(arrays, bundle_path)
    bundle = load_bundle(bundle_path)
    meta = {"format": REF_FORMAT, "source": source, "bundle_checksum": bundle.checksum,
            "classes": list(bundle.classes), **_facts()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays, **{"out_" + k: v for k, v in outputs.items()})
    tmp.replace(path)
    return meta


def load_reference(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != REF_FORMAT:
            raise ValueError(f"{path}: not a {REF_FORMAT} reference")
        arrays = {k: data[k] for k in data.files if k != "meta" and not k.startswith("out_")}
        outputs = {k[4:]: data[k] for k in data.files if k.startswith("out_")}
    return meta, arrays, outputs


def _top1_agreement(ref: np.ndarray, got: np.ndarray, tol: float) -> tuple[int, int, list[int]]:
    """(agreeing, decidable, indices of disagreements on decidable rows)."""
    srt = np.sort(ref, axis=1)
    decidable = (srt[:, -1] - srt[:, -2]) > 2 * tol
    same = ref.argmax(1) == got.argmax(1)
    bad = [int(i) for i in np.flatnonzero(decidable & ~same)]
    return int((same & decidable).sum()), int(decidable.sum()), bad


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    """Compare emulated outputs `got` with host outputs `ref`: (numbers for the report, failures)."""
    failures: list[str] = []
    rep: dict[str, Any] = {"tolerances": {"prob": PROB_TOL, "score": SCORE_TOL, "box_px": BOX_TOL,
                                          "crop_grey": CROP_TOL}}

    crop = int(np.abs(ref["faces48"].astype(int) - got["faces48"].astype(int)).max())
    rep["faces"] = len(ref["faces48"])
    rep["crop_max_diff"] = crop
    rep["crop_pixels_differing"] = float((ref["faces48"] != got["faces48"]).mean())
    if crop > CROP_TOL:
        failures.append(f"prepare_face differs by {crop} grey levels (> {CROP_TOL})")

    dp = float(np.abs(ref["face_probs"] - got["face_probs"]).max())
    agree, decidable, bad = _top1_agreement(ref["face_probs"], got["face_probs"], PROB_TOL)
    rep["emotion"] = {"max_prob_diff": dp, "top1_agree": agree, "decidable": decidable,
                      "ambiguous": len(ref["face_probs"]) - decidable,
                      "top1_equal_all": int((ref["face_probs"].argmax(1) == got["face_probs"].argmax(1)).sum())}
    if dp > PROB_TOL:
        failures.append(f"emotion probabilities differ by {dp:.5f} (> {PROB_TOL:.5f})")
    if bad:
        failures.append(f"emotion top-1 differs on faces {bad}")

    # End to end on each platform's own preprocessing: the resize differences above reach the model.
    dpo = float(np.abs(ref["face_probs_own"] - got["face_probs_own"]).max())
    rep["emotion_end_to_end"] = {"max_prob_diff": dpo, "p95_prob_diff": float(np.percentile(
                                     np.abs(ref["face_probs_own"] - got["face_probs_own"]).max(1), 95)),
                                 "top1_equal_all": int((ref["face_probs_own"].argmax(1)
                                                        == got["face_probs_own"].argmax(1)).sum())}
    # Reported, not asserted: it is fully determined by the two checks above (resize within CROP_TOL,
    # model within PROB_TOL), and an enlarged 25 px face amplifies 2 grey levels to up to ~0.07 of
    # probability and can flip a near-tie. With INTER_LINEAR_EXACT in `resize_face` it becomes exact.

    ds = float(np.abs(ref["det_scores"] - got["det_scores"]).max())
    srt = np.sort(ref["det_scores"], axis=1)
    tie = (srt[:, -1] - srt[:, -2]) <= 2 * SCORE_TOL
    top_same = ref["det_top"] == got["det_top"]
    box = float(np.abs(ref["det_box"] - got["det_box"])[top_same].max(initial=0.0))
    rep["detector"] = {"scenes": len(ref["det_top"]), "max_score_diff": ds, "top1_agree": int(top_same.sum()),
                       "ambiguous": int(tie.sum()), "max_box_diff_px": box,
                       "top_scores": [round(float(v), 4) for v in srt[:, -1]]}
    if ds > SCORE_TOL:
        failures.append(f"detector scores differ by {ds:.6f} (> {SCORE_TOL})")
    if (~top_same & ~tie).any():
        failures.append(f"detector best anchor differs on scenes {np.flatnonzero(~top_same & ~tie).tolist()}")
    if box > BOX_TOL:
        failures.append(f"detector box differs by {box:.3f} px (> {BOX_TOL})")

    chain_ok = top_same  # the end-to-end face is only comparable where the same anchor won
    cc = int(np.abs(ref["chain_faces48"].astype(int) - got["chain_faces48"].astype(int))[chain_ok].max(initial=0))
    cp = float(np.abs(ref["chain_probs"] - got["chain_probs"])[chain_ok].max(initial=0.0))
    agree_c, decidable_c, bad_c = _top1_agreement(ref["chain_probs"][chain_ok], got["chain_probs"][chain_ok], PROB_TOL)
    rep["chain"] = {"crop_max_diff": cc, "crop_pixels_differing": float((ref["chain_faces48"] != got["chain_faces48"]).mean()), "max_prob_diff": cp, "top1_agree": agree_c, "decidable": decidable_c}
    # A box within BOX_TOL can move the crop by a pixel, so the chain's faces get a looser bound.
    if cc > 8:
        failures.append(f"detector->crop faces differ by {cc} grey levels")
    if cp > 4 * PROB_TOL or bad_c:
        failures.append(f"detector->crop->emotion differs: max prob diff {cp:.5f}, top-1 differs on {bad_c}")
    if "yunet_rows" in ref:
        if "yunet_rows" not in got:
            failures.append("the host ran YuNet, this platform did not")
        else:
            rep["yunet"], yunet_failures = compare_yunet(ref, got)
            failures += yunet_failures
    return rep, failures


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, required=True, help="reference .npz to write")
    parser.add_argument("--bundle", default=None, help="bundle folder or archive (default: the shipped one)")
    args = parser.parse_args(argv)
    meta = write_reference(args.write, args.bundle)
    print(f"parity reference: {args.write} ({meta['machine']}, {meta['runtime']}, bundle {meta['bundle_checksum'][:12]}, "
          f"inputs: {meta['source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
