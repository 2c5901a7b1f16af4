"""Smile training data: aligned 64 x 64 faces of a built face data set
(``python -m warpcam.training.data.build``, :mod:`warpcam.training.data`) with a 1/0 ``smile``
label (CelebA's ``Smiling`` is copied to ``smile`` by the builder; GENKI-4K has ``smile``),
held in memory as uint8.

Anchors (the seed's ``--use_anchors``, here 4 points): right eye centre, left eye centre, mouth
centre and nose tip mapped into the 64-px aligned crop with the similarity of
:func:`warpcam.training.data.align.align_affine` (fitted from the index's landmark columns, which
are the same three points, so the crop is the one the builder wrote).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from warpcam.training.data import align
from warpcam.training.data.index import read_index

N_ANCHORS = 4


def row_anchors(r: dict, size: int = 64) -> np.ndarray:
    """``(4, 2)`` anchors in crop pixels from an index row (module docstring)."""
    def pt(k):
        return [float(r[k + "_x"]), float(r[k + "_y"])]
    fp = np.array([pt("eye_r"), pt("eye_l"), pt("mouth")])
    m = align.similarity_fit(fp, align.template_points(size))
    p = np.vstack([fp, [pt("nose")]])
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def frame_anchors(landmarks: np.ndarray, size: int = 64) -> np.ndarray:
    """The same anchors from 478 FaceMesh landmarks in frame pixels (live use)."""
    from warpcam.core import landmarks as lm
    fp = align.face_points(landmarks)
    m = align.similarity_fit(fp, align.template_points(size))
    p = np.vstack([fp, np.asarray(landmarks, np.float64)[lm.NOSE_TIP, :2][None]])
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


HINTS_FILE = "smile_hints.npz"


def load_hints(root, ids) -> torch.Tensor:
    """The landmark-smile hints of ``ids`` (``(N, 2, 64, 64)`` float16, crop pixels, each at
    its face's training delta ``1 - 2 smile``) from ``ROOT/smile_hints.npz`` (arrays ``ids``
    and ``hint``, no pickles), written by ``python -m benchmarks.smile_model --write-hints
    ROOT`` (the landmark smile is run-time code, which ``training/`` does not import)."""
    p = Path(root) / HINTS_FILE
    if not p.exists():
        raise SystemExit(f"{p}: no hints (python -m benchmarks.smile_model --write-hints {root})")
    with np.load(p, allow_pickle=False) as z:
        pos = {k: i for i, k in enumerate(z["ids"].tolist())}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise SystemExit(f"{p}: no hint for {len(missing)} faces (e.g. {missing[0]})")
        return torch.from_numpy(z["hint"][[pos[i] for i in ids]])


class SmileFaces:
    """``images`` uint8 ``(N, 3, 64, 64)`` RGB, ``labels`` float32 ``(N,)`` in {0, 1},
    ``anchors`` float32 ``(N, 4, 2)``, ``ids``, ``sets`` of the selected rows."""

    def __init__(self, root, split: Optional[str] = "train", sets: Optional[Sequence[str]] = None,
                 limit: Optional[int] = None, hints: bool = False):
        self.root = Path(root)
        rows = [r for r in read_index(self.root)
                if r.get("found") == "1" and r.get("face_64") and r.get("smile", "") != ""
                and (split is None or r.get("split") == split)
                and (sets is None or r.get("set") in sets)]
        if limit is not None:
            rows = rows[:limit]
        if not rows:
            raise SystemExit(f"{self.root}: no labelled faces (split {split}, sets {sets})")
        imgs = np.empty((len(rows), 3, 64, 64), np.uint8)
        for i, r in enumerate(rows):
            im = cv2.imread(str(self.root / r["face_64"]), cv2.IMREAD_COLOR)
            if im is None or im.shape[:2] != (64, 64):
                raise SystemExit(f"cannot read a 64x64 face from {self.root / r['face_64']}")
            imgs[i] = im[..., ::-1].transpose(2, 0, 1)
        self.images = torch.from_numpy(imgs)
        self.labels = torch.tensor([float(float(r["smile"]) > 0.5) for r in rows])
        self.anchors = torch.from_numpy(np.stack([row_anchors(r) for r in rows]))
        self.ids = [r["id"] for r in rows]
        self.sets = [r["set"] for r in rows]
        self.hints = load_hints(self.root, self.ids) if hints else None

    def __len__(self):
        return len(self.labels)

    def batch(self, idx, flip: Optional[torch.Tensor] = None, with_hint: bool = False) -> tuple:
        """``(images float [0, 1], labels, anchors)`` of ``idx`` (and the hints, ``(N, 2, 64,
        64)`` float, with ``with_hint``); ``flip`` (bool per item) mirrors left-right (anchors
        mirrored and the two eyes swapped; the hint mirrored with its x component negated)."""
        x = self.images[idx].float().div_(255.0)
        y = self.labels[idx]
        a = self.anchors[idx].clone()
        h = self.hints[idx].float() if with_hint else None
        if flip is not None and bool(flip.any()):
            x[flip] = x[flip].flip(-1)
            af = a[flip]
            af[..., 0] = 63.0 - af[..., 0]
            af = af[:, [1, 0, 2, 3]]
            a[flip] = af
            if h is not None:
                hf = h[flip].flip(-1)
                hf[:, 0] = -hf[:, 0]
                h[flip] = hf
        return (x, y, a, h) if with_hint else (x, y, a)

    def mean_image(self) -> torch.Tensor:
        return self.images.float().mean(0, keepdim=True).div_(255.0)
