"""PyTorch datasets over a built face data set (``index.csv`` + PNG crops,
:mod:`warpcam.training.data.build`), for the expression models.

- :class:`FaceCrops`: one found face per item: ``{"image": 3 x S x S float32 RGB in [0, 1],
  "labels": float32 (len(columns),) with NaN where a row has no value, "mask": bool, "id",
  "index"}``.
- :class:`FacePairs`: the same-person pairs of ``pairs.csv``: ``{"a", "b"`` (images),
  ``"labels_a", "labels_b", "mask_a", "mask_b", "id_a", "id_b"}``; the AU columns by default,
  so ``labels_b - labels_a`` is the expression change of the pair.

Both select rows by ``split`` (``"train"``, ``"val"``, ``"test"`` or None for all), ``sets``
(set names) and ``where`` (a callable on the index row of strings), and read crops with OpenCV.
``transform`` (optional) receives and returns the image tensor (pairs: both at once,
``transform(a, b)``, so a random flip or crop is the same for both).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from warpcam.training.data.index import AU_COLUMNS, read_index, read_pairs

__all__ = ["FaceCrops", "FacePairs", "AU_COLUMNS", "load_image"]


def load_image(path) -> torch.Tensor:
    """``3 x H x W`` float32 RGB in [0, 1] from an image file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    rgb = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))
    return torch.from_numpy(rgb).float().div_(255.0)


def _values(row: dict, columns: Sequence[str]):
    v = np.full(len(columns), np.nan, np.float32)
    for i, c in enumerate(columns):
        s = row.get(c, "")
        if s not in ("", None):
            try:
                v[i] = float(s)
            except ValueError:
                pass
    return torch.from_numpy(v), torch.from_numpy(~np.isnan(v))


def _select(rows, split, sets, where):
    out = []
    for r in rows:
        if r.get("found") != "1":
            continue
        if split is not None and r.get("split") != split:
            continue
        if sets is not None and r.get("set") not in sets:
            continue
        if where is not None and not where(r):
            continue
        out.append(r)
    return out


class FaceCrops(Dataset):
    """Found faces of a built data set (module docstring).

    Args:
        root: the data set folder (``index.csv`` inside).
        crop: ``"face_64"``, ``"face_128"``, ``"face_256"`` or ``"mouth_64"``.
        columns: label columns, e.g. ``("smile",)``, ``AU_COLUMNS`` or CelebA's ``("Smiling",)``.
        require: keep only rows that have a value in every label column.
    """

    def __init__(self, root, split: Optional[str] = "train", crop: str = "face_64",
                 columns: Sequence[str] = ("smile",), sets: Optional[Sequence[str]] = None,
                 where: Optional[Callable[[dict], bool]] = None, require: bool = False,
                 transform: Optional[Callable] = None):
        self.root = Path(root)
        self.crop = crop
        self.columns = tuple(columns)
        self.transform = transform
        rows = _select(read_index(self.root), split, sets, where)
        if rows and crop not in rows[0]:
            raise KeyError(f"{self.root}: no crop column {crop!r}")
        rows = [r for r in rows if r.get(crop)]
        if require:
            rows = [r for r in rows if all(r.get(c, "") != "" for c in self.columns)]
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = self.rows[i]
        img = load_image(self.root / r[self.crop])
        if self.transform is not None:
            img = self.transform(img)
        labels, mask = _values(r, self.columns)
        return dict(image=img, labels=labels, mask=mask, id=r["id"], index=i)


class FacePairs(Dataset):
    """Same-person pairs of a built data set (module docstring); ``kind`` selects ``"video"``
    or ``"person"`` pairs (None: both)."""

    def __init__(self, root, split: Optional[str] = "train", crop: str = "face_64",
                 columns: Sequence[str] = AU_COLUMNS, kind: Optional[str] = None,
                 transform: Optional[Callable] = None):
        self.root = Path(root)
        self.crop = crop
        self.columns = tuple(columns)
        self.transform = transform
        by_id = {r["id"]: r for r in read_index(self.root) if r.get("found") == "1"}
        self.pairs = []
        for p in read_pairs(self.root):
            if split is not None and p.get("split") != split:
                continue
            if kind is not None and p.get("kind") != kind:
                continue
            a, b = by_id.get(p["a"]), by_id.get(p["b"])
            if a is not None and b is not None and a.get(crop) and b.get(crop):
                self.pairs.append((a, b, p))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        a, b, p = self.pairs[i]
        ia, ib = load_image(self.root / a[self.crop]), load_image(self.root / b[self.crop])
        if self.transform is not None:
            ia, ib = self.transform(ia, ib)
        la, ma = _values(a, self.columns)
        lb, mb = _values(b, self.columns)
        return dict(a=ia, b=ib, labels_a=la, labels_b=lb, mask_a=ma, mask_b=mb, id_a=a["id"],
                    id_b=b["id"], au_diff_max=float(p.get("au_diff_max") or "nan"), index=i)
