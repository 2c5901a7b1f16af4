"""How far the gaze correction moves the iris, as the tracker sees it.

    python -m benchmarks.gaze_retrack [--video ../shared/data/real/videos/looks_down_blinks_512.mp4]
        [--pitch 10] [--json benchmarks/results/gaze_retrack.json]

Runs the pipeline (smoothed tracking, CPU backend) with a fixed gaze redirection, re-runs the
tracker (raw, per image) on the input and the output, and compares the iris-centre motion with
the displacement the eyeball model asked for, on open-eye frames. Also reports two reference
edits measured the same way, which show how the tracker responds to different kinds of motion:

- ``whole eye shifted``: the eye region (lids, corners, iris) translated by the same amount;
- ``iris disc pasted``: only the iris disc translated, everything else fixed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from benchmarks import write_json

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared/data/real/videos/looks_down_blinks_512.mp4"


def _ratios(before, after, requests):
    """Per open eye: measured iris-centre shift along the request / requested shift."""
    from warpcam.core import landmarks as lm

    out = []
    for b, a, req in zip(before, after, requests):
        if b is None or a is None:
            continue
        for k, idx in ((0, lm.RIGHT_IRIS[0]), (1, lm.LEFT_IRIS[0])):
            d = req.get(k)
            if d is None or b.eye_openness[k] < 0.18 or np.hypot(*d) < 0.5:
                continue
            moved = a.landmarks_raw[idx] - b.landmarks_raw[idx]
            out.append(float(moved @ d / (d @ d)))
    return np.array(out)


def _summary(r):
    return dict(n=int(r.size), median=float(np.median(r)), p10=float(np.percentile(r, 10)),
                frac_ge_075=float(np.mean(r >= 0.75)), frac_ge_05=float(np.mean(r >= 0.5)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--pitch", type=float, default=10.0)
    ap.add_argument("--yaw", type=float, default=0.0)
    ap.add_argument("--json", default="benchmarks/results/gaze_retrack.json")
    a = ap.parse_args(argv)

    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.core import landmarks as lm
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.io import VideoFileSource
    from warpcam.realtime.tracker import FaceTracker

    with VideoFileSource(a.video) as src:
        frames = list(src)
    settings = build_effects(gaze=GazeSettings(pitch_deg=a.pitch, yaw_deg=a.yaw))
    outs, requests = [], []
    with FaceTracker(max_faces=1) as tr:
        pipe = Pipeline(tr, CpuCompositor(), settings)
        for fr in frames:
            out, _, jobs = pipe.process(fr)
            outs.append(out)
            requests.append({(0 if j.kind == "eye_right" else 1): np.asarray(j.meta["iris_shift_px"])
                             for j in jobs if j.kind.startswith("eye")})

    def retrack(images):
        with FaceTracker(max_faces=1, static_images=True) as t:
            return [(f[0] if f else None) for f in (t.track(im) for im in images)]

    imgs = [f.image for f in frames]
    before = retrack(imgs)
    after = retrack(outs)
    res = {"video": str(a.video), "pitch_deg": a.pitch, "yaw_deg": a.yaw,
           "warp": _summary(_ratios(before, after, requests))}
    asked = [np.hypot(*d) for r in requests for d in r.values()]
    res["asked_px_median"] = float(np.median(asked)) if asked else 0.0

    # Reference edits on the same frames and requests.
    for name in ("whole eye shifted", "iris disc pasted"):
        edited = []
        for img, face, req in zip(imgs, before, requests):
            o = img.copy()
            if face is not None:
                for k, side in ((0, "right"), (1, "left")):
                    d = req.get(k)
                    if d is None:
                        continue
                    p = face.landmarks_raw
                    M = np.float32([[1, 0, -d[0]], [0, 1, -d[1]]])
                    shifted = cv2.warpAffine(img, M, img.shape[1::-1], flags=cv2.INTER_LINEAR
                                             | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
                    mask = np.zeros(img.shape[:2], np.float32)
                    if name == "whole eye shifted":
                        contour = lm.eye_contour(p, side)
                        c = contour.mean(axis=0)
                        w = np.ptp(contour[:, 0])
                        cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(w), int(0.8 * w)), 0, 0,
                                    360, 1.0, -1)
                        mask = cv2.GaussianBlur(mask, (0, 0), 0.15 * w)
                    else:
                        opening = np.zeros(img.shape[:2], np.uint8)
                        cv2.fillPoly(opening, [np.round(lm.eye_contour(p, side)).astype(np.int32)], 1)
                        ic = p[lm.RIGHT_IRIS[0] if k == 0 else lm.LEFT_IRIS[0]] + d
                        r = 0.55 * face.iris_diameter_px[k]
                        cv2.circle(mask, (int(round(ic[0])), int(round(ic[1]))), int(round(r)), 1.0, -1)
                        mask *= opening
                    o = (mask[..., None] * shifted + (1 - mask[..., None]) * o).astype(np.uint8)
            edited.append(o)
        res[name] = _summary(_ratios(before, retrack(edited), requests))

    print(f"{a.video}: gaze pitch {a.pitch:+.0f} deg, yaw {a.yaw:+.0f} deg; median request "
          f"{res['asked_px_median']:.2f} px")
    print(f"{'edit':22s} {'n':>5s} {'median':>7s} {'p10':>6s} {'>=0.75':>7s} {'>=0.5':>6s}")
    for name in ("warp", "whole eye shifted", "iris disc pasted"):
        s = res[name]
        print(f"{name:22s} {s['n']:5d} {s['median']:7.2f} {s['p10']:6.2f} "
              f"{s['frac_ge_075']:7.2f} {s['frac_ge_05']:6.2f}")
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
