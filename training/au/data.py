"""AU-editing training data: aligned faces of a built face data set
(``python -m warpcam.training.data.build``, :mod:`warpcam.training.data`) with AU labels from the
AU estimator (the index's ``est_AU*_r`` columns, OpenFace's 0-5 scale, divided by
:data:`~warpcam.training.au.model.AU_SCALE`), held in memory as uint8.

Sets: CelebA, LFW expressions and the shared videos' frames by default (colour photos with the
whole face; the grey or low-resolution smile sets are left out). Splits are the builder's
(by video for video frames, by person for LFW, by image for CelebA).

The seed's sampling (``data/dataset_aus.py``): the real condition is the face's own AUs +
U(-0.02, 0.02); the desired condition is another random face's AUs + U(-0.1, 0.1); the
generator reads the **relative** condition ``desired - real``. Train transforms: random
horizontal flip (AUs are bilateral here, the labels are kept) and the seed's Pad(8) +
RandomCrop(S) jitter, scaled to ``S`` (border replicated).

``single_au`` (beyond the seed, ``--single-au P``): with probability ``P`` a face's desired
condition is instead its own AUs with **one** AU (uniform over :data:`SINGLE_AUS`) moved by
U(-1, 1) on the 0-1 scale and clipped to [0, 1]. Another face's AUs differ mostly in AU12
(smiles dominate the photo sets), so the seed's sampling rarely asks for a brow, lid or
lip-stretch change alone, which is what the single-AU evaluation and sheet ask for.

``lower_present`` (beyond the seed, ``--lower-present Q``): of those single-AU samples, a share
``Q`` moves an AU **the face shows** (at least :data:`PRESENT` on the 0-1 scale, 1 intensity
point) **down** by U(0, 1), clipped at 0. Faces rarely show AU4 or AU7 strongly, so the uniform
choice almost never asks to take a visible brow lowerer or lid tightener away, and the model
learns to lower them only weakly (the live effect lowers only AUs the face shows: its
``negative="gate"``). A face that shows none of :data:`SINGLE_AUS` keeps the uniform choice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from warpcam.training.au.model import AU_NAMES, AU_SCALE
from warpcam.training.data.index import read_index

DEFAULT_SETS = ("celeba", "lfw_expressions", "videos")
EST_COLUMNS = tuple(f"est_{a}_r" for a in AU_NAMES)
#: AUs ``single_au`` sampling moves one at a time (the issue's single-AU set, plus AU1/2/6/25/26).
SINGLE_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU12", "AU15", "AU20", "AU25",
              "AU26")
#: ``lower_present``: an AU counts as shown from this value on the 0-1 scale (1 point of 0-5).
PRESENT = 0.2


def read_face(root: Path, row: dict, size: int) -> np.ndarray:
    """``size x size x 3`` uint8 BGR aligned face of an index row: the builder's
    ``face_<size>`` crop when it wrote one, else ``face_128`` area-resized."""
    p128 = row.get("face_128", "")
    cand = root / p128.replace("face_128", f"face_{size}") if p128 else None
    for p in ([cand] if cand is not None else []) + [root / p128]:
        im = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if im is not None:
            if im.shape[:2] != (size, size):
                im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
            return im
    raise SystemExit(f"cannot read the face crop of {row.get('id')} under {root}")


class AUFaces:
    """``images`` uint8 ``(N, 3, S, S)`` RGB, ``aus`` float32 ``(N, 17)`` on the 0-1 scale
    (``/ AU_SCALE``), ``ids``, ``sets``, ``groups`` of the selected rows.

    Raises:
        SystemExit: no face with all AU columns in the selection.
    """

    def __init__(self, root, split: Optional[str] = "train", size: int = 128,
                 sets: Optional[Sequence[str]] = DEFAULT_SETS, limit: Optional[int] = None,
                 single_au: float = 0.0, geometry: bool = False, lower_present: float = 0.0):
        self.root = Path(root)
        self.size = size
        self.single_au = float(single_au)
        self.lower_present = float(lower_present)
        rows = [r for r in read_index(self.root)
                if r.get("found") == "1" and r.get("face_128")
                and (split is None or r.get("split") == split)
                and (sets is None or r.get("set") in sets)
                and all(r.get(c, "") != "" for c in EST_COLUMNS)]
        if limit is not None:
            rows = rows[:limit]
        if not rows:
            raise SystemExit(f"{self.root}: no faces with AU estimates (split {split}, "
                             f"sets {sets})")
        imgs = np.empty((len(rows), 3, size, size), np.uint8)
        for i, r in enumerate(rows):
            imgs[i] = read_face(self.root, r, size)[..., ::-1].transpose(2, 0, 1)
        self.images = torch.from_numpy(imgs)
        self.aus = torch.tensor([[float(r[c]) for c in EST_COLUMNS] for r in rows],
                                dtype=torch.float32) / AU_SCALE
        self.ids = [r["id"] for r in rows]
        self.sets = [r["set"] for r in rows]
        self.groups = [r.get("group", "") for r in rows]
        self.points = self.params = self.has_points = None
        if geometry:
            from warpcam.training.au.geometry import LANDMARK_FILE, load_landmarks
            lms = load_landmarks(self.root)
            if lms is None:
                raise SystemExit(f"{self.root / LANDMARK_FILE}: missing; write it with "
                                 f"python -m warpcam.training.au.geometry --data {self.root}")
            pts = np.zeros((len(rows), 478, 3), np.float32)
            prm = np.zeros((len(rows), 20), np.float64)
            prm[:, 12] = prm[:, 17] = 1.0  # harmless frames for faces without landmarks
            has = np.zeros(len(rows), bool)
            for i, fid in enumerate(self.ids):
                if fid in lms:
                    pts[i], prm[i] = lms[fid]
                    has[i] = True
            self.points = torch.from_numpy(pts)
            self.params = torch.from_numpy(prm).float()
            self.has_points = torch.from_numpy(has)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: torch.Tensor, g: Optional[torch.Generator] = None,
              augment: bool = True, geometry: bool = False) -> tuple:
        """``(x (B, 3, S, S) RGB [-1, 1], real (B, C), desired (B, C), rel (B, C))`` for the
        faces ``idx`` (module docstring); ``g`` draws the targets, noise, flips and shifts.

        ``geometry=True`` (a data set built with ``geometry=True``) appends a dict: ``points``
        ``(B, 478, 3)`` and ``params`` ``(B, 20)`` of the unaugmented 128-px crop, ``xy``
        ``(B, 478, 2)`` those landmarks in the augmented ``S``-px crop (pixels, centres at
        integers), ``flip`` ``(B,)`` and ``valid`` ``(B,)`` (the tracker found the crop's face).
        """
        b = len(idx)
        x = self.images[idx].float().div_(127.5).sub_(1.0)
        flip = torch.zeros(b, dtype=torch.bool)
        shift = torch.zeros(b, 2)
        if augment:
            flip = torch.rand(b, generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
            pad = max(1, round(8 * self.size / 128))
            xp = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
            off = torch.randint(0, 2 * pad + 1, (b, 2), generator=g)
            x = torch.stack([xp[i, :, oy:oy + self.size, ox:ox + self.size]
                             for i, (oy, ox) in enumerate(off.tolist())])
            shift = (pad - off.flip(-1)).float()  # (x, y) of the unshifted origin
        real = self.aus[idx] + (torch.rand(b, self.aus.shape[1], generator=g) - 0.5) * 0.04
        other = torch.randint(0, len(self), (b,), generator=g)
        desired = self.aus[other] + (torch.rand(b, self.aus.shape[1], generator=g) - 0.5) * 0.2
        if self.single_au > 0:
            one = torch.rand(b, generator=g) < self.single_au
            cols = torch.tensor([AU_NAMES.index(a) for a in SINGLE_AUS])
            k = cols[torch.randint(0, len(cols), (b,), generator=g)]
            step = torch.rand(b, generator=g) * 2.0 - 1.0
            if self.lower_present > 0:
                shown = real[:, cols] >= PRESENT                      # (b, len(cols))
                lower = (torch.rand(b, generator=g) < self.lower_present) & shown.any(1)
                # one of the shown AUs, uniformly (random scores, the shown ones first)
                pick = torch.argmax(shown.float() + torch.rand(shown.shape, generator=g) * 0.5, 1)
                k = torch.where(lower, cols[pick], k)
                step = torch.where(lower, -torch.rand(b, generator=g), step)
            own = real.clone()
            rows = torch.arange(b)
            own[rows, k] = (own[rows, k] + step).clamp(0.0, 1.0)
            desired = torch.where(one[:, None], own, desired)
        if not geometry:
            return x, real, desired, desired - real
        if self.points is None:
            raise ValueError("AUFaces(geometry=True) is needed for batch(geometry=True)")
        pts = self.points[idx]
        k = self.size / 128.0
        xs = (pts[..., 0] + 0.5) * k - 0.5          # 128-px crop -> S-px crop (area resize)
        xs = torch.where(flip[:, None], (self.size - 1) - xs, xs)
        ys = (pts[..., 1] + 0.5) * k - 0.5
        xy = torch.stack([xs, ys], -1) + shift[:, None]
        geo = dict(points=pts, params=self.params[idx], xy=xy, flip=flip,
                   valid=self.has_points[idx])
        return x, real, desired, desired - real, geo
