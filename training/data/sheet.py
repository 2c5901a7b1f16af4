"""Contact sheet of a built face data set: one row per set with aligned faces, their mean, mouth
crops and their mean. Faint lines mark the template's eye and mouth heights and ticks its eye and
mouth x positions (:data:`warpcam.training.data.align.TEMPLATE`): in a good alignment the eyes
and mouths of every tile sit on them and the mean face is sharp there."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from warpcam.training.data import align, index

TILE = 64
HEADER = 14


def _read(root: Path, rel: str, size: int) -> Optional[np.ndarray]:
    if not rel:
        return None
    img = cv2.imread(str(root / rel), cv2.IMREAD_COLOR)
    if img is None:
        return None
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _guides(tile: np.ndarray, lines: bool = True) -> np.ndarray:
    """Template guides on a face tile (alpha-blended lines, solid ticks at the edges)."""
    s = tile.shape[0]
    over = tile.copy()
    eye_y = int(round(align.TEMPLATE["right_eye"][1] * s - 0.5))
    mouth_y = int(round(align.TEMPLATE["mouth"][1] * s - 0.5))
    xs = [int(round(align.TEMPLATE[k][0] * s - 0.5)) for k in align.TEMPLATE_ORDER]
    if lines:
        over[eye_y, :] = (0, 255, 0)
        over[mouth_y, :] = (0, 200, 255)
        tile = cv2.addWeighted(over, 0.35, tile, 0.65, 0)
    for y, c in ((eye_y, (0, 255, 0)), (mouth_y, (0, 200, 255))):
        tile[y, :3] = c
        tile[y, -3:] = c
    for x in xs:
        tile[:3, x] = (0, 255, 0)
        tile[-3:, x] = (0, 200, 255)
    return tile


def contact_sheet(root, path, per_set: int = 7, mouths: int = 4, mean_of: int = 200,
                  seed: int = 0, rows: Optional[List[dict]] = None) -> Path:
    """Write the sheet of the data set at ``root`` to ``path`` (a palette PNG, small)."""
    root, path = Path(root), Path(path)
    rows = rows if rows is not None else index.read_index(root)
    by_set: Dict[str, List[dict]] = {}
    for r in rows:
        if str(r.get("found")) == "1" and r.get("face_64"):
            by_set.setdefault(r["set"], []).append(r)
    cnt = index.counts(rows)
    rng = np.random.default_rng(seed)
    bands = []
    n_cols = per_set + 1 + mouths + 1
    for s in sorted(by_set):
        rs = by_set[s]
        pick = [rs[i] for i in sorted(rng.choice(len(rs), min(per_set, len(rs)), replace=False))]
        faces = [_read(root, r["face_64"], TILE) for r in pick]
        sample = [rs[i] for i in rng.choice(len(rs), min(mean_of, len(rs)), replace=False)]
        mean_f = np.mean([_read(root, r["face_64"], TILE).astype(np.float32) for r in sample],
                         axis=0).astype(np.uint8)
        has_m = [r for r in sample if r.get("mouth_64")]
        mouth_tiles = [_read(root, r["mouth_64"], TILE) for r in pick[:mouths] if r.get("mouth_64")]
        mean_m = (np.mean([_read(root, r["mouth_64"], TILE).astype(np.float32) for r in has_m],
                          axis=0).astype(np.uint8) if has_m else np.zeros((TILE, TILE, 3), np.uint8))
        tiles = [_guides(f) for f in faces] + [np.zeros((TILE, TILE, 3), np.uint8)] * (per_set - len(faces))
        tiles.append(_guides(mean_f))
        tiles += mouth_tiles + [np.zeros((TILE, TILE, 3), np.uint8)] * (mouths - len(mouth_tiles))
        tiles.append(mean_m)
        band = np.full((HEADER + TILE, n_cols * TILE, 3), 255, np.uint8)
        band[HEADER:] = np.hstack(tiles)
        c = cnt.get(s, {})
        text = (f"{s}: {c.get('found', 0)}/{c.get('items', 0)} found "
                f"({100 * c.get('share_found', 0):.1f}%)")
        cv2.putText(band, text, (3, HEADER - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(band, "mean", (per_set * TILE + 3, HEADER - 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(band, "mouth crops (seed 003) + mean", ((per_set + 1) * TILE + 3, HEADER - 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        bands.append(band)
    if not bands:
        raise ValueError(f"{root}: no found faces to draw")
    sheet = np.vstack(bands)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image
        im = Image.fromarray(cv2.cvtColor(sheet, cv2.COLOR_BGR2RGB))
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                    dither=Image.Dither.NONE).save(path, optimize=True)
    except ImportError:
        cv2.imwrite(str(path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
