"""Cost and effect of the DeepWarp smile (``--smile S --smile-model``, seed 000).

    python -m benchmarks.smile_model --checkpoint runs/smile_cpu/checkpoint.pt \\
        --test /tmp/smile_faces_ho [--model models/smile_deepwarp.pt2] [--limit 300] \\
        [--json benchmarks/results/smile_model.json]

1. **Per-frame cost**, one face at 720p (the astronaut scaled into a 1280 x 720 frame): the
   effect (aligned crop through the crop service, the network, the WarpJob) plus the CPU
   compositor, p50 / p99 in ms, with the network every frame (the face jittered by a pixel so
   the field reuse misses) and for a still face (fields reused).
2. **Held-out CelebA** (``--test``: a built data set of CelebA images 008001-009000, never seen
   in training or validation): A's accuracy on the real faces, and the share of non-smiling
   faces A calls smiling after T with delta +1 (and smiling faces called non-smiling after -1);
   A's own rate on the unedited faces beside it.
3. **AU estimator** (``warpcam.realtime.au``) on the same held-out images through the live
   path: the original image prepared for tracking (upscaled, bordered), tracked, edited by the
   model effect at delta +-1 and composited at full resolution, re-tracked; the share whose
   smile score crosses 0.5 and the AU12 change, with the landmark smile at the same setting.
4. **Identity distance** input -> output (``benchmarks.expression_eval``'s dlib embedding), when
   dlib is installed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks import write_json

CELEBA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train" / "celeba"


def _p(a, q):
    return round(float(np.percentile(a, q)), 2)


def tracked_celeba(data, idx, tracker):
    """Yield ``(i, image, faces)`` for the CelebA items ``idx`` of a built smile data set
    ``data`` whose image reads and shows a face: the original image prepared for tracking
    (``prepare_for_tracking``: upscaled, bordered) and ``tracker``'s faces on it."""
    from warpcam.training.data.align import prepare_for_tracking

    for i in idx:
        img = cv2.imread(str(CELEBA / "images" / (data.ids[i].split("/", 1)[1] + ".jpg")))
        if img is None:
            continue
        im, _, _ = prepare_for_tracking(img)
        faces = tracker.track(im)
        if faces:
            yield i, im, faces


def frame_cost(model, iters: int = 100) -> dict:
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.smile import SmileSettings
    from warpcam.realtime.effects.smile_model import ModelSmileEffect
    from warpcam.realtime.tracker import FaceTracker
    from tests.realdata import astronaut_bgr
    img = astronaut_bgr()
    frame = np.zeros((720, 1280, 3), np.uint8)
    face_img = cv2.resize(img, (720, 720), interpolation=cv2.INTER_AREA)
    frame[:, 280:1000] = face_img
    with FaceTracker(max_faces=1, static_images=True) as tr:
        face = tr.track(frame)[0]
    comp = CpuCompositor()
    import dataclasses
    out = {}
    for mode in ("network_every_frame", "still_face"):
        eff = ModelSmileEffect(SmileSettings(strength=1.0), model)
        for _ in range(10):
            comp.composite(frame, eff.jobs(frame, [face]))
        ts = []
        calls0 = eff.calls
        for i in range(iters):
            f = face
            if mode == "network_every_frame":
                # 12 frame px (~2 crop px): beyond the affine's dead band, so the crop moves
                # and the network runs every frame (checked with eff.calls)
                f = dataclasses.replace(face, landmarks=face.landmarks + (6.0 if i % 2 else -6.0))
            t0 = time.perf_counter()
            jobs = eff.jobs(frame, [f])
            comp.composite(frame, jobs)
            ts.append((time.perf_counter() - t0) * 1000)
        out[mode] = dict(p50_ms=_p(ts, 50), p99_ms=_p(ts, 99), iters=iters,
                         network_calls=eff.calls - calls0)
    out["frame"] = "1280x720, one face (astronaut, 720 px tall)"
    out["threads"] = torch.get_num_threads()
    return out


@torch.no_grad()
def heldout(checkpoint, test_root, zero_hint: bool = False, model=None) -> dict:
    """A on the held-out faces and on T's edits of them (a hint model gets the hints of
    ``TEST/smile_hints.npz``, or zeros with ``zero_hint``). With ``model`` (a loaded
    :class:`SmileModel`), the edits are that program's at delta +-1 as the effect combines
    them (``network_gain`` x network + ``landmark_mix`` x the landmark smile's flow, the
    hints file's) and only A comes from ``checkpoint``."""
    from warpcam.training.smile.data import SmileFaces
    from warpcam.training.smile.export import model_from_checkpoint
    from warpcam.training.smile.model import apply_outputs
    net, ckpt = model_from_checkpoint(checkpoint)
    mix = float(model.meta.get("landmark_mix", 0.0)) if model is not None else 0.0
    gain = float(model.meta.get("network_gain", 1.0)) if model is not None else 1.0
    want_h = net.cfg.hint if model is None else (model.hint or mix != 0)
    data = SmileFaces(test_root, split=None, hints=want_h)
    x, y, a, *h = data.batch(torch.arange(len(data)), with_hint=want_h)
    hint = h[0] if h and not zero_hint else (torch.zeros_like(h[0]) if h else None)
    anchors = a if net.cfg.anchors else None
    pr = net.C.a(x) > 0
    yb = y > 0.5
    delta = (1 - 2 * y)[:, None]
    if model is None:
        fake = net.T(x, delta, anchors, hint)["output"]
    else:
        hn = hint.permute(0, 2, 3, 1).numpy() if hint is not None else None
        parts = [model(x[i:i + 64].numpy(), delta[i:i + 64, 0].numpy(), None,
                       hn[i:i + 64] if model.hint else None)
                 for i in range(0, len(x), 64)]  # the program takes batches up to 64
        flow = np.concatenate([p[0] for p in parts])
        w, pal = np.concatenate([p[1] for p in parts]), parts[0][2]
        flow = gain * torch.from_numpy(flow).permute(0, 3, 1, 2)
        if mix:
            flow = flow + mix * hint
        fake = apply_outputs(x, flow, gain * torch.from_numpy(w)[:, None],
                             torch.from_numpy(np.asarray(pal)))
    pf = net.C.a(fake) > 0
    neu, smi = ~yb, yb
    return dict(
        n=len(data), n_smiling=int(smi.sum()), steps=ckpt.get("step"),
        a_accuracy_real=round(float((pr == yb).float().mean()), 4),
        a_smiling_after_plus1=round(float(pf[neu].float().mean()), 4),
        a_smiling_unedited_nonsmiling=round(float(pr[neu].float().mean()), 4),
        a_nonsmiling_after_minus1=round(float((~pf[smi]).float().mean()), 4),
        a_nonsmiling_unedited_smiling=round(float((~pr[smi]).float().mean()), 4)), data


def au_eval(model, data, limit: int) -> dict:
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.au import AUEstimator
    from warpcam.realtime.effects.smile import SmileEffect, SmileSettings
    from warpcam.realtime.effects.smile_model import ModelSmileEffect
    from warpcam.realtime.tracker import FaceTracker
    from benchmarks.expression_eval import distance, load_embedder
    emb, why = load_embedder()
    comp = CpuCompositor()
    est = AUEstimator(calibrate=False)
    labels = data.labels.numpy()
    idx = np.linspace(0, len(data) - 1, min(limit, len(data))).astype(int)
    rec = {k: [] for k in ("model", "landmark")}
    ident = []
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for i, im, faces in tracked_celeba(data, idx, tr):
            r0 = est.estimate(faces[0])
            d = 1.0 if labels[i] < 0.5 else -1.0
            for kind in rec:
                eff = (ModelSmileEffect(SmileSettings(strength=d), model, follow=1.0)
                       if kind == "model" else SmileEffect(SmileSettings(strength=d), cache=False))
                out = comp.composite(im, eff.jobs(im, faces))
                f2 = tr.track(out)
                if not f2:
                    continue
                r1 = est.estimate(f2[0])
                rec[kind].append((d, r0.smile, r1.smile, r0.intensities["AU12"],
                                  r1.intensities["AU12"]))
                if kind == "model" and emb is not None:
                    ident.append(distance(emb.embed(im), emb.embed(out)))
    res = dict(n_images=int(len(idx)))
    for kind, rows in rec.items():
        r = np.array(rows)
        if not len(r):
            continue
        up, dn = r[r[:, 0] > 0], r[r[:, 0] < 0]
        res[kind] = dict(
            n=len(r),
            smiling_after_plus1=round(float((up[:, 2] > 0.5).mean()), 4) if len(up) else None,
            smiling_before_plus1=round(float((up[:, 1] > 0.5).mean()), 4) if len(up) else None,
            nonsmiling_after_minus1=round(float((dn[:, 2] <= 0.5).mean()), 4) if len(dn) else None,
            nonsmiling_before_minus1=round(float((dn[:, 1] <= 0.5).mean()), 4) if len(dn) else None,
            au12_change_plus1=round(float((up[:, 4] - up[:, 3]).mean()), 3) if len(up) else None,
            au12_change_minus1=round(float((dn[:, 4] - dn[:, 3]).mean()), 3) if len(dn) else None,
            smile_change_plus1=round(float((up[:, 2] - up[:, 1]).mean()), 3) if len(up) else None,
            smile_change_minus1=round(float((dn[:, 2] - dn[:, 1]).mean()), 3) if len(dn) else None)
    if ident:
        v = np.array([x for x in ident if x is not None])
        res["identity"] = dict(n=len(v), median=round(float(np.median(v)), 4),
                               share_below_0_4=round(float((v < 0.4).mean()), 4))
    else:
        res["identity"] = why or "no faces embedded"
    return res


def write_hints(root) -> Path:
    """``ROOT/smile_hints.npz`` for training with ``--hint``: per face of a built data set
    (``--landmarks``), the landmark smile's flow in its 64-px aligned crop
    (:func:`warpcam.realtime.effects.smile_model.landmark_hint`) at its training delta
    ``1 - 2 smile``, float16 ``(N, 2, 64, 64)``, with the face ids (no pickles)."""
    from warpcam.core.geometry import invert_affine
    from warpcam.realtime.effects.smile_model import landmark_hint
    from warpcam.training.data import align
    from warpcam.training.data.index import read_index
    root = Path(root)
    rows = [r for r in read_index(root) if r.get("found") == "1" and r.get("face_64")
            and r.get("smile", "") != ""]
    ids, hints = [], np.zeros((len(rows), 2, 64, 64), np.float16)
    t0 = time.time()
    for i, r in enumerate(rows):
        if not r.get("landmarks"):
            raise SystemExit(f"{root}: built without --landmarks")
        lms = np.load(root / r["landmarks"], allow_pickle=False)
        m = align.similarity_fit(align.face_points(lms), align.template_points(64))
        d = 1.0 - 2.0 * float(float(r["smile"]) > 0.5)
        hints[i] = landmark_hint(lms, invert_affine(m), d).transpose(2, 0, 1)
        ids.append(r["id"])
    out = root / "smile_hints.npz"
    np.savez(out, ids=np.array(ids), hint=hints)
    print(f"wrote {out}: {len(ids)} hints in {time.time() - t0:.0f} s, |hint| max "
          f"{float(np.abs(hints).max()):.2f} px, mean {float(np.abs(hints).mean()):.3f}")
    return out


VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "videos"


def video_eval(model, max_frames: int = 120) -> dict:
    """MEAD w009: ``--smile 1`` on the neutral clip and ``--smile -1`` on the happy clip, the
    model and the landmark smile; median AU12 and smile score of the re-tracked output (video
    mode, per-track calibration off so that the edited clip is not its own neutral)."""
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.au import AUEstimator
    from warpcam.realtime.effects.smile import SmileEffect, SmileSettings
    from warpcam.realtime.effects.smile_model import ModelSmileEffect
    from warpcam.realtime.tracker import FaceTracker
    comp = CpuCompositor()
    res = {}
    for name, d in (("mead_w009_neutral_256.mp4", 1.0), ("mead_w009_happy_256.mp4", -1.0)):
        cap = cv2.VideoCapture(str(VIDEOS / name))
        frames = []
        while len(frames) < max_frames:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
        effs = dict(input=None, model=ModelSmileEffect(SmileSettings(strength=d), model),
                    landmark=SmileEffect(SmileSettings(strength=d)))
        trk = {k: FaceTracker(max_faces=1) for k in effs}
        src_tr = FaceTracker(max_faces=1)
        est = {k: AUEstimator(calibrate=False) for k in effs}
        vals = {k: [] for k in effs}
        for i, f in enumerate(frames):
            faces = src_tr.track(f, i / 25.0)
            for k, e in effs.items():
                out = f if e is None or not faces else comp.composite(f, e.jobs(f, faces, i / 25.0))
                g = trk[k].track(out, i / 25.0) if k != "input" else faces
                if g:
                    r = est[k].estimate(g[0])
                    vals[k].append((r.intensities["AU12"], r.smile))
        for t in list(trk.values()) + [src_tr]:
            t.close()
        res[name] = dict(delta=d, frames=len(frames), **{
            k: dict(au12_median=round(float(np.median([v[0] for v in vs])), 3),
                    smile_median=round(float(np.median([v[1] for v in vs])), 3), n=len(vs))
            for k, vs in vals.items() if vs})
    return res


DELTAS = (-1.0, -0.5, 0.0, 0.5, 1.0)
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "images"


def sheet(model, images, out, size: int = 200, deltas=DELTAS) -> Path:
    """Before/after sheet: one row per image (its tracked face), one column per delta, the face
    region (twice the 64-px aligned crop's extent) cut from the full-resolution composite."""
    from warpcam.core.geometry import apply_affine
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.effects.smile import SmileSettings
    from warpcam.realtime.effects.smile_model import ModelSmileEffect, aligned_affine
    from warpcam.realtime.tracker import FaceTracker
    comp = CpuCompositor()
    rows = []
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for img in images:
            faces = tr.track(img)
            if not faces:
                continue
            A = aligned_affine(faces[0].landmarks)
            # a square around the crop: centre and 1.3x its side, axis-aligned
            c = apply_affine(A, np.array([[31.5, 36.0]]))[0]
            side = 1.3 * 64 * float(np.hypot(A[0, 0], A[1, 0]))
            x0, y0 = c - side / 2
            M = np.array([[side / size, 0, x0], [0, side / size, y0]])
            cells = []
            for d in deltas:
                eff = ModelSmileEffect(SmileSettings(strength=d), model, follow=1.0)
                outimg = comp.composite(img, eff.jobs(img, faces))
                cell = cv2.warpAffine(outimg, M, (size, size), flags=cv2.WARP_INVERSE_MAP
                                      | cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
                cv2.putText(cell, f"{d:+.1f}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                            (255, 255, 255), 2, cv2.LINE_AA)
                cells.append(cell)
            rows.append(np.hstack(cells))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {len(rows)} rows)")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help=".pt2 (default: the bundled model)")
    ap.add_argument("--checkpoint", help="training checkpoint (for A and T on the held-out set)")
    ap.add_argument("--test", help="built held-out data set (CelebA 008001-009000)")
    ap.add_argument("--limit", type=int, default=300, help="images for the AU estimator part")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--videos", action="store_true", help="also the MEAD w009 clips")
    ap.add_argument("--sheets", metavar="PREFIX",
                    help="write PREFIX_astronaut.png and PREFIX_faces.png (real faces from "
                         "../shared/data/real/images/smile_pairs) and stop")
    ap.add_argument("--write-hints", metavar="DATA",
                    help="write DATA/smile_hints.npz (training with --hint) and stop")
    a = ap.parse_args(argv)
    if a.write_hints:
        write_hints(a.write_hints)
        return {}
    from warpcam.realtime.effects.smile_model import load_smile_model
    model = load_smile_model(a.model, device="cpu", threads=a.threads)
    if a.sheets:
        from tests.realdata import astronaut_bgr
        sheet(model, [astronaut_bgr()], a.sheets + "_astronaut.png")
        real = [cv2.imread(str(p)) for p in sorted((REAL / "smile_pairs").glob("*.png"))]
        sheet(model, [r for r in real if r is not None], a.sheets + "_faces.png", size=160)
        return {}
    res = dict(model=str(model.path), training_steps=model.meta.get("steps"),
               cost=frame_cost(model, a.iters))
    print("cost", res["cost"], flush=True)
    if a.checkpoint and a.test:
        res["heldout_celeba"], data = heldout(a.checkpoint, a.test, model=model)
        res["heldout_celeba"]["a_from"] = str(a.checkpoint)
        print("held-out", res["heldout_celeba"], flush=True)
        res["au_estimator"] = au_eval(model, data, a.limit)
        print("AU", res["au_estimator"], flush=True)
    if a.videos:
        res["mead_videos"] = video_eval(model)
        print("videos", res["mead_videos"], flush=True)
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
