"""The AU editor (seed 002 + GANimation attention, ``models/au_edit.pt2``): per-frame cost,
held-out AU control and identity, the single-AU sheet, and the video checks.

    python -m benchmarks.au_edit --data /work/data/faces [--model FILE] [--json] \\
        [--sheet docs/au_edit_sheet.png]

- **Cost**: the effect's ``jobs`` plus the CPU composite on a 1280 x 720 frame with one face
  (the astronaut, 720 px tall), p50/p99 ms: ``network_every_frame`` (the condition alternates,
  so the network runs each frame) and ``still_face`` (output reused). Tracking not included.
- **Held out** (``--data``: the built face data set's ``test`` split, by person for LFW, by
  video for the video frames, by image for CelebA; no training run saw them): each face (its
  128-px aligned crop upscaled to 256 px, tracked) edited through the live effect with
  ``AUk=+1`` and ``AUk=-1`` for AU4, AU5, AU7, AU12, AU15, AU20; the AU estimator (population
  neutral) on input and output: the mean change of AUk, the share of faces where it moved in the
  requested direction, and the mean absolute change of the other 16 AUs; the dlib identity
  distance (:mod:`benchmarks.expression_eval`) of every edit to its input (target: < 0.5 on at
  least 90 %).
- **Sheet**: rows AU4 ... AU20, columns -1, -0.5, 0, 0.5, 1, 1.25, on held-out faces
  (``--sheet-faces heldout``: pictures derived from the shared data, keep them out of the
  repository, ``../shared/data/real/README.md``) or on the scikit-image astronaut (public
  domain; ``--sheet-faces astronaut``, the README's figure).
- **Video**: ``--au AU12=+1`` on ``mead_w009_neutral_256.mp4`` through the CLI: AU12 per frame of
  input and output (static tracking, population neutral), frame counts, and flicker: the mean
  absolute frame-to-frame change of the edit (output - input) in the face box against the
  input's own frame-to-frame change there; ``--expression-from happy1.png`` on the same clip
  (AU6, AU12); the audio stream kept on ``news_talking_head_512.mp4``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
VIDEOS = REAL / "videos"
EVAL_AUS = ("AU04", "AU05", "AU07", "AU12", "AU15", "AU20")
SHEET_LEVELS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.25)


def _p(a, q):
    return round(float(np.percentile(a, q)), 2)


def frame_cost(model, iters: int = 60) -> dict:
    import dataclasses

    from tests.realdata import astronaut_bgr
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.au_edit import AUEditEffect, AUEditSettings
    from warpcam.realtime.tracker import FaceTracker
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 280:1000] = cv2.resize(astronaut_bgr(), (720, 720), interpolation=cv2.INTER_AREA)
    with FaceTracker(max_faces=1, static_images=True) as tr:
        face = tr.track(frame)[0]
    comp = CpuCompositor()
    out = {}
    for mode in ("network_every_frame", "still_face"):
        eff = AUEditEffect(AUEditSettings(edit="AU12=1"), model, follow=1.0)
        for i in range(5):
            comp.composite(frame, eff.jobs(frame, [face], i / 30))
        ts, calls0 = [], eff.calls
        for i in range(iters):
            if mode == "network_every_frame":
                eff.settings.update(edit="AU12=1" if i % 2 else "AU12=0.9")
            t0 = time.perf_counter()
            comp.composite(frame, eff.jobs(frame, [dataclasses.replace(face)], (5 + i) / 30))
            ts.append((time.perf_counter() - t0) * 1000)
        out[mode] = dict(p50_ms=_p(ts, 50), p99_ms=_p(ts, 99), iters=iters,
                         network_calls=eff.calls - calls0)
    out["frame"] = "1280x720, one face (astronaut, 720 px tall); tracking not included"
    out["threads"] = torch.get_num_threads()
    return out


def _heldout_images(data: Path, limit: int) -> list:
    from warpcam.training.data.index import read_index
    rows = [r for r in read_index(data) if r.get("split") == "test" and r.get("found") == "1"
            and r.get("face_128") and r.get("set") in ("lfw_expressions", "videos", "celeba")]
    by_set = {}
    for r in rows:
        by_set.setdefault(r["set"], []).append(r)
    picked = []
    for s, rs in sorted(by_set.items()):  # an even share of each set, spread over its rows
        k = min(len(rs), limit // len(by_set))
        picked += [rs[i] for i in np.linspace(0, len(rs) - 1, k).astype(int)]
    out = []
    for r in picked:
        im = cv2.imread(str(data / r["face_128"]))
        if im is not None:
            out.append((r["id"], r["set"], cv2.resize(im, (256, 256),
                                                      interpolation=cv2.INTER_CUBIC)))
    return out


def heldout(model, data: Path, limit: int) -> dict:
    from benchmarks.expression_eval import Analyzer, distance, load_embedder
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.au import AU_NAMES
    from warpcam.realtime.effects.au_edit import AUEditEffect, AUEditSettings
    from warpcam.realtime.tracker import FaceTracker
    emb, why = load_embedder()
    an = Analyzer(emb)
    comp = CpuCompositor()
    items = _heldout_images(data, limit)
    ch = {(a, s): [] for a in EVAL_AUS for s in (1, -1)}
    others = {(a, s): [] for a in EVAL_AUS for s in (1, -1)}
    ident, n_faces, sets = [], 0, {}
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for fid, s_name, img in items:
            faces = tr.track(img)
            r0 = an(img)
            if not faces or not r0["success"]:
                continue
            n_faces += 1
            sets[s_name] = sets.get(s_name, 0) + 1
            a0 = np.array([r0.get(f"{a}_r", np.nan) for a in AU_NAMES])
            for a in EVAL_AUS:
                for s in (1, -1):
                    eff = AUEditEffect(AUEditSettings(edit=f"{a}={s:+d}"), model, follow=1.0)
                    out = comp.composite(img, eff.jobs(img, faces, 0.0))
                    r1 = an(out)
                    if not r1["success"]:
                        continue
                    a1 = np.array([r1.get(f"{k}_r", np.nan) for k in AU_NAMES])
                    d = a1 - a0
                    j = AU_NAMES.index(a)
                    ch[(a, s)].append(d[j])
                    others[(a, s)].append(float(np.nanmean(np.abs(np.delete(d, j)))))
                    dist = distance(r0["embedding"], r1["embedding"])
                    if dist is not None:
                        ident.append(dist)
    an.close()
    table = []
    for a in EVAL_AUS:
        for s in (1, -1):
            v = np.array(ch[(a, s)])
            o = np.array(others[(a, s)])
            if not len(v):
                continue
            table.append(dict(au=a, request=s, n=len(v), change_mean=round(float(v.mean()), 3),
                              right_direction=round(float(np.mean(v * s > 0)), 3),
                              others_abs_mean=round(float(o.mean()), 3),
                              target_beats_others=bool(abs(v.mean()) > o.mean()
                                                       and v.mean() * s > 0)))
    ident = np.array(ident)
    return dict(faces=n_faces, sets=sets, table=table,
                identity=dict(n=len(ident), note=why,
                              median=round(float(np.median(ident)), 3) if len(ident) else None,
                              share_below_0_5=round(float(np.mean(ident < 0.5)), 3)
                              if len(ident) else None))


def sheet(model, data: Path, out: Path, n_faces: int = 2, tile: int = 128,
          faces: str = "heldout") -> Path:
    """Rows: AU4, AU5, AU7, AU12, AU15, AU20; columns SHEET_LEVELS; one block per face
    (``faces``: ``"heldout"`` test-split faces, or ``"astronaut"``)."""
    from warpcam.core.geometry import apply_affine
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.au_edit import AUEditEffect, AUEditSettings, aligned_affine
    from warpcam.realtime.tracker import FaceTracker
    comp = CpuCompositor()
    if faces == "astronaut":
        from tests.realdata import astronaut_bgr
        chosen, n_faces = [("astronaut", "astronaut", astronaut_bgr())], 1
    else:
        items = _heldout_images(data, 60)
        chosen = [it for it in items if it[1] == "lfw_expressions"][:1] + \
            [it for it in items if it[1] == "videos"][:1] + \
            [it for it in items if it[1] == "celeba"][:1]
    blocks = []
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for fid, _, img in chosen[:n_faces + 1]:
            faces = tr.track(img)
            if not faces:
                continue
            A = aligned_affine(faces[0].landmarks, 96)
            c = apply_affine(A, np.array([[47.5, 50.0]]))[0]
            side = 1.05 * 96 * float(np.hypot(A[0, 0], A[1, 0]))
            M = np.array([[side / tile, 0, c[0] - side / 2], [0, side / tile, c[1] - side / 2]])
            rows = []
            for a in EVAL_AUS:
                cells = []
                for lv in SHEET_LEVELS:
                    eff = AUEditEffect(AUEditSettings(edit=f"{a}={lv}"), model, follow=1.0)
                    o = comp.composite(img, eff.jobs(img, faces, 0.0))
                    cell = cv2.warpAffine(o, M, (tile, tile), flags=cv2.WARP_INVERSE_MAP
                                          | cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
                    cv2.putText(cell, f"{a} {lv:+g}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                                (255, 255, 255), 1, cv2.LINE_AA)
                    cells.append(cell)
                rows.append(np.hstack(cells))
            blocks.append(np.vstack(rows))
            if len(blocks) == n_faces:
                break
    pad = np.full((blocks[0].shape[0], 8, 3), 255, np.uint8)
    img = blocks[0] if len(blocks) == 1 else np.hstack([blocks[0], pad, *blocks[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {len(blocks)} faces)")
    return out


def _frames(path) -> list:
    import av
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _streams(path) -> list:
    import av
    with av.open(str(path)) as c:
        return [s.type for s in c.streams]


def _cli(args) -> float:
    from warpcam.realtime import cli
    t0 = time.perf_counter()
    rc = cli.main(args)
    if rc not in (0, None):
        raise SystemExit(f"warpcam {' '.join(args)}: exit status {rc}")
    return time.perf_counter() - t0


def video_eval(model_path, tmp: Path, figure=None) -> dict:
    """The video checks (module docstring); ``figure``: a PNG of 4 frames, input above output."""
    from warpcam.realtime.au import AUEstimator
    from warpcam.realtime.tracker import FaceTracker
    tmp.mkdir(parents=True, exist_ok=True)
    src = VIDEOS / "mead_w009_neutral_256.mp4"
    extra = ["--au-model", str(model_path)] if model_path else []
    res = {}
    out = tmp / "au12.mp4"
    secs = _cli(["--input", str(src), "--output", str(out), "--au", "AU12=+1", *extra])
    fin, fout = _frames(src), _frames(out)
    est = AUEstimator(calibrate=False)
    au_in, au_out, boxes = [], [], []
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for a, b in zip(fin, fout):
            fa, fb = tr.track(a), tr.track(b)
            if fa and fb:
                au_in.append(est.estimate(fa[0]).intensities["AU12"])
                au_out.append(est.estimate(fb[0]).intensities["AU12"])
                p = fa[0].landmarks
                boxes.append((p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()))
    d = np.array(au_out) - np.array(au_in)
    b = np.array(boxes)
    x0, y0 = np.floor(b[:, :2].min(0)).astype(int)
    x1, y1 = np.ceil(b[:, 2:].max(0)).astype(int)
    ins = np.stack([f[y0:y1, x0:x1] for f in fin]).astype(np.float32)
    outs = np.stack([f[y0:y1, x0:x1] for f in fout]).astype(np.float32)
    edit = outs - ins
    res["au12_plus1"] = dict(
        frames_in=len(fin), frames_out=len(fout), seconds=round(secs, 1), tracked=len(d),
        au12_in_median=round(float(np.median(au_in)), 3),
        au12_out_median=round(float(np.median(au_out)), 3),
        au12_raised_share=round(float(np.mean(d > 0)), 3),
        edit_change_per_frame=round(float(np.abs(np.diff(edit, axis=0)).mean()), 3),
        input_change_per_frame=round(float(np.abs(np.diff(ins, axis=0)).mean()), 3),
        edit_mean_abs=round(float(np.abs(edit).mean()), 3))
    if figure:
        idx = np.linspace(0, len(fin) - 1, 4).astype(int)
        strip = np.vstack([np.hstack([fin[i] for i in idx]), np.hstack([fout[i] for i in idx])])
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(figure), strip, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {figure}")
    happy = REAL / "images" / "smile_pairs" / "happy1.png"
    out2 = tmp / "from_happy.mp4"
    _cli(["--input", str(src), "--output", str(out2), "--expression-from", str(happy), *extra])
    f2 = _frames(out2)
    vals = {"AU06": ([], []), "AU12": ([], [])}
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for a, bb in zip(fin, f2):
            fa, fb = tr.track(a), tr.track(bb)
            if fa and fb:
                ia, ib = est.estimate(fa[0]).intensities, est.estimate(fb[0]).intensities
                for k in vals:
                    vals[k][0].append(ia[k])
                    vals[k][1].append(ib[k])
    res["expression_from_happy1"] = dict(frames_out=len(f2), **{
        f"{k}_{w}_median": round(float(np.median(v[i])), 3)
        for k, v in vals.items() for i, w in ((0, "in"), (1, "out"))})
    src3 = VIDEOS / "news_talking_head_512.mp4"
    out3 = tmp / "news.mp4"
    _cli(["--input", str(src3), "--output", str(out3), "--au", "AU12=+1", *extra])
    res["audio_kept"] = dict(video=src3.name, streams_in=_streams(src3),
                             streams_out=_streams(out3), frames_in=len(_frames(src3)),
                             frames_out=len(_frames(out3)))
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help=".pt2 (default: the bundled model)")
    ap.add_argument("--data", default="/work/data/faces", help="built face data set (test split)")
    ap.add_argument("--limit", type=int, default=45, help="held-out faces")
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sheet", default=None, help="write the single-AU sheet PNG here")
    ap.add_argument("--sheet-faces", default="heldout", choices=["heldout", "astronaut"],
                    help="faces of the sheet (held-out ones stay out of the repository)")
    ap.add_argument("--video-figure", default=None, help="PNG: 4 frames of the AU12 clip, "
                    "input above output")
    ap.add_argument("--skip", nargs="*", default=[], choices=["cost", "heldout", "video"])
    ap.add_argument("--tmp", default="/tmp/au_edit_bench")
    ap.add_argument("--json", action="store_true", help="write benchmarks/results/au_edit.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from warpcam.realtime.effects.au_edit import load_au_model
    model = load_au_model(a.model, device="cpu", threads=a.threads)
    res = dict(model=str(a.model or "bundled au_edit.pt2"),
               training=dict(steps=model.meta.get("steps"),
                             minutes=model.meta.get("training_minutes"),
                             data=model.meta.get("training_data"),
                             sizes=model.meta.get("training_sizes"),
                             notes=model.meta.get("notes")))
    if "cost" not in a.skip:
        res["cost"] = frame_cost(model, a.iters)
        print(json.dumps(res["cost"]), flush=True)
    data = Path(a.data)
    if a.sheet:
        sheet(model, data, Path(a.sheet), faces=a.sheet_faces)
    if "heldout" not in a.skip:
        res["heldout"] = heldout(model, data, a.limit)
        print(json.dumps(res["heldout"], indent=1), flush=True)
    if "video" not in a.skip:
        res["video"] = video_eval(a.model, Path(a.tmp), a.video_figure)
        print(json.dumps(res["video"], indent=1), flush=True)
    if a.json:
        p = ROOT / "benchmarks" / "results" / "au_edit.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {p}")
    return res


if __name__ == "__main__":
    main()
