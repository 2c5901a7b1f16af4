"""Evaluate the action-unit estimator (``warpcam.realtime.au``) on the shared labelled faces.

    python -m benchmarks.au_eval [--celeba N] [--cache DIR] [--fit] [--out FILE.json]

What it measures (issue 11, "What it must show"):

- smile vs no smile, ROC AUC of AU12 and of the smile score: GENKI-4K (``smile``) and CelebA
  (``Smiling``), and the share of faces the tracker finds (small-image rule of
  :func:`warpcam.realtime.au.prepare_image`);
- LFW expressions: happiness vs neutral by AU6+AU12, surprise vs neutral by AU1+AU2+AU5+AU26;
- the four GANimation crops: AU12 ranked against their OpenFace values (``aus_openface.pkl``,
  read with a restricted unpickler that admits NumPy arrays only);
- per-track calibration on the MEAD videos: median AU12 of ``mead_w009_neutral_256.mp4`` and
  ``mead_w009_happy_256.mp4`` (video mode, one tracker per video).

AUCs are over the faces found; ``auc_all`` also counts a face not found as the lowest score
(what a user sees). With ``--fit`` it prints the population neutral and the gains that
``realtime/au.py`` holds (median and 90th percentile of the LFW neutral faces; docs/au.md).

Data: ``../shared/data/train`` and ``../shared/data/real`` beside the checkout (never copied).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TRAIN, REAL = SHARED / "train", SHARED / "real"


def roc_auc(pos, neg) -> float:
    """Mann-Whitney ROC AUC (ties count one half)."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def load_openface_pkl(path: Path) -> dict:
    """The seed's OpenFace pickle through the one restricted unpickler
    (:func:`warpcam.training.data.safe_pickle.safe_load`: plain data and NumPy arrays only)."""
    from warpcam.training.data.safe_pickle import safe_load

    return safe_load(path)


def landmarks_of(files, cache: Path | None, tag: str) -> np.ndarray:
    """``N x 478 x 3`` landmarks (NaN where no face) of image files, static tracker, small-image
    rule; cached as ``cache/tag.npy``."""
    import cv2

    from warpcam.realtime.au import prepare_image
    from warpcam.realtime.tracker import FaceTracker

    if cache is not None:
        p = cache / f"{tag}_{len(files)}.npy"
        if p.exists():
            return np.load(p)
    out = np.full((len(files), 478, 3), np.nan, np.float32)
    tr = FaceTracker(max_faces=1, static_images=True)
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        img = cv2.imread(str(f))
        if img is None:
            continue
        im, s, pad = prepare_image(img)
        raw = tr.detect(im)
        if raw:
            a = raw[0].copy()
            a[:, :2] -= pad
            a /= s
            out[i] = a
        if (i + 1) % 500 == 0:
            print(f"  {tag}: {i + 1}/{len(files)} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    tr.close()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{tag}_{len(files)}.npy", out)
    return out


def results_of(pts: np.ndarray):
    """Per image: (raw measure vector, intensity dict, smile) with the population neutral, or
    None where no face was found."""
    from warpcam.realtime.au import AU_NAMES, POPULATION_NEUTRAL, intensities, measure, smile_score

    out = []
    for p in pts:
        if not np.isfinite(p[0, 0]):
            out.append(None)
            continue
        raw = measure(p)
        ints = intensities(raw, POPULATION_NEUTRAL)
        out.append((np.array([raw[k] for k in AU_NAMES]), ints, smile_score(ints)))
    return out


def _score(res, fn):
    return np.array([fn(r) if r is not None else np.nan for r in res])


def binary_report(res, labels, scores: dict) -> dict:
    labels = np.asarray(labels)
    found = np.array([r is not None for r in res])
    rep = {"n": int(len(res)), "positives": int(labels.sum()), "found": float(found.mean())}
    for name, fn in scores.items():
        s = _score(res, fn)
        rep[f"auc_{name}"] = roc_auc(s[found & (labels == 1)], s[found & (labels == 0)])
        s_all = np.where(found, s, -1e9)
        rep[f"auc_all_{name}"] = roc_auc(s_all[labels == 1], s_all[labels == 0])
    return rep


def _au(name):
    return lambda r: r[1][name]


def _sum(*names):
    return lambda r: sum(r[1][n] for n in names)


def _rawsum(*idx_names):
    from warpcam.realtime.au import AU_NAMES, GAINS

    ix = [AU_NAMES.index(n) for n in idx_names]
    return lambda r: float(sum(GAINS[AU_NAMES[i]] * r[0][i] for i in ix))


SMILE_SCORES = {"AU12": _au("AU12"), "smile": lambda r: r[2],
                "AU12_raw": _rawsum("AU12")}


def eval_genki(cache, limit=None):
    rows = list(csv.DictReader(open(TRAIN / "genki4k" / "labels.csv")))[:limit]
    pts = landmarks_of([TRAIN / "genki4k" / "images" / r["image"] for r in rows], cache, "genki")
    res = results_of(pts)
    return binary_report(res, [int(r["smile"]) for r in rows], SMILE_SCORES), res, rows


def eval_celeba(cache, limit=None):
    rows = list(csv.DictReader(open(TRAIN / "celeba" / "attributes.csv")))[:limit]
    pts = landmarks_of([TRAIN / "celeba" / "images" / r["image"] for r in rows], cache, "celeba")
    res = results_of(pts)
    return binary_report(res, [int(r["Smiling"]) for r in rows], SMILE_SCORES), res, rows


def eval_lfw(cache):
    rows = [r for r in csv.DictReader(open(TRAIN / "lfw_expressions" / "labels.csv"))
            if r["emotion"] in ("neutral", "happiness", "surprise")]
    pts = landmarks_of([TRAIN / "lfw_expressions" / "images" / r["image"] for r in rows], cache,
                       "lfw")
    res = results_of(pts)
    em = np.array([r["emotion"] for r in rows])
    out = {}
    for target, scores in (("happiness", {"AU06+AU12": _sum("AU06", "AU12"),
                                          "AU12": _au("AU12"), "AU06": _au("AU06"),
                                          "smile": lambda r: r[2]}),
                           ("surprise", {"AU01+AU02+AU05+AU26": _sum("AU01", "AU02", "AU05", "AU26"),
                                         "AU01+AU02+AU05+AU26_raw": _rawsum("AU01", "AU02", "AU05", "AU26"),
                                         "AU26": _au("AU26"), "AU25": _au("AU25"),
                                         "AU01": _au("AU01"), "AU02": _au("AU02"),
                                         "AU05": _au("AU05")})):
        keep = (em == target) | (em == "neutral")
        sub = [r for r, k in zip(res, keep) if k]
        out[f"{target}_vs_neutral"] = binary_report(sub, (em[keep] == target).astype(int), scores)
    return out, res, em


def eval_ganimation():
    from warpcam.realtime.au import AU_NAMES, estimate_image
    import cv2

    d = REAL / "images" / "ganimation"
    of = load_openface_pkl(d / "aus_openface.pkl")
    rows = []
    for name in sorted(of):
        img = cv2.imread(str(d / "imgs" / f"{name}.jpg"))
        found = estimate_image(img, max_faces=1)
        ours = found[0].intensities if found else None
        rows.append({"image": name, "openface_AU12": float(of[name][AU_NAMES.index("AU12")]),
                     "warpcam_AU12": None if ours is None else ours["AU12"],
                     "warpcam_smile": None if ours is None else found[0].smile})
    of_v = np.array([r["openface_AU12"] for r in rows])
    us = np.array([np.nan if r["warpcam_AU12"] is None else r["warpcam_AU12"] for r in rows])
    # pairs that OpenFace orders strictly: do we order them the same way?
    agree = total = 0
    for i in range(len(rows)):
        for j in range(len(rows)):
            if of_v[i] > of_v[j] + 1e-6:
                total += 1
                agree += int(us[i] > us[j])
    from scipy.stats import spearmanr

    return {"images": rows, "pairs_ordered_as_openface": f"{agree}/{total}",
            "spearman": float(spearmanr(of_v, us).correlation)}


def eval_mead():
    import av

    from warpcam.realtime.au import AUEstimator
    from warpcam.realtime.tracker import FaceTracker

    out = {}
    for name in ("mead_w009_neutral_256.mp4", "mead_w009_happy_256.mp4"):
        path = REAL / "videos" / name
        tr, est = FaceTracker(max_faces=1), AUEstimator()
        est_pop = AUEstimator(calibrate=False)
        au12, au12_pop, smiles, frames, found = [], [], [], 0, 0
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                frames += 1
                faces = tr.track(f.to_ndarray(format="bgr24"), float(f.time))
                if faces:
                    found += 1
                    r = est.estimate(faces[0], float(f.time))
                    au12.append(r.intensities["AU12"])
                    smiles.append(r.smile)
                    au12_pop.append(est_pop.estimate(faces[0]).intensities["AU12"])
        tr.close()
        out[name] = {"frames": frames, "found": found / max(frames, 1),
                     "median_AU12": float(np.median(au12)),
                     "median_AU12_population_neutral": float(np.median(au12_pop)),
                     "median_smile": float(np.median(smiles))}
    return out


def fit(lfw_res, lfw_em, genki_res, genki_rows):
    """Population neutral (median of LFW neutral faces), gains (1.25 / (P90 - P50)) and the
    smile centre (the GENKI threshold of AU12 + AU6 / 4 with equal error rates)."""
    from warpcam.realtime.au import AU_NAMES

    neu = np.stack([r[0] for r, e in zip(lfw_res, lfw_em) if r is not None and e == "neutral"])
    pop = np.median(neu, axis=0)
    spread = np.percentile(neu, 90, axis=0) - pop
    gains = 1.25 / spread
    j = AU_NAMES.index("AU25")  # the documented exception: lips closed = 0.02, gain 20
    pop[j], gains[j] = 0.02, 20.0
    print("POPULATION_NEUTRAL = {" + ", ".join(f'"{k}": {v:.4f}' for k, v in zip(AU_NAMES, pop)) + "}")
    print("GAINS = {" + ", ".join(f'"{k}": {v:.1f}' for k, v in zip(AU_NAMES, gains)) + "}")
    s = np.array([r[1]["AU12"] + 0.25 * r[1]["AU06"] if r is not None else np.nan
                  for r in genki_res])
    y = np.array([int(r["smile"]) for r in genki_rows])
    ok = np.isfinite(s)
    best = min(np.linspace(0, 5, 201), key=lambda c: abs((s[ok & (y == 1)] < c).mean()
                                                          - (s[ok & (y == 0)] >= c).mean()))
    print(f"SMILE_CENTRE = {best:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--celeba", type=int, default=9000, help="CelebA images used (default all)")
    ap.add_argument("--cache", type=Path, default=None, help="folder for landmark caches")
    ap.add_argument("--fit", action="store_true", help="print the neutral, gains, smile centre")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "au_eval.json")
    a = ap.parse_args(argv)
    if not TRAIN.exists() or not REAL.exists():
        print(f"shared data not found beside the checkout ({SHARED})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    report = {}
    report["genki4k"], genki_res, genki_rows = eval_genki(a.cache)
    report["celeba"], _, _ = eval_celeba(a.cache, a.celeba)
    report["lfw_expressions"], lfw_res, lfw_em = eval_lfw(a.cache)
    if a.fit:
        fit(lfw_res, lfw_em, genki_res, genki_rows)
    report["ganimation"] = eval_ganimation()
    report["mead"] = eval_mead()
    report["seconds"] = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
