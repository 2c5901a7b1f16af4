"""KeepSmiling (``--keep-smiling``, seed 003) on a group photo of held-out non-smiling faces,
and its cost per face on this CPU.

    python -m benchmarks.keepsmiling [--model models/keepsmiling_split.pt2] [--faces 6]
        [--groups 3] [--split test|val] [--sheet /work/data/keepsmiling/group.png]
        [--json benchmarks/results/keepsmiling.json]

``--split val`` runs the same on the validation split's faces: the effect's constants
(translation gain, mask, lift) were chosen there, and the test split's figures are reported.

1. **Group photos** (:func:`heldout_group`): CelebA photos of the face data set's *test* split
   (``/work/data/faces``, never used for training or for the translation ``t``) that CelebA
   labels not smiling, whose AU smile score is below 0.3 and head within 10 degrees of frontal;
   each upscaled 3x (bicubic: CelebA here is 89 x 109) and set side by side on a grey canvas.
2. **Edit** (:func:`edit_photo`): the live path for a still image (static FaceMesh, the
   ``keep_smiling`` effect, the CPU compositor) at ``--strength``.
3. **Measures per face**: the AU estimator's smile score before and after (each face tile
   re-tracked on its own, population neutral), the dlib identity distance between the tile
   before and after (``benchmarks.expression_eval``'s embedding; 0.6 is dlib's same-person
   threshold), and whether every pixel outside the jobs' mouth ellipses kept its bytes; then
   the output is run through KeepSmiling again and the changed pixels counted (0 when every
   face now scores as smiling).
4. **Cost per face**: the effect (crops, gate, network, job) plus the composite for the group
   photo, per face, p50 / p99 ms, the network run every call (the cache cleared).
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import List

import cv2
import numpy as np
import torch

from benchmarks import write_json

ROOT = Path(__file__).resolve().parents[1]
FACES = Path("/work/data/faces")
CELEBA = ROOT / ".." / "shared" / "data" / "train" / "celeba" / "images"


def heldout_rows(root=FACES, max_smile: float = 0.3, max_yaw: float = 10.0,
                 split: str = "test") -> List[dict]:
    """Index rows of held-out (test split) non-smiling frontal CelebA faces (module docstring);
    ``split="val"``: the validation split's, on which the effect's constants were chosen."""
    with open(Path(root) / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r["set"] == "celeba" and r["split"] == split
            and r["found"] == "1" and r.get("Smiling") == "0" and r.get("est_smile")
            and float(r["est_smile"]) < max_smile and abs(float(r["yaw"])) < max_yaw]


def heldout_group(rows: List[dict], n: int = 6, start: int = 0, scale: float = 3.0,
                  gap: int = 24, cols: int = 3, celeba=CELEBA) -> tuple:
    """``(group image BGR uint8, tiles [(x0, y0, x1, y1)], ids)``: ``n`` photos of ``rows``
    from ``start``, upscaled by ``scale``, in rows of ``cols`` on a grey canvas (FaceMesh's
    short-range detector misses faces under about a sixth of the image width, so a long row
    of faces is not found)."""
    imgs, ids = [], []
    for r in rows[start:start + n]:
        im = cv2.imread(str(Path(celeba) / Path(r["source"]).name), cv2.IMREAD_COLOR)
        if im is None:
            raise FileNotFoundError(f"cannot read {Path(celeba) / r['source']}")
        imgs.append(cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))
        ids.append(r["id"])
    th, tw = max(i.shape[0] for i in imgs), max(i.shape[1] for i in imgs)
    nr = (len(imgs) + cols - 1) // cols
    canvas = np.full((nr * (th + gap) + gap, cols * (tw + gap) + gap, 3), 128, np.uint8)
    tiles = []
    for k, im in enumerate(imgs):
        x, y = gap + (k % cols) * (tw + gap), gap + (k // cols) * (th + gap)
        canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
        tiles.append((x, y, x + im.shape[1], y + im.shape[0]))
    return canvas, tiles, ids


def edit_photo(image: np.ndarray, model, strength: float = 1.0, threshold: float = 0.5,
               max_faces: int = 16, tracker=None) -> tuple:
    """``(output, jobs, effect)``: one still image through the tracker, the keep_smiling
    effect and the CPU compositor."""
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.keep_smiling import KeepSmilingEffect, KeepSmilingSettings
    from warpcam.realtime.tracker import FaceTracker

    own = tracker is None
    if own:
        tracker = FaceTracker(max_faces=max_faces, static_images=True)
    try:
        faces = tracker.track(image)
    finally:
        if own:
            tracker.close()
    eff = KeepSmilingEffect(KeepSmilingSettings(enabled=True, strength=strength,
                                                threshold=threshold), model)
    jobs = eff.jobs(image, faces, 0.0)
    out = CpuCompositor().composite(image, jobs) if jobs else image.copy()
    return out, jobs, eff, faces


def mouth_support(shape, jobs) -> np.ndarray:
    """Bool ``H x W``: the frame pixels where some job's alpha is above 0."""
    m = np.zeros(shape[:2], bool)
    for j in jobs:
        ox, oy = int(round(j.crop_to_frame[0, 2])), int(round(j.crop_to_frame[1, 2]))
        h, w = j.alpha.shape
        m[oy:oy + h, ox:ox + w] |= j.alpha > 0
    return m


def tile_scores(image: np.ndarray, tiles, embedder=None) -> List[dict]:
    """Per tile: ``smile`` (AU estimator, None without a face) and ``embedding``."""
    from warpcam.realtime.au import estimate_image
    out = []
    for (x0, y0, x1, y1) in tiles:
        t = np.ascontiguousarray(image[y0:y1, x0:x1])
        res = estimate_image(t, max_faces=1)
        out.append(dict(smile=float(res[0].smile) if res else None,
                        au12=float(res[0].intensities["AU12"]) if res else None,
                        embedding=embedder.embed(t) if embedder is not None else None))
    return out


def evaluate_group(image, tiles, model, strength=1.0, embedder=None) -> dict:
    """The measures of the module docstring for one group photo."""
    from benchmarks.expression_eval import distance
    out, jobs, eff, faces = edit_photo(image, model, strength)
    support = mouth_support(image.shape, jobs)
    changed = np.any(out != image, axis=2)
    before, after = tile_scores(image, tiles, embedder), tile_scores(out, tiles, embedder)
    again, jobs2, eff2, _ = edit_photo(out, model, strength)
    per_face = []
    for b, a in zip(before, after):
        per_face.append(dict(smile_before=b["smile"], smile_after=a["smile"],
                             au12_before=b["au12"], au12_after=a["au12"],
                             identity=distance(b["embedding"], a["embedding"])))
    return dict(faces_tracked=len(faces), faces_edited=len(jobs), per_face=per_face,
                outside_mouths_changed_px=int((changed & ~support).sum()),
                inside_mouths_changed_px=int((changed & support).sum()),
                lifts=[round(float(d["lift"]), 3) for d in eff.last],
                second_run_edited=len(jobs2),
                second_run_changed_px=int(np.any(again != out, axis=2).sum()),
                second_run_smiles=[round(d["smile"], 3) for d in eff2.last]), out, again


def cost_per_face(image, model, iters: int = 20) -> dict:
    """Effect + composite per face, p50 / p99 ms, network every call."""
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.keep_smiling import KeepSmilingEffect, KeepSmilingSettings
    from warpcam.realtime.tracker import FaceTracker
    with FaceTracker(max_faces=16, static_images=True) as tr:
        faces = tr.track(image)
    eff = KeepSmilingEffect(KeepSmilingSettings(enabled=True, strength=1.0, threshold=1.0),
                            model)
    comp = CpuCompositor()
    ts, net = [], []
    for i in range(iters + 3):
        eff.tracks.clear()  # no reuse: the network runs every call
        t0 = time.perf_counter()
        jobs = eff.jobs(image, faces, 0.0)
        comp.composite(image, jobs)
        t1 = time.perf_counter()
        x = np.random.rand(len(faces), 3, 64, 64).astype(np.float32)
        t2 = time.perf_counter()
        model(x, np.ones(len(faces)))
        t3 = time.perf_counter()
        if i >= 3:
            ts.append((t1 - t0) * 1000 / len(faces))
            net.append((t3 - t2) * 1000 / len(faces))
    return dict(faces=len(faces), frame=f"{image.shape[1]}x{image.shape[0]}",
                per_face_p50_ms=round(float(np.percentile(ts, 50)), 2),
                per_face_p99_ms=round(float(np.percentile(ts, 99)), 2),
                network_per_face_p50_ms=round(float(np.percentile(net, 50)), 2),
                threads=torch.get_num_threads(), iters=iters,
                load_average_1min=round(os.getloadavg()[0], 2))


def astronaut_sheet(model, out_path, threshold: float = 0.8) -> dict:
    """The astronaut (public domain; she smiles already): input, ``--strength -1`` (the gate
    edits only smiling faces: her smile is reduced), then ``--keep-smiling`` (+1) on that
    output with ``--keep-smiling-threshold`` ``threshold`` (her reduced smile still scores
    above the default 0.5, where the gate would leave her alone), with the mouth regions
    enlarged below; the AU smile score of each."""
    from tests.realdata import astronaut_bgr
    from warpcam.realtime.au import estimate_image
    img = astronaut_bgr()
    off, jobs, _, _ = edit_photo(img, model, -1.0)
    on, jobs_on, _, _ = edit_photo(off, model, 1.0, threshold=threshold)
    cols = [img, off, on]
    info = dict(smile_input=float(estimate_image(img, 1)[0].smile),
                smile_after_minus1=float(estimate_image(off, 1)[0].smile),
                smile_after_minus1_then_plus1=float(estimate_image(on, 1)[0].smile),
                edited=[len(jobs), len(jobs_on)], threshold_of_plus1=threshold,
                smile_after_minus1_then_plus1_default_gate_edits=len(
                    edit_photo(off, model, 1.0)[1]))
    x0, y0, x1, y1 = (int(v) for v in jobs[0].meta["box"])
    zoom = [cv2.resize(c[y0:y1, x0:x1], (512, int(512 * (y1 - y0) / (x1 - x0))),
                       interpolation=cv2.INTER_CUBIC) for c in cols]
    sheet = np.vstack([np.hstack(cols), np.hstack(zoom)])
    labels = [f"input (smile {info['smile_input']:.2f})",
              f"--strength -1 ({info['smile_after_minus1']:.2f})",
              f"then --keep-smiling, threshold {threshold:g} "
              f"({info['smile_after_minus1_then_plus1']:.2f})"]
    for i, lab in enumerate(labels):
        cv2.putText(sheet, lab, (i * 512 + 10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 2, cv2.LINE_AA)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), cv2.resize(sheet, None, fx=0.75, fy=0.75,
                                          interpolation=cv2.INTER_AREA))
    return info


def gans_sheet(split, out_path, simple=None, complex_=None, tile: int = 96) -> None:
    """The astronaut's 64 px mouth crop through the three set-ups: SplitGAN
    ``De(E(x) + s t)`` for s = -4, -2, 0, 2, 4 (0: the reconstruction), ComplexGAN ``G(x, 0)`` and
    ``G(x, 1)``, and eight SimpleGAN smiles from fixed noise (``.pt2`` paths of the latter)."""
    from tests.realdata import astronaut_bgr
    from warpcam.realtime.effects.keep_smiling import face_mouth_box, network_crops
    from warpcam.realtime.effects.base import FrameCrops
    from warpcam.realtime.runtime import load_model
    from warpcam.realtime.tracker import FaceTracker
    img = astronaut_bgr()
    with FaceTracker(max_faces=1, static_images=True) as tr:
        face = tr.track(img)[0]
    box = face_mouth_box(face.landmarks, img.shape)[0]
    x = network_crops(FrameCrops(None, img), [box], img.shape)
    strengths = [-4.0, -2.0, 0.0, 2.0, 4.0]  # the effect's strength 1 is 4 t
    edit, _ = split(np.repeat(x, len(strengths), 0), np.array(strengths))
    rows = [[x[0]] + list(edit)]
    if complex_:
        rt = load_model(complex_)
        rows.append([x[0]] + [rt(x, np.full((1, 1), v, np.float32))[0][0] for v in (0.0, 1.0)])
    if simple:
        rt = load_model(simple)
        z = np.random.default_rng(0).standard_normal((8, 100)).astype(np.float32)
        rows.append(list(rt(z)[0]))
    width = max(len(r) for r in rows)

    def t(a):
        a = (np.clip(a, 0, 1).transpose(1, 2, 0)[..., ::-1] * 255).round().astype(np.uint8)
        return cv2.resize(a, (tile, tile), interpolation=cv2.INTER_NEAREST)
    blank = np.full((tile, tile, 3), 255, np.uint8)
    sheet = np.vstack([np.hstack([t(a) for a in r] + [blank] * (width - len(r))) for r in rows])
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), sheet)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SplitGAN .pt2 (default: bundled)")
    ap.add_argument("--data", default=str(FACES))
    ap.add_argument("--faces", type=int, default=6, help="faces per group photo")
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--split", default="test", choices=("test", "val"),
                    help="held-out faces of this split (val: where the constants were chosen)")
    ap.add_argument("--sheet", default=None,
                    help="before/after PNG of the first group (CelebA: keep it out of the repo)")
    ap.add_argument("--astronaut", default=None, help="astronaut before/after PNG (docs)")
    ap.add_argument("--gans", default=None, help="the three set-ups on the astronaut's mouth")
    ap.add_argument("--simple", default=None, help="SimpleGAN .pt2 for --gans")
    ap.add_argument("--complex", default=None, help="ComplexGAN .pt2 for --gans")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from benchmarks.expression_eval import load_embedder
    from warpcam.realtime.effects.keep_smiling import load_keepsmiling_model
    model = load_keepsmiling_model(a.model)
    embedder, why = load_embedder()
    if why:
        print(why)
    rows = heldout_rows(a.data, split=a.split)
    groups, first = [], None
    for g in range(a.groups):
        img, tiles, ids = heldout_group(rows, a.faces, start=g * a.faces)
        res, out, again = evaluate_group(img, tiles, model, a.strength, embedder)
        res["ids"] = ids
        groups.append(res)
        if first is None:
            first = (img, out, again)
        print(f"group {g}: tracked {res['faces_tracked']}, edited {res['faces_edited']}, "
              f"outside changed {res['outside_mouths_changed_px']} px, second run edited "
              f"{res['second_run_edited']}")
        for i, f in enumerate(res["per_face"]):
            print(f"  {ids[i]}: smile {f['smile_before']} -> {f['smile_after']}, "
                  f"identity {f['identity']}")
    faces = [f for g in groups for f in g["per_face"]]
    ok = [f for f in faces if f["smile_before"] is not None and f["smile_after"] is not None]
    ids_ = [f["identity"] for f in faces if f["identity"] is not None]
    summary = dict(
        faces=len(faces), measured=len(ok),
        smile_rose=sum(f["smile_after"] > f["smile_before"] for f in ok),
        smile_not_rising=[f"{g['ids'][i]}: {f['smile_before']:.3f} -> {f['smile_after']:.3f}"
                          for g in groups for i, f in enumerate(g["per_face"])
                          if f["smile_before"] is not None and f["smile_after"] is not None
                          and not f["smile_after"] > f["smile_before"]],
        smile_crossed_05=sum(f["smile_after"] >= 0.5 for f in ok),
        smile_before_mean=round(float(np.mean([f["smile_before"] for f in ok])), 3),
        smile_after_mean=round(float(np.mean([f["smile_after"] for f in ok])), 3),
        identity_mean=round(float(np.mean(ids_)), 3) if ids_ else None,
        identity_max=round(float(np.max(ids_)), 3) if ids_ else None,
        outside_changed_px=sum(g["outside_mouths_changed_px"] for g in groups),
        second_run_edited=sum(g["second_run_edited"] for g in groups),
        second_run_changed_px=sum(g["second_run_changed_px"] for g in groups))
    print(summary)
    cost = cost_per_face(first[0], model)
    print(f"cost per face: {cost}")
    if a.sheet:
        Path(a.sheet).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(a.sheet, np.vstack([first[0], first[1], first[2]]))
        print(f"wrote {a.sheet} (rows: input, KeepSmiling, KeepSmiling again)")
    astro = astronaut_sheet(model, a.astronaut) if a.astronaut else None
    if astro:
        print(f"astronaut: {astro}")
    if a.gans:
        gans_sheet(model, a.gans, a.simple, a.complex)
    if a.json:
        from warpcam.realtime.effects import keep_smiling as ks
        constants = {k: getattr(ks, k) for k in (
            "TRANSLATION_GAIN", "MASK_RX", "MASK_RY", "MASK_FEATHER", "LIFT_MAX", "LIFT_STEP",
            "LIFT_FOLLOW", "LIFT_MARGIN", "LIFT_MIN_DET", "LIP_MARGIN")}
        write_json(a.json, dict(summary=summary, groups=groups, cost=cost, astronaut=astro,
                                model=str(model.path), strength=a.strength, split=a.split,
                                constants=constants,
                                identity=embedder.name if embedder else why))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
