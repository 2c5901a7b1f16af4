"""The built data set's files: ``index.csv`` (one row per face, or per image/frame where no face
was found), ``pairs.csv`` (same-person pairs) and ``manifest.json``; the split rule and the pair
rule.

**Splits** are drawn per *group*, never per frame or per photo: a group is a video
(``video:<file stem>``), a person (``person:<name>`` where the labels name one, LFW), or, for
sets without identities (CelebA's subset here has no identity file, GENKI-4K, SMILEsmileD), the
single image (``image:<id>``; such a split can share a person between train and test). A
group's split is fixed by a hash of ``"<seed>:<group>"`` (uniform in [0, 1): below ``test`` ->
test, below ``test + val`` -> val, else train), so it does not change when other data are added.

**Pairs** are two found faces of one person: two frames of one track of one video, or two photos
of one LFW person, whose AUs differ: the largest absolute difference over the AU columns both
rows have is at least ``min_au_diff`` (default 1.0 on the 0-5 scale). Where a group has no AUs at
all (no labels and no AU estimator) two photos count as different when their ``emotion`` labels
differ. At most ``per_group`` pairs per group, drawn with the seed.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from warpcam.training.data.labels import OPENFACE_AUS, au_column

INDEX_FILE, PAIRS_FILE, MANIFEST_FILE = "index.csv", "pairs.csv", "manifest.json"
#: AU label columns (label source in ``au_source``) and the AU estimator's own columns.
AU_COLUMNS = tuple(au_column(a) for a in OPENFACE_AUS)
EST_COLUMNS = tuple("est_" + c for c in AU_COLUMNS) + ("est_smile",)
#: Crop columns: paths relative to the data set root (empty where no face was found).
CROP_COLUMNS = ("face_64", "face_128", "face_256", "mouth_64")
BASE_COLUMNS = (
    "id", "set", "kind", "source", "frame", "timestamp", "face_index", "person", "group", "split",
    "found", "n_faces", "retry", "width", "height", "grey", *CROP_COLUMNS, "mouth_clamped",
    "eye_r_x", "eye_r_y", "eye_l_x", "eye_l_y", "mouth_x", "mouth_y", "nose_x", "nose_y",
    "align_rms", "yaw", "pitch", "roll", "smile", "emotion", "au_source")
PAIR_COLUMNS = ("a", "b", "group", "split", "kind", "au_diff_max", "au_diff_mean", "emotion_a",
                "emotion_b", "frame_gap")


def split_of(group: str, seed: int = 0, val: float = 0.1, test: float = 0.1) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a group (module docstring)."""
    h = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0 ** 64
    return "test" if u < test else "val" if u < test + val else "train"


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in columns})
    tmp.replace(path)


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.5g}"
    return v


def read_index(root) -> List[dict]:
    """Rows of ``ROOT/index.csv`` as dicts of strings."""
    with open(Path(root) / INDEX_FILE, newline="") as f:
        return list(csv.DictReader(f))


def read_pairs(root) -> List[dict]:
    """Rows of ``ROOT/pairs.csv`` as dicts of strings (empty when there is none)."""
    p = Path(root) / PAIRS_FILE
    if not p.exists():
        return []
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def _au_matrix(rows: Sequence[dict]) -> np.ndarray:
    m = np.full((len(rows), len(AU_COLUMNS)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(AU_COLUMNS):
            v = r.get(c)
            if v not in (None, ""):
                m[i, j] = float(v)
    return m


def pair_group(row: dict) -> str:
    """The group within which pairs are formed: a video's track, or a person; '' for none."""
    if row.get("kind") == "video":
        return f"{row['group']}#t{row.get('face_index', 0)}"
    return row["group"] if str(row.get("group", "")).startswith("person:") else ""


def make_pairs(rows: Sequence[dict], seed: int = 0, min_au_diff: float = 1.0,
               per_group: int = 50) -> List[dict]:
    """Same-person pairs (module docstring) among the found rows."""
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        if str(r.get("found")) in ("1", "True") or r.get("found") is True:
            g = pair_group(r)
            if g:
                groups.setdefault(g, []).append(r)
    out = []
    for gi, g in enumerate(sorted(groups)):
        rs = groups[g]
        if len(rs) < 2:
            continue
        m = _au_matrix(rs)
        i, j = np.triu_indices(len(rs), 1)
        d = np.abs(m[i] - m[j])
        has = ~np.isnan(d)
        any_au = has.any(axis=1)
        dmax = np.where(any_au, np.nanmax(np.where(has, d, -np.inf), axis=1), np.nan)
        dmean = np.where(any_au, np.nansum(np.where(has, d, 0.0), axis=1)
                         / np.maximum(has.sum(axis=1), 1), np.nan)
        emo = np.array([str(r.get("emotion") or "") for r in rs])
        by_emotion = (~any_au) & (emo[i] != "") & (emo[j] != "") & (emo[i] != emo[j])
        ok = np.where(any_au, np.nan_to_num(dmax, nan=-1.0) >= min_au_diff, by_emotion)
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            continue
        rng = np.random.default_rng([seed, gi])
        if cand.size > per_group:
            cand = np.sort(rng.choice(cand, per_group, replace=False))
        for k in cand:
            a, b = rs[i[k]], rs[j[k]]
            gap = ""
            if a.get("kind") == "video":
                gap = abs(int(a["frame"]) - int(b["frame"]))
            out.append(dict(a=a["id"], b=b["id"], group=a["group"], split=a["split"],
                            kind="video" if a.get("kind") == "video" else "person",
                            au_diff_max=dmax[k], au_diff_mean=dmean[k],
                            emotion_a=a.get("emotion", ""), emotion_b=b.get("emotion", ""),
                            frame_gap=gap))
    return out


def counts(rows: Sequence[dict]) -> Dict[str, dict]:
    """Per set: items (images or video frames looked at), found (items with a face), share
    found, faces (rows with a face), groups, rows per split, AU label sources."""
    out: Dict[str, dict] = {}
    items: Dict[Tuple[str, str, str], bool] = {}
    for r in rows:
        key = (r["set"], r["source"], str(r.get("frame", "")))
        items[key] = items.get(key, False) or bool(int(r["found"]))
    for (s, _, _), f in items.items():
        c = out.setdefault(s, dict(items=0, found=0, faces=0, groups=set(),
                                   split=dict(train=0, val=0, test=0), au_source={}))
        c["items"] += 1
        c["found"] += int(f)
    for r in rows:
        c = out[r["set"]]
        c["groups"].add(r["group"])
        if int(r["found"]):
            c["faces"] += 1
            c["split"][r["split"]] += 1
            src = r.get("au_source") or "none"
            c["au_source"][src] = c["au_source"].get(src, 0) + 1
    for c in out.values():
        c["groups"] = len(c["groups"])
        c["share_found"] = round(c["found"] / c["items"], 4) if c["items"] else 0.0
    return out
