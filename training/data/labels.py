"""Label sources of the face datasets: label CSVs beside image folders, OpenFace CSVs, the seeds'
AU pickles (read with :mod:`.safe_pickle`) and the AU estimator (for anything unlabelled).

AU columns follow OpenFace 2.0: ``AU01_r`` ... ``AU45_r``, intensities on the 0-5 scale.

- **Label CSV** (``shared/data/train/*/labels.csv``, CelebA's ``attributes.csv``, any CSV with
  an ``image`` or ``path`` column beside the images): every other column becomes a label column
  of that name. ``person`` is the identity (splits and same-person pairs), ``emotion`` the
  expression label. CelebA's ``Smiling`` is copied to ``smile`` (1/0) so that one column holds
  the smile label of CelebA, GENKI-4K and SMILEsmileD.
- **OpenFace CSV** (``FeatureExtraction``/``FaceLandmarkImg`` output or ``warpcam analyze``):
  column names are stripped of OpenFace's leading spaces. A CSV with an ``input`` column labels
  the images of that name (or, where ``input`` names a video file, that video's frames); a CSV named after an image (``FaceLandmarkImg`` writes ``NAME.csv``)
  labels that image (its most confident successful row); any other CSV labels the frames of the
  video with the same stem, OpenFace's **1-based** ``frame`` matched to the 0-based decode index
  ``frame - 1``. Rows with ``success = 0`` are ignored.
- **AU pickle**: the seed-002 format (a list of dicts with ``path`` or ``file_path`` and
  ``aus``; 11 AUs in the layout 1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, or 17 in OpenFace's order)
  and GANimation's ``aus_openface.pkl`` (a dict ``name -> 17 OpenFace AUs``). Keys are matched to
  an image by its path relative to the pickle's folder, then its file name, then its stem.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from warpcam.training.data.safe_pickle import safe_load

#: OpenFace 2.0's 17 intensity AUs, in its column order (as ``warpcam.realtime.au.AU_NAMES``).
OPENFACE_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14",
                "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
#: The seed-002 (Expression-manipulator) 11-AU layout.
SEED002_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU09", "AU12", "AU17", "AU20", "AU25",
               "AU26")
LABEL_CSV_KEYS = ("image", "path", "file", "filename")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def au_names() -> Tuple[str, ...]:
    """The AU estimator's names when it is importable, else OpenFace's 17."""
    try:
        from warpcam.realtime.au import AU_NAMES
        return tuple(AU_NAMES)
    except Exception:
        return OPENFACE_AUS


def au_column(name: str) -> str:
    """``"AU12"`` -> ``"AU12_r"`` (a name already ending in ``_r`` is kept)."""
    return name if name.endswith("_r") else f"{name}_r"


def _num(v) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------------- label CSVs
def find_label_csvs(folder: Path) -> List[Path]:
    """CSV files directly in ``folder`` whose header has an image column."""
    out = []
    for p in sorted(Path(folder).glob("*.csv")):
        try:
            with open(p, newline="") as f:
                head = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            continue
        if any(h.strip().lower() in LABEL_CSV_KEYS for h in head):
            out.append(p)
    return out


def read_label_csv(path: Path) -> Dict[str, dict]:
    """``{image key: {column: value}}`` of one label CSV; keys are the image column's value
    (a relative path or a file name) as written, with ``/`` separators."""
    out: Dict[str, dict] = {}
    with open(path, newline="") as f:
        rd = csv.DictReader(f)
        cols = [c for c in (rd.fieldnames or [])]
        key = next(c for c in cols if c.strip().lower() in LABEL_CSV_KEYS)
        for row in rd:
            k = (row.pop(key) or "").strip().replace("\\", "/")
            if not k:
                continue
            lab = {c.strip(): (v.strip() if isinstance(v, str) else v) for c, v in row.items()
                   if c is not None}
            if "Smiling" in lab and "smile" not in lab:
                lab["smile"] = lab["Smiling"]
            out[k] = lab
    return out


def lookup(table: dict, rel: str):
    """Entry of ``table`` for an image at relative path ``rel``: by path, file name, stem."""
    rel = rel.replace("\\", "/")
    if rel in table:
        return table[rel]
    name = rel.rsplit("/", 1)[-1]
    if name in table:
        return table[name]
    stem = name.rsplit(".", 1)[0]
    return table.get(stem)


# ---------------------------------------------------------------------------- AU pickles
def _au_dict(vec, where: str) -> dict:
    v = np.asarray(vec, np.float64).reshape(-1)
    if v.size == len(OPENFACE_AUS):
        names = OPENFACE_AUS
    elif v.size == len(SEED002_AUS):
        names = SEED002_AUS
    else:
        raise ValueError(f"{where}: {v.size} AUs; expected 17 (OpenFace order) or 11 (seed 002)")
    return {au_column(n): float(x) for n, x in zip(names, v)}


def load_au_pickle(path) -> Dict[str, dict]:
    """``{key: {"AU01_r": ..}}`` from a seed-format AU pickle, read with the restricted
    unpickler (:func:`warpcam.training.data.safe_pickle.safe_load`). Keys: the ``path``
    entries (relative to the pickle's folder) or the dict's names; each also by file name
    and stem."""
    path = Path(path)
    data = safe_load(path)
    out: Dict[str, dict] = {}
    if isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, (list, tuple)):
        items = []
        for i, d in enumerate(data):
            if not isinstance(d, dict):
                raise ValueError(f"{path}: entry {i} is a {type(d).__name__}, not a dict")
            k = d.get("path", d.get("file_path"))
            if k is None or "aus" not in d:
                raise ValueError(f"{path}: entry {i} lacks 'path'/'file_path' or 'aus'")
            items.append((str(k), d["aus"]))
    else:
        raise ValueError(f"{path}: a {type(data).__name__}; expected a list of dicts or a dict")
    for k, v in items:
        aus = _au_dict(v, f"{path}: {k}")
        k = k.replace("\\", "/")
        name = k.rsplit("/", 1)[-1]
        for key in (k, name, name.rsplit(".", 1)[0]):
            out.setdefault(key, aus)
    return out


# ---------------------------------------------------------------------------- OpenFace CSVs
def read_openface_csv(path) -> List[dict]:
    """Rows of an OpenFace-style CSV, column names stripped, numbers as float where they
    parse."""
    rows = []
    with open(path, newline="") as f:
        rd = csv.reader(f)
        head = [h.strip() for h in next(rd, [])]
        for r in rd:
            row = {}
            for h, v in zip(head, r):
                v = v.strip()
                f_ = _num(v)
                row[h] = f_ if f_ is not None else v
            rows.append(row)
    return rows


class OpenFaceLabels:
    """AU labels from OpenFace CSVs (module docstring): ``for_image(rel)`` and
    ``for_frame(video_stem, frame_index)`` return ``{"AU01_r": ..}`` or None."""

    def __init__(self, paths: Iterable = ()):
        self.images: Dict[str, dict] = {}
        self.videos: Dict[str, Dict[int, dict]] = {}
        self.files: List[str] = []
        for p in paths:
            p = Path(p)
            for f in (sorted(p.rglob("*.csv")) if p.is_dir() else [p]):
                self._add(f)

    @staticmethod
    def _aus(row) -> dict:
        return {k: float(v) for k, v in row.items()
                if k.startswith("AU") and k.endswith("_r") and isinstance(v, float)}

    @staticmethod
    def _ok(row) -> bool:
        s = row.get("success", 1.0)
        return not isinstance(s, float) or s > 0.5

    def _add(self, f: Path):
        rows = [r for r in read_openface_csv(f) if self._ok(r)]
        self.files.append(str(f))
        if rows and "input" in rows[0]:
            for r in rows:
                name = str(r["input"]).replace("\\", "/")
                if name.lower().endswith(VIDEO_EXTS) and isinstance(r.get("frame"), float):
                    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                    self.videos.setdefault(stem, {}).setdefault(int(r["frame"]) - 1, self._aus(r))
                    continue
                self.images.setdefault(name, self._aus(r))
                self.images.setdefault(name.rsplit("/", 1)[-1], self._aus(r))
            return
        if rows and "frame" in rows[0] and (len(rows) > 1 or self._looks_video(f)):
            table = self.videos.setdefault(f.stem, {})
            for r in rows:
                if isinstance(r.get("frame"), float):
                    table.setdefault(int(r["frame"]) - 1, self._aus(r))
            return
        if rows:
            best = max(rows, key=lambda r: r.get("confidence", 0.0)
                       if isinstance(r.get("confidence"), float) else 0.0)
            self.images[f.stem] = self._aus(best)

    @staticmethod
    def _looks_video(f: Path) -> bool:
        return any((f.parent / (f.stem + ext)).exists() for ext in VIDEO_EXTS)

    def for_image(self, rel: str) -> Optional[dict]:
        return lookup(self.images, rel) if self.images else None

    def for_frame(self, video_stem: str, frame: int) -> Optional[dict]:
        t = self.videos.get(video_stem)
        return t.get(frame) if t else None


# ---------------------------------------------------------------------------- AU estimator
def make_estimator(calibrate: bool):
    """``(estimator or None, reason)``: ``warpcam.realtime.au.AUEstimator(calibrate=...)``;
    None with the reason when it cannot be imported or built."""
    try:
        from warpcam.realtime.au import AUEstimator
    except Exception as e:  # not written yet, or broken: the builder goes on without it
        return None, f"warpcam.realtime.au is not importable ({type(e).__name__}: {e})"
    try:
        return AUEstimator(calibrate=calibrate), ""
    except Exception as e:
        return None, f"AUEstimator(calibrate={calibrate}) failed ({type(e).__name__}: {e})"


def estimate(est, face, t=None) -> Tuple[dict, Optional[float]]:
    """``({"AU01_r": ..}, smile)`` from the estimator for one tracked face."""
    res = est.estimate(face, t=t)
    ints = getattr(res, "intensities", None) or {}
    aus = {au_column(k): float(v) for k, v in ints.items() if _num(v) is not None}
    smile = _num(getattr(res, "smile", None))
    return aus, smile
