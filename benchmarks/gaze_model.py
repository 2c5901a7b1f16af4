"""Cost and effect of the model-driven gaze redirection (DeepWarp network).

    python -m benchmarks.gaze_model [--model models/gaze_deepwarp.pt2] [--threads 1]
        [--retrack] [--video ../shared/data/real/videos/looks_down_blinks_512.mp4] [--pitch 10]
        [--json benchmarks/results/gaze_model.json]

1. **Network cost**: one call for two eyes (a batch of 2 crops of 41 x 51, the exported program
   through torch on the CPU, ``--threads`` intra-op threads: 1 is what the pipeline uses), p50 and
   p99 over ``--iters`` calls after a warm-up; also the whole effect per frame (crop, network,
   WarpJobs) on the astronaut photo with the field cache off.
2. **Re-track** (``--retrack``): the measure of ``benchmarks.gaze_retrack`` with the model-driven
   effect: run the pipeline with ``--pitch`` degrees, re-track input and output per image, and
   compare the iris-centre motion with the displacement the eyeball model asks for (ratio,
   median over open-eye frames); the landmark-driven warp is measured the same way beside it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.gaze_retrack import DEFAULT_VIDEO, _ratios, _summary

from benchmarks import write_json


def network_cost(model, iters: int = 500) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 41, 51), dtype=np.float32)
    a = np.array([[10.0, 0.0], [10.0, 0.0]], np.float32)
    anc = rng.random((2, 7, 2), dtype=np.float32) * 40
    for _ in range(30):
        model(x, a, anc)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model(x, a, anc)
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return dict(p50_ms=float(np.percentile(ts, 50)), p99_ms=float(np.percentile(ts, 99)),
                mean_ms=float(ts.mean()), iters=iters)


def effect_cost(model, iters: int = 200) -> dict:
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects.gaze import GazeEffect
    from warpcam.realtime.effects.gaze_model import ModelEyeWarp
    from warpcam.realtime.tracker import FaceTracker
    from tests.realdata import astronaut_bgr

    img = astronaut_bgr()
    with FaceTracker(max_faces=1, static_images=True) as tr:
        faces = tr.track(img)
    eff = GazeEffect(GazeSettings(pitch_deg=10.0), ModelEyeWarp(model, cache=False))
    for _ in range(20):
        eff.jobs(img, faces)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        eff.jobs(img, faces)
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return dict(p50_ms=float(np.percentile(ts, 50)), p99_ms=float(np.percentile(ts, 99)),
                iters=iters)


def retrack(model, video: str, pitch: float, yaw: float = 0.0) -> dict:
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.io import VideoFileSource
    from warpcam.realtime.tracker import FaceTracker

    with VideoFileSource(video) as src:
        frames = list(src)
    imgs = [f.image.copy() for f in frames]

    def run(gm):
        outs, requests = [], []
        effects = build_effects(gaze=GazeSettings(pitch_deg=pitch, yaw_deg=yaw),
                                options={"gaze": {"model": gm}} if gm is not None else None)
        with FaceTracker(max_faces=1) as tr:
            pipe = Pipeline(tr, CpuCompositor(), effects)
            for fr, im in zip(frames, imgs):
                fr.image = im.copy()
                out, _, jobs = pipe.process(fr)
                outs.append(out)
                requests.append({(0 if j.kind == "eye_right" else 1): np.asarray(j.meta["iris_shift_px"])
                                 for j in jobs if j.kind.startswith("eye")})
        return outs, requests

    def track_all(images):
        with FaceTracker(max_faces=1, static_images=True) as t:
            return [(f[0] if f else None) for f in (t.track(im) for im in images)]

    before = track_all(imgs)
    res = {}
    for name, gm in (("model", model), ("landmark warp", None)):
        outs, req = run(gm)
        res[name] = _summary(_ratios(before, track_all(outs), req))
        asked = [np.hypot(*d) for r in req for d in r.values()]
        res[name]["asked_px_median"] = float(np.median(asked)) if asked else 0.0
    return res


def astronaut_figure(model, path) -> None:
    """Before/after eye close-ups on the astronaut photo (public domain): original, landmark
    warp and model at pitch +10, model at pitch -10 and yaw +10 (subject's left)."""
    import cv2

    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.tracker import FaceTracker
    from warpcam.core.types import Frame
    from tests.realdata import astronaut_bgr

    img = astronaut_bgr()
    cols = [("original", None, None), ("landmark +10 up", dict(pitch_deg=10), None),
            ("model +10 up", dict(pitch_deg=10), model), ("model -10 down", dict(pitch_deg=-10), model),
            ("model +10 yaw", dict(yaw_deg=10), model)]
    tiles = []
    with FaceTracker(max_faces=1, static_images=True) as tr:
        face = tr.track(img)[0]
        pts = face.landmarks
        x0, x1 = int(pts[[33, 263], 0].min()) - 12, int(pts[[33, 263], 0].max()) + 12
        yc = int(pts[[33, 133, 263, 362], 1].mean())
        y0, y1 = yc - 22, yc + 18
        for name, kw, gm in cols:
            if kw is None:
                out = img
            else:
                pipe = Pipeline(tr, CpuCompositor(), build_effects(
                    gaze=GazeSettings(**kw),
                    options={"gaze": {"model": gm}} if gm is not None else None))
                out, _, _ = pipe.process(Frame(img.copy(), 0))
            tile = cv2.resize(out[y0:y1, x0:x1], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
            cv2.putText(tile, name, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2)
            tiles.append(tile)
    cv2.imwrite(str(path), np.concatenate(tiles, 0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="gaze model (default: the committed one)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--retrack", action="store_true", help="also run the re-track measure")
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--pitch", type=float, default=10.0)
    ap.add_argument("--json", default="benchmarks/results/gaze_model.json")
    ap.add_argument("--figure", default=None, metavar="PNG",
                    help="write astronaut before/after eye close-ups here")
    a = ap.parse_args(argv)

    import torch
    from warpcam.realtime.gaze_model import load_gaze_model

    model = load_gaze_model(a.model, device="cpu", threads=a.threads)
    res = dict(model=str(model.path), threads=torch.get_num_threads(),
               network_two_eyes=network_cost(model, a.iters), effect_per_frame=effect_cost(model))
    n, e = res["network_two_eyes"], res["effect_per_frame"]
    print(f"network, two eyes ({res['threads']} thread): p50 {n['p50_ms']:.2f} ms, "
          f"p99 {n['p99_ms']:.2f} ms; whole effect per frame: p50 {e['p50_ms']:.2f} ms")
    if a.retrack:
        res["retrack"] = dict(video=a.video, pitch_deg=a.pitch, **retrack(model, a.video, a.pitch))
        print(f"re-track, {Path(a.video).name}, pitch {a.pitch:+.0f} deg:")
        print(f"{'edit':16s} {'n':>5s} {'median':>7s} {'p10':>6s} {'>=0.75':>7s} {'>=0.5':>6s}")
        for name in ("model", "landmark warp"):
            s = res["retrack"][name]
            print(f"{name:16s} {s['n']:5d} {s['median']:7.2f} {s['p10']:6.2f} "
                  f"{s['frac_ge_075']:7.2f} {s['frac_ge_05']:6.2f}")
    if a.figure:
        astronaut_figure(model, a.figure)
        print(f"wrote {a.figure}")
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
