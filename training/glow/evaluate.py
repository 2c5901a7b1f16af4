"""Seed 004's evaluation of the Glow expression transfer on its own set-up
(``../shared/data/real/images/identities/``: ``id1_aligned`` emma, ``id2_aligned`` obama, 20
photos each, and ``expressions/`` with ten selena expressions).

    python -m warpcam.training.glow.evaluate --out /work/runs/glow/eval [--model FILE]

Experiments (the seed's): ``expressionK`` for K = 1..5 transfers selena expression 1, 4, 6, 7,
10 onto every target, for alpha 0.30, 0.32, ..., 0.50 (:mod:`warpcam.training.glow.transfer`).
The source mean is the mean latent of the ten selena photos (the seed's id5 folder is not in
our copy; the expression photos are the only selena photos there are).

Measures (issue 9's tools, :mod:`warpcam.training.data.identity`):

- **Identity distance** (dlib ResNet embedding; same person below 0.6; the seed used facenet's
  InceptionResnetV1, whose distances are on another scale) of every output to the **target
  mean** (the mean embedding of the target's original photos) and to the **source mean** (of
  the source's photos). Baseline: the target's own 64 px aligned crops against the same mean
  (what the model's resolution alone costs).
- **AU intensities** (:class:`warpcam.realtime.au.AUEstimator`, OpenFace's 17 ``AU*_r``) of
  every output, of the decoded mean faces and of the source photo. "Toward the source" is
  ``d_AU(alpha)`` = mean over the 17 AUs of ``|AU(output) - AU(source photo)|``; ``alpha = 0``
  is the decoded target mean face. And the **source's AUs**: those at least 1 higher in the
  source photo than in the decoded source mean face; their mean intensity in the outputs
  should rise with alpha toward the source photo's.

Writes, in the seed's layout, under ``--out``: ``evaluation/likeliness/expressionK.csv`` (rows
``<target>_source`` and ``<target>_target``: one column per alpha, then ``tgt_mean_face`` and
``src_mean_face``, the distances of the decoded target and source mean faces to that row's
mean), ``evaluation/quality/AUs_expressionK.csv`` (one row per output, mean face and reference
image: ``face``, ``success``, the 17 ``AU*_r``, ``smile``), ``transferring/expressionK/<target>.png``
(the sweep sheets) with their images, ``means/<name>.png``, and ``summary.csv`` / ``summary.md``
/ ``summary.json`` (per alpha: identity distances, share below 0.6, ``d_AU``; the targets met
or missed).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from warpcam.training.data.identity import SAME_PERSON, Analyzer, distance, load_embedder
from warpcam.training.data.index import write_csv
from warpcam.training.glow.transfer import (Aligner, GlowCodec, TransferError, image_files,
                                            parse_alphas, to_bgr_u8, to_chw01,
                                            transfer_latents, write_outputs)

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / \
    "images" / "identities"
#: expressionK -> selena_expressionN (the seed's experiments).
EXPERIMENTS = {1: 1, 2: 4, 3: 6, 4: 7, 5: 10}
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15",
       "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
AU_COLS = tuple(f"{a}_r" for a in AUS)


def person_name(folder) -> str:
    """``emma`` for a folder of ``emma1_aligned.png``... (the letters before the first digit)."""
    stem = image_files(folder)[0].stem
    m = re.match(r"[A-Za-z]+", stem)
    return m.group(0).lower() if m else Path(folder).name


def _upscaled(face_bgr: np.ndarray, side: int = 256) -> np.ndarray:
    """A 64 px face at ``side`` px (bicubic), as the tools measure larger faces better."""
    return cv2.resize(face_bgr, (side, side), interpolation=cv2.INTER_CUBIC)


def _mean_emb(embs) -> Optional[np.ndarray]:
    e = [x for x in embs if x is not None]
    return np.mean(e, axis=0) if e else None


def _d_au(m: dict, ref: dict) -> Optional[float]:
    v = [abs(m[c] - ref[c]) for c in AU_COLS if m.get(c) is not None and ref.get(c) is not None]
    return float(np.mean(v)) if v else None


def _write_csv(path: Path, rows: List[dict]) -> None:
    """Rows (their keys in first-seen order as columns; floats to 5 significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(path, rows, cols)


def _active(ref: dict, src_mean: dict, rise: float = 1.0) -> List[str]:
    """The AUs of the source expression: at least ``rise`` higher in the source photo than in
    the decoded source mean face."""
    return [c for c in AU_COLS if ref.get(c) is not None and src_mean.get(c) is not None
            and ref[c] - src_mean[c] >= rise]


def _mean_of(m: dict, cols) -> Optional[float]:
    v = [m[c] for c in cols if m.get(c) is not None]
    return float(np.mean(v)) if v else None


def _spearman(x, y) -> Optional[float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(y) == 0:
        return None
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def evaluate(codec: GlowCodec, root, out, targets=("id1_aligned", "id2_aligned"),
             source="expressions", alphas=None, experiments=EXPERIMENTS) -> dict:
    """Run the evaluation (module docstring); returns the summary dict."""
    root, out = Path(root), Path(out)
    alphas = alphas or parse_alphas("0.3:0.5:0.02")
    embedder, why = load_embedder()
    notes = [why] if why else []
    analyzer = Analyzer(embedder)
    meas: Dict[str, dict] = {}

    def measure(key: str, img: np.ndarray, small: bool = True) -> dict:
        m = analyzer(_upscaled(img) if small else img)
        meas[key] = m
        return m

    with Aligner(codec.size) as aligner:
        src_dir = root / source
        src_faces, src_files, missed = aligner.align_folder(src_dir)
        src_name = person_name(src_dir)
        z_src_all = codec.encode(to_chw01(src_faces))
        z_src_mean = z_src_all.mean(0)
        src_emb_mean = _mean_emb(measure(f"{src_name}_photo{i}", cv2.imread(str(p)), False)
                                 ["embedding"] for i, p in enumerate(src_files))
        tgts = {}
        for t in targets:
            faces, files, miss = aligner.align_folder(root / t)
            missed += miss
            name = person_name(root / t)
            embs = [measure(f"{name}_photo{i}", cv2.imread(str(p)), False)["embedding"]
                    for i, p in enumerate(files)]
            crops = [measure(f"{name}_crop{i}", f)["embedding"] for i, f in enumerate(faces)]
            tgts[name] = dict(z_mean=codec.encode(to_chw01(faces)).mean(0),
                              emb_mean=_mean_emb(embs), crops=crops, n=len(files))
    by_stem = {p.stem: i for i, p in enumerate(src_files)}
    means = codec.decode(np.stack([z_src_mean] + [v["z_mean"] for v in tgts.values()]))
    means = to_bgr_u8(means)
    (out / "means").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "means" / f"{src_name}.png"), means[0])
    m_src_mean = measure(f"{src_name}_mean", means[0])
    for (name, v), img in zip(tgts.items(), means[1:]):
        cv2.imwrite(str(out / "means" / f"{name}.png"), img)
        v["mean_face"] = img
        v["m_mean"] = measure(f"{name}_mean", img)

    per_alpha: Dict[float, dict] = {a: dict(d_tgt=[], d_src=[], d_au=[], act=[])
                                     for a in alphas}
    base_d_au, base_act, ref_act, experiment_rows = [], [], [], {}
    for k, n_src in experiments.items():
        stem = f"{src_name}_expression{n_src}_aligned"
        if stem not in by_stem:
            notes.append(f"expression{k}: {stem} not found (no face or missing); left out")
            continue
        i = by_stem[stem]
        ref = measure(f"{src_name}_expression{n_src}", cv2.imread(str(src_files[i])), False)
        active = _active(ref, m_src_mean)
        if active:
            ref_act.append(_mean_of(ref, active))
        like, qual = [], []
        qual.append(dict(face=f"{src_name}_expression{n_src}_reference", success=ref["success"],
                         **{c: ref.get(c) for c in AU_COLS}, smile=ref.get("smile")))
        qual.append(dict(face=f"{src_name}_mean", success=m_src_mean["success"],
                         **{c: m_src_mean.get(c) for c in AU_COLS}, smile=m_src_mean.get("smile")))
        for name, v in tgts.items():
            outs = to_bgr_u8(codec.decode(transfer_latents(v["z_mean"], z_src_all[i],
                                                            z_src_mean, alphas)))
            res = dict(outputs=outs, target_mean=v["mean_face"], source_mean=means[0],
                       source=src_faces[i], alphas=list(alphas))
            write_outputs(res, out / "transferring" / f"expression{k}" / f"{name}.png")
            row_s, row_t = {"name": f"{name}_source"}, {"name": f"{name}_target"}
            base = _d_au(v["m_mean"], ref)
            base_d_au.append(base)
            if active:
                base_act.append(_mean_of(v["m_mean"], active))
            qual.append(dict(face=f"{name}_mean", success=v["m_mean"]["success"],
                             **{c: v["m_mean"].get(c) for c in AU_COLS},
                             smile=v["m_mean"].get("smile"), d_au_to_source=base))
            for a, img in zip(alphas, outs):
                m = measure(f"e{k}_{name}_{a:.2f}", img)
                ds = distance(m["embedding"], src_emb_mean)
                dt = distance(m["embedding"], v["emb_mean"])
                row_s[f"{a:.2f}"], row_t[f"{a:.2f}"] = ds, dt
                dau = _d_au(m, ref)
                qual.append(dict(face=f"{name}_alpha{a:.2f}", success=m["success"],
                                 **{c: m.get(c) for c in AU_COLS}, smile=m.get("smile"),
                                 d_au_to_source=dau))
                act = _mean_of(m, active) if active else None
                for key, val in (("d_src", ds), ("d_tgt", dt), ("d_au", dau), ("act", act)):
                    if val is not None:
                        per_alpha[a][key].append(val)
            tm, sm = v["m_mean"]["embedding"], m_src_mean["embedding"]
            row_s.update(tgt_mean_face=distance(tm, src_emb_mean),
                         src_mean_face=distance(sm, src_emb_mean))
            row_t.update(tgt_mean_face=distance(tm, v["emb_mean"]),
                         src_mean_face=distance(sm, v["emb_mean"]))
            like += [row_s, row_t]
        _write_csv(out / "evaluation" / "likeliness" / f"expression{k}.csv", like)
        _write_csv(out / "evaluation" / "quality" / f"AUs_expression{k}.csv", qual)
        experiment_rows[k] = like
    analyzer.close()

    def stats(vals):
        return (float(np.mean(vals)), float(np.max(vals))) if vals else (None, None)

    rows = []
    crops = [d for v in tgts.values() for d in (distance(e, v["emb_mean"]) for e in v["crops"])
             if d is not None]
    d_au0 = [x for x in base_d_au if x is not None]
    base_act = [x for x in base_act if x is not None]
    rows.append(dict(alpha=0.0, what="target mean face", n=len(d_au0),
                     d_au=float(np.mean(d_au0)) if d_au0 else None,
                     active_au=float(np.mean(base_act)) if base_act else None))
    for a in alphas:
        pa = per_alpha[a]
        mt, xt = stats(pa["d_tgt"])
        ms, _ = stats(pa["d_src"])
        rows.append(dict(alpha=a, what="transfer", n=len(pa["d_tgt"]), d_target_mean=mt,
                         d_target_max=xt,
                         share_below_06=(float(np.mean(np.array(pa["d_tgt"]) < SAME_PERSON))
                                         if pa["d_tgt"] else None),
                         d_source_mean=ms,
                         d_au=float(np.mean(pa["d_au"])) if pa["d_au"] else None,
                         active_au=float(np.mean(pa["act"])) if pa["act"] else None))
    ref_act = [x for x in ref_act if x is not None]
    rows.append(dict(alpha=1.0, what="source photo", n=len(ref_act),
                     active_au=float(np.mean(ref_act)) if ref_act else None))
    _write_csv(out / "summary.csv", rows)
    tr = [r for r in rows if r["what"] == "transfer" and r["d_target_mean"] is not None]
    id_met = bool(tr) and all(r["d_target_mean"] < SAME_PERSON for r in tr if r["alpha"] <= 0.5)
    id_all = bool(tr) and all(r["d_target_max"] < SAME_PERSON for r in tr if r["alpha"] <= 0.5)
    au_rows = [r for r in rows if r.get("d_au") is not None and r["what"] != "source photo"]
    rho = _spearman([r["alpha"] for r in au_rows], [r["d_au"] for r in au_rows])
    au_met = bool(au_rows) and rho is not None and rho < 0 and au_rows[-1]["d_au"] < au_rows[0]["d_au"]
    summary = dict(
        rows=rows, notes=notes, missed=[str(p) for p in missed],
        crop_baseline=dict(mean=float(np.mean(crops)) if crops else None,
                           max=float(np.max(crops)) if crops else None, n=len(crops)),
        targets=dict(
            identity_mean_below_06=id_met, identity_every_output_below_06=id_all,
            au_toward_source=au_met, au_spearman_alpha_vs_d_au=rho),
        embedder=getattr(embedder, "name", None), alphas=list(alphas),
        experiments={f"expression{k}": f"{src_name}_expression{v}" for k, v in experiments.items()})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def _f(v, nd=3):
    return "" if v is None else f"{v:.{nd}f}"


def markdown(s: dict) -> str:
    """The summary table (README)."""
    lines = ["| alpha | outputs | dist. to target mean (mean / max) | share < 0.6 | "
             "dist. to source mean | d_AU to source | source's AUs (mean intensity) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in s["rows"]:
        if r["what"] == "target mean face":
            lines.append(f"| 0 (target mean face) | {r['n']} | | | | {_f(r.get('d_au'))} | "
                         f"{_f(r.get('active_au'))} |")
        elif r["what"] == "source photo":
            lines.append(f"| source photo | {r['n']} | | | | 0 | {_f(r.get('active_au'))} |")
        else:
            lines.append(f"| {r['alpha']:.2f} | {r['n']} | {_f(r['d_target_mean'])} / "
                         f"{_f(r['d_target_max'])} | {_f(r['share_below_06'], 2)} | "
                         f"{_f(r['d_source_mean'])} | {_f(r['d_au'])} | "
                         f"{_f(r.get('active_au'))} |")
    t, b = s["targets"], s["crop_baseline"]
    lines += ["", f"- baseline: the targets' own 64 px aligned crops are {_f(b['mean'])} (max "
              f"{_f(b['max'])}) from their target mean ({b['n']} crops)",
              f"- identity distance to target mean < 0.6 for alpha <= 0.5 (mean per alpha): "
              f"{'met' if t['identity_mean_below_06'] else 'MISSED'}; every single output: "
              f"{'met' if t['identity_every_output_below_06'] else 'missed'}",
              f"- AUs move toward the source as alpha grows (Spearman(alpha, d_AU) = "
              f"{_f(t['au_spearman_alpha_vs_d_au'])}, d_AU(0.5) < d_AU(0)): "
              f"{'met' if t['au_toward_source'] else 'MISSED'}"]
    lines += [f"- {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Seed 004's evaluation of the Glow transfer.")
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="the identities folder")
    ap.add_argument("--targets", nargs="+", default=["id1_aligned", "id2_aligned"])
    ap.add_argument("--source", default="expressions")
    ap.add_argument("--alpha", default="0.3:0.5:0.02")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="a Glow .pt2 (default: the bundled model)")
    a = ap.parse_args(argv)
    from warpcam.realtime.runtime import ModelError

    try:
        codec = GlowCodec(a.model)
        s = evaluate(codec, a.root, a.out, a.targets, a.source, parse_alphas(a.alpha))
    except (TransferError, ModelError, FileNotFoundError) as exc:
        raise SystemExit(f"glow evaluate: {exc}") from None
    print(markdown(s), end="")
    print(f"wrote {a.out}/evaluation/likeliness, evaluation/quality, transferring, summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
