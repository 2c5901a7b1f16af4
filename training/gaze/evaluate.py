"""Evaluate gaze redirection the DeepWarp way: per-pixel MSE between the redirected eye and the
real eye at the target gaze, on held-out pairs, for no warp, the landmark-driven warp and
trained models.

    python -m warpcam.training.gaze.evaluate --synthetic /tmp/warpcam/synth_test.npz \\
        --real /tmp/warpcam/mined_eval.npz \\
        --model synthetic=models/gaze_deepwarp.pt2 --model synth+real=/tmp/warpcam/mixed.pt2 \\
        --out-dir docs --json benchmarks/results/gaze_model_eval.json

Metric: mean over the 41 x 51 x 3 crop of the squared difference on the 0-255 scale (DeepWarp,
Sec. 5: "mean squared error per pixel"), averaged over pairs; reported overall and per bin of
the redirection angle ``sqrt(dpitch^2 + dyaw^2)``. Methods:

- ``identity``: the input eye unchanged;
- ``landmark warp``: :func:`warpcam.core.eyewarp.iris_shift_flow` on the source's landmarks with
  the eyeball model's shift (:func:`warpcam.core.eyes.gaze_shift_px`) and the default lid
  follow, plus its sclera palette mix, sampled in the crop (the pipeline applies it at frame
  resolution);
- each ``--model NAME=FILE.pt2``: loaded with :func:`warpcam.realtime.gaze_model.load_gaze_model`
  (the exported artifact, not the training code) and applied in the crop.

Writes a markdown table (stdout and ``OUT_DIR/gaze_model_eval.md``), the plot
``OUT_DIR/gaze_model_error_vs_angle.png`` and, with ``--crops``, a before/after sheet.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from warpcam.core.eyes import ANCHOR_INDEX, gaze_shift_px
from warpcam.core.eyewarp import iris_shift_flow, sclera_colour
from warpcam.realtime.gaze_model import load_gaze_model

BINS = [0, 5, 10, 15, 20, 30]


def load_pairs(path, limit=None, seed=0) -> dict:
    """Stacked pairs (``src``, ``tgt`` uint8 RGB, ``angle``, ``landmarks``, ``iris_d``) from a
    renderer ``.npz`` (all pairs of every group) or a stored-pairs ``.npz``."""
    from warpcam.training.gaze.data import StoredPairs, SyntheticPairs

    with np.load(path) as z:
        synthetic = "images" in z.files
    ds = SyntheticPairs(path) if synthetic else StoredPairs(path)
    idx = np.arange(len(ds))
    if limit is not None and len(ds) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), limit, replace=False))
    items = [ds[int(i)] for i in idx]
    return {k: np.stack([np.asarray(it[k]) for it in items])
            for k in ("src", "tgt", "angle", "landmarks", "iris_d")}


def _remap(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def landmark_warp(src: np.ndarray, angle, landmarks, iris_d: float,
                  lid_follow=(1.0, 0.35)) -> np.ndarray:
    """The landmark-driven warp of one crop (float32 RGB 0-255)."""
    h, w = src.shape[:2]
    upper, lower, iris_c = landmarks[:9], landmarks[9:18], landmarks[18]
    shift = gaze_shift_px(float(angle[0]), float(angle[1]), float(iris_d))
    r = 0.5 * float(iris_d)
    ew = iris_shift_flow(h, w, upper, lower, iris_c, r, shift, lid_follow)
    out = _remap(src, ew.flow)
    if ew.reveal.max() > 0.05:
        bgr = np.ascontiguousarray(src[..., ::-1])
        col = sclera_colour(bgr, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (h, w), ew.mask, iris_c, r)
        if col is not None:
            wts = np.clip(ew.reveal * 0.9, 0, 1)[..., None]
            out = (1 - wts) * out + wts * (col[::-1] * 0.95)
    return out.astype(np.float32)


def model_outputs(model, pairs: dict, batch: int = 64) -> np.ndarray:
    """Redirected crops (float32 RGB 0-255) of a loaded gaze model."""
    outs = []
    for s in range(0, len(pairs["src"]), batch):
        src = pairs["src"][s:s + batch].astype(np.float32) / 255.0
        x = np.ascontiguousarray(src.transpose(0, 3, 1, 2))
        flow, wts, pal = model(x, pairs["angle"][s:s + batch],
                               pairs["landmarks"][s:s + batch][:, list(ANCHOR_INDEX)])
        for i in range(len(src)):
            o = _remap(src[i], flow[i])
            o = (1 - wts[i][..., None]) * o + wts[i][..., None] * pal
            outs.append(o * 255.0)
    return np.stack(outs).astype(np.float32)


def mse_per_pair(out: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    return ((out.astype(np.float32) - tgt.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))


def evaluate_set(pairs: dict, models: dict) -> dict:
    """``{method: {"mse", "per_pair"}}`` on one pair set."""
    res = {}
    res["identity"] = mse_per_pair(pairs["src"], pairs["tgt"])
    lw = np.stack([landmark_warp(s, a, l, d) for s, a, l, d in
                   zip(pairs["src"], pairs["angle"], pairs["landmarks"], pairs["iris_d"])])
    res["landmark warp"] = mse_per_pair(lw, pairs["tgt"])
    for name, m in models.items():
        res[name] = mse_per_pair(model_outputs(m, pairs), pairs["tgt"])
    return res


def binned(per_pair: np.ndarray, mag: np.ndarray) -> list:
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (mag >= lo) & (mag < hi)
        out.append(float(per_pair[sel].mean()) if sel.any() else float("nan"))
    return out


def table(results: dict) -> str:
    sets = list(results)
    methods = list(next(iter(results.values()))["methods"])
    lines = ["| method | " + " | ".join(f"{s} (n={results[s]['n']})" for s in sets) + " |",
             "| --- |" + " ---: |" * len(sets)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{results[s]['methods'][m]['mse']:.1f}"
                                             for s in sets) + " |")
    return "\n".join(lines)


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8), squeeze=False)
    centres = [0.5 * (a + b) for a, b in zip(BINS[:-1], BINS[1:])]
    for ax, (name, r) in zip(axes[0], results.items()):
        for m, v in r["methods"].items():
            ax.plot(centres, v["by_angle"], marker="o", label=m)
        ax.set_title(f"{name} pairs (n={r['n']})")
        ax.set_xlabel("redirection angle (degrees)")
        ax.set_ylabel("MSE per pixel (0-255 scale)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def crops_sheet(pairs: dict, models: dict, path, n: int = 6, seed: int = 0) -> None:
    """Rows: input, landmark warp, each model, real target (RGB crops scaled x3)."""
    rng = np.random.default_rng(seed)
    mag = np.hypot(pairs["angle"][:, 0], pairs["angle"][:, 1])
    cand = np.nonzero(mag > 8)[0]
    idx = rng.choice(cand if len(cand) >= n else np.arange(len(mag)), n, replace=False)
    sub = {k: v[idx] for k, v in pairs.items()}
    rows = [sub["src"].astype(np.float32),
            np.stack([landmark_warp(s, a, l, d) for s, a, l, d in
                      zip(sub["src"], sub["angle"], sub["landmarks"], sub["iris_d"])])]
    rows += [model_outputs(m, sub) for m in models.values()]
    rows.append(sub["tgt"].astype(np.float32))
    grid = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
    grid = cv2.resize(np.clip(grid, 0, 255).astype(np.uint8), None, fx=3, fy=3,
                      interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), grid[..., ::-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description="DeepWarp metric (MSE per pixel, 0-255) on held-out "
                                 "pairs: identity vs landmark warp vs models.")
    ap.add_argument("--synthetic", help="held-out renders (.npz from warpcam.training.gaze.render)")
    ap.add_argument("--real", help="held-out mined pairs (.npz from warpcam.training.gaze.mine)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FILE",
                    help="exported model(s) to compare (repeatable)")
    ap.add_argument("--limit", type=int, default=3000, help="most pairs per set")
    ap.add_argument("--out-dir", default="docs", help="where the plot and the table go")
    ap.add_argument("--crops", action="store_true",
                    help="also write gaze_model_crops_synthetic.png (synthetic pairs only: "
                         "real evaluation material stays out of the repository)")
    ap.add_argument("--json", default=None, help="write the numbers here")
    a = ap.parse_args(argv)
    models = {}
    for spec in a.model:
        name, _, path = spec.partition("=")
        if not path:
            name, path = Path(spec).stem, spec
        models[name] = load_gaze_model(path, device="cpu", threads=None)
    sets = {}
    if a.synthetic:
        sets["synthetic"] = load_pairs(a.synthetic, a.limit)
    if a.real:
        sets["real"] = load_pairs(a.real, a.limit)
    if not sets:
        raise SystemExit("give --synthetic and/or --real pairs")
    results = {}
    for name, pairs in sets.items():
        mag = np.hypot(pairs["angle"][:, 0], pairs["angle"][:, 1])
        res = evaluate_set(pairs, models)
        results[name] = dict(n=int(len(mag)), angle_median=float(np.median(mag)), methods={
            m: dict(mse=float(v.mean()), by_angle=binned(v, mag)) for m, v in res.items()})
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = table(results)
    bins = ", ".join(f"{lo}-{hi}" for lo, hi in zip(BINS[:-1], BINS[1:]))
    md_full = (md + "\n\nMSE per pixel on the 0-255 scale (lower is better). By angle bin ("
               + bins + " deg):\n\n")
    for name, r in results.items():
        md_full += f"- {name}: " + "; ".join(
            f"{m} " + "/".join("-" if np.isnan(x) else f"{x:.0f}" for x in v["by_angle"])
            for m, v in r["methods"].items()) + "\n"
    print(md_full)
    (out_dir / "gaze_model_eval.md").write_text(md_full)
    plot(results, out_dir / "gaze_model_error_vs_angle.png")
    if a.crops and "synthetic" in sets:
        crops_sheet(sets["synthetic"], models, out_dir / "gaze_model_crops_synthetic.png")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
