"""Checkpoint and option selection for the DeepWarp smile **on the validation split** (never the
held-out test set of ``benchmarks/smile_model.py``).

    python -m benchmarks.smile_select --data /tmp/smile_faces --snapshots runs/smile_hint/snapshots \\
        [--baseline models/smile_deepwarp.pt2] --json benchmarks/results/smile_select.json

Every CelebA face of the validation split (``--data``: the training data set, its builder
``val`` split) is prepared and tracked once, then edited through the live path (the model
effect at delta +1 for non-smiling faces, -1 for smiling ones, composited at full resolution,
re-tracked) by each candidate:

- each training snapshot (exported to a temporary ``.pt2`` and loaded by the effect's loader),
  with its options: ``hint`` (the landmark smile's flow as the hint channel, as trained),
  ``nohint`` (a zero hint: the model alone; the run's hint dropout trained it for that) and
  ``nohint+mix`` / ``hint+mix`` (the landmark smile's flow added to the network's,
  ``--mix``: the two combined);
- the landmark smile alone, and ``--baseline`` (a bundled model) alone and combined.

Per candidate: the share of faces whose identity distance input -> output (dlib,
``benchmarks.expression_eval``) is below 0.4, the AU estimator's flip rates (non-smiling called
smiling after +1, smiling called non-smiling after -1), the mean AU12 change, and A's flip rate
on the 64-px crops (snapshots only). Selection rule (fixed before the run's results): among the
candidates with identity share >= 0.95, the one with the highest mean of the two AU-estimator
flip rates; if none reaches 0.95, the highest identity share.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import write_json



class ZeroHint:
    """A hint model run with a zero hint (the model alone)."""

    def __init__(self, model):
        self.inner, self.anchors, self.hint = model, model.anchors, False

    def __call__(self, crops, delta, anchors=None):
        z = np.zeros((len(crops), 64, 64, 2), np.float32)
        return self.inner(crops, delta, anchors, z)


def prepare(data, limit=None) -> list:
    """Tracked validation faces: ``(image, faces, delta, est0, emb0)``."""
    from benchmarks.expression_eval import load_embedder
    from warpcam.realtime.au import AUEstimator
    from benchmarks.smile_model import tracked_celeba
    from warpcam.realtime.tracker import FaceTracker
    emb, why = load_embedder()
    if emb is None:
        raise SystemExit(f"dlib embedder: {why}")
    est = AUEstimator(calibrate=False)
    out = []
    idx = range(len(data)) if limit is None else np.linspace(0, len(data) - 1, limit).astype(int)
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for i, im, faces in tracked_celeba(data, idx, tr):
            e0 = emb.embed(im)
            if e0 is None:
                continue
            d = 1.0 if data.labels[i] < 0.5 else -1.0
            out.append((im, faces, d, est.estimate(faces[0]), e0))
    return out, emb


def measure(effect_for, items, emb) -> dict:
    from benchmarks.expression_eval import distance
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.au import AUEstimator
    from warpcam.realtime.tracker import FaceTracker
    comp = CpuCompositor()
    est = AUEstimator(calibrate=False)
    rows, ident = [], []
    with FaceTracker(max_faces=1, static_images=True) as tr:
        for im, faces, d, r0, e0 in items:
            out = comp.composite(im, effect_for(d).jobs(im, faces))
            e1 = emb.embed(out)
            if e1 is not None:
                ident.append(distance(e0, e1))
            f2 = tr.track(out)
            if f2:
                r1 = est.estimate(f2[0])
                rows.append((d, r0.smile, r1.smile, r0.intensities["AU12"],
                             r1.intensities["AU12"]))
    r = np.array(rows)
    up, dn = r[r[:, 0] > 0], r[r[:, 0] < 0]
    v = np.array(ident)
    res = dict(n=len(r), identity_below_0_4=round(float((v < 0.4).mean()), 4),
               identity_median=round(float(np.median(v)), 4),
               smiling_after_plus1=round(float((up[:, 2] > 0.5).mean()), 4),
               nonsmiling_after_minus1=round(float((dn[:, 2] <= 0.5).mean()), 4),
               au12_change_plus1=round(float((up[:, 4] - up[:, 3]).mean()), 3),
               au12_change_minus1=round(float((dn[:, 4] - dn[:, 3]).mean()), 3))
    res["flip_mean"] = round((res["smiling_after_plus1"] + res["nonsmiling_after_minus1"]) / 2, 4)
    return res


def a_flip(checkpoint, data_root) -> dict:
    """A's accuracy and flip rate on the validation crops, with the hint and with a zero one."""
    import torch
    from warpcam.training.smile.data import SmileFaces
    from warpcam.training.smile.export import model_from_checkpoint
    net, _ = model_from_checkpoint(checkpoint)
    data = SmileFaces(data_root, "val", hints=net.cfg.hint)
    out = {}
    with torch.no_grad():
        x, y, a, *h = data.batch(torch.arange(len(data)), with_hint=net.cfg.hint)
        h = h[0] if h else None
        pr = net.C.a(x) > 0
        out["a_accuracy"] = round(float((pr == (y > 0.5)).float().mean()), 4)
        for name, hh in (("hint", h), ("nohint", None if h is None else torch.zeros_like(h))):
            if name == "nohint" and h is None:
                continue
            o = net.T(x, (1 - 2 * y)[:, None], None, hh)["output"]
            out[f"a_flip_{name}"] = round(float(((net.C.a(o) > 0) != (y > 0.5)).float().mean()),
                                          4)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="training data set (its val split is used)")
    ap.add_argument("--snapshots", help="folder of training snapshots (stepN.pt)")
    ap.add_argument("--checkpoints", nargs="*", default=[], help="more checkpoints")
    ap.add_argument("--every", type=int, default=1, help="take every N-th snapshot")
    ap.add_argument("--baseline", help="a bundled .pt2 to compare with")
    ap.add_argument("--mix", type=float, default=1.0, help="landmark share in the combination")
    ap.add_argument("--options", nargs="*", default=["hint", "nohint", "nohint+mix"])
    ap.add_argument("--limit", type=int, default=None, help="at most N validation faces")
    ap.add_argument("--strength", type=float, default=1.0,
                    help="run every candidate at +-this setting (default: +-1)")
    ap.add_argument("--network-gain", type=float, default=1.0,
                    help="scale of the network's flow and LCM in every model candidate")
    ap.add_argument("--no-landmark", action="store_true", help="skip the landmark smile")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="select over the candidates of these earlier results (nothing run)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from warpcam.realtime.effects.smile import SmileEffect, SmileSettings
    from warpcam.realtime.effects.smile_model import ModelSmileEffect, load_smile_model
    from warpcam.training.smile.data import SmileFaces
    from warpcam.training.smile.export import export, metadata, model_from_checkpoint
    t0 = time.time()
    if a.merge:  # only the selection over earlier runs' candidates
        import json
        res = dict(data=str(a.data), split="val (CelebA part)", candidates={}, merged=a.merge)
        for f in a.merge:
            r = json.loads(Path(f).read_text())
            res.setdefault("n_faces", r.get("n_faces"))
            s, mix = r.get("strength", 1.0) or 1.0, r.get("mix", 1.0)
            for k, v in r["candidates"].items():
                name = k  # unique across runs: the run's folder, and any non-default setting
                if "checkpoint" in v:
                    name = f"{Path(v['checkpoint']).parent.parent.name}/{k}"
                if s != 1.0:
                    name += f" [strength {s:g}]"
                if "+mix" in k and mix != 1.0:
                    name += f" [mix {mix:g}]"
                v.update(strength=s, mix=mix if "mix" in k else 0.0)
                res["candidates"][name] = v
        return select(res, a.json)
    data = SmileFaces(a.data, "val", sets=["celeba"])
    items, emb = prepare(data, a.limit)
    print(f"{len(items)} validation faces tracked and embedded in {time.time() - t0:.0f} s",
          flush=True)
    res = dict(data=str(a.data), split="val (CelebA part)", n_faces=len(items), mix=a.mix,
               candidates={})

    def run(name, effect_for):
        t1 = time.time()
        m = measure(effect_for, items, emb)
        res["candidates"][name] = m
        print(f"{name}: {m} ({time.time() - t1:.0f} s)", flush=True)
        return m

    def model_effect(model, mix=0.0):
        return lambda d: ModelSmileEffect(SmileSettings(strength=d * a.strength), model,
                                          follow=1.0, landmark_mix=mix,
                                          network_gain=a.network_gain)

    res["strength"], res["network_gain"] = a.strength, a.network_gain
    if not a.no_landmark:
        run("landmark", lambda d: SmileEffect(SmileSettings(strength=d * a.strength),
                                              cache=False))
    if a.baseline:
        base = load_smile_model(a.baseline, device="cpu", threads=1)
        tag = f"@{a.network_gain:g}" if a.network_gain != 1.0 else ""
        if "nohint" in a.options or not a.options:
            run("baseline" + tag, model_effect(base))
        if "nohint+mix" in a.options or not a.options:
            run("baseline+mix" + tag, model_effect(base, a.mix))
    ckpts = sorted(Path(a.snapshots).glob("*.pt"))[::-1][::a.every][::-1] if a.snapshots else []
    ckpts += [Path(c) for c in a.checkpoints]
    with tempfile.TemporaryDirectory() as td:
        for c in ckpts:
            net, ck = model_from_checkpoint(c)
            pt2 = Path(td) / f"{c.stem}.pt2"
            export(net, metadata(net.cfg, ck), pt2)
            model = load_smile_model(pt2, device="cpu", threads=1)
            af = a_flip(c, a.data)
            print(f"{c}: step {ck.get('step')} {af}", flush=True)
            for opt in a.options:
                if not model.hint and opt.startswith("nohint"):
                    continue
                mdl = model if opt.startswith("hint") or not model.hint else ZeroHint(model)
                tag = f"@{a.network_gain:g}" if a.network_gain != 1.0 else ""
                m = run(f"{c.stem}:{opt}{tag}", model_effect(mdl, a.mix if "mix" in opt else 0.0))
                m.update(af, step=ck.get("step"), checkpoint=str(c))
    res["seconds"] = round(time.time() - t0)
    return select(res, a.json)


def select(res: dict, json_out=None) -> dict:
    """The selection rule of the module docstring over ``res["candidates"]``."""
    cands = {k: v for k, v in res["candidates"].items() if k != "landmark"}
    if not cands:
        if json_out:
            write_json(json_out, res)
        return res
    ok = {k: v for k, v in cands.items() if v["identity_below_0_4"] >= 0.95}
    if ok:
        best = max(ok, key=lambda k: (ok[k]["flip_mean"], ok[k]["identity_below_0_4"]))
        why = "identity share >= 0.95 and the highest mean AU-estimator flip rate"
    else:
        best = max(cands, key=lambda k: cands[k]["identity_below_0_4"])
        why = "no candidate reaches 0.95: the highest identity share"
    res["selected"], res["selected_because"] = best, why
    print(f"selected {best}: {why}")
    if json_out:
        write_json(json_out, res)
    return res


if __name__ == "__main__":
    main()
