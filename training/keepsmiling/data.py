"""KeepSmiling training data: 64 x 64 mouth crops by the seed's rule, held in memory as uint8.

**Crop rule** (seed 003, ``our_image_cropper``): :func:`warpcam.core.mouth.mouth_box_points`
on the nose tip and the two mouth corners (FaceMesh 1, 61, 291 in the face data sets; MTFL's
points 3, 4, 5), resized to 64 x 64 without keeping the aspect ratio. The face data set builder
(:mod:`warpcam.training.data.build`, issue 9) writes exactly this crop as ``mouth_64``.

**Selection** (the seed asks for MTFL pose 3, frontal): a found face with a ``mouth_64`` crop,
``|yaw| <= max_yaw`` degrees (default 20), crop not clamped at the image border, and for
labelled uses a ``smile`` label (CelebA's ``Smiling`` is copied to ``smile`` by the builder;
GENKI-4K and SMILEsmileD have ``smile``).

**Grey and colour**: CelebA and GENKI-4K are colour, SMILEsmileD (and LFW) greyscale. All
crops are read as 3-channel RGB; a greyscale source is its luminance replicated to three
channels (as OpenCV reads it), so the networks see both kinds and learn to keep the one they
are given (the reconstruction loss of SplitGAN does). Nothing is coloured in. The mix is the
sets' natural sizes (``sets`` selects; the default is all three). Because the grey set's
smile share differs from the colour sets', the SplitGAN translation is averaged **per set**
(:mod:`warpcam.training.keepsmiling.translate`), so "grey vs colour" does not leak into the
smile direction.

**MTFL** (:func:`read_mtfl`, :class:`MTFLMouths`): Zhang et al., ECCV 2014, "Facial Landmark
Detection by Deep Multi-task Learning"; ``training.txt`` / ``testing.txt`` rows of
``path x1..x5 y1..y5 gender smile glasses pose`` (points: left eye, right eye, nose, left mouth
corner, right mouth corner; ``smile`` 1 = smiling, 2 = not; ``pose`` 1-5, 3 = frontal). Our
label is ``1.0`` for smiling (the seed's ``smile - 1`` had 0 for smiling).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

from warpcam.core.mouth import mouth_box_points
from warpcam.training.data import align
from warpcam.training.data.index import read_index

SIZE = align.MOUTH_SIZE
DEFAULT_SETS = ("celeba", "genki4k", "smilesmiled")


def _read_rgb(path, size: int = SIZE) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)  # greyscale files come back replicated
    if im is None:
        raise SystemExit(f"cannot read image {path}")
    if im.shape[:2] != (size, size):
        raise SystemExit(f"{path}: a {im.shape[1]}x{im.shape[0]} crop, expected {size}x{size}")
    return im[..., ::-1].transpose(2, 0, 1)


class MouthCrops:
    """Mouth crops of a built face data set (module docstring).

    Attributes:
        images: uint8 ``(N, 3, 64, 64)`` RGB. labels: float32 ``(N,)`` 1 = smiling, 0 = not,
        NaN unlabelled. sets, ids, grey: per item.

    Args:
        root: built data set (``index.csv``). split: ``"train"``, ``"val"``, ``"test"`` or None.
        sets: set names (default :data:`DEFAULT_SETS`). smile: keep only this label (1 or 0;
        None: all). labelled: keep only rows with a smile label. limit: at most N rows per set.
    """

    def __init__(self, root, split: Optional[str] = "train",
                 sets: Optional[Sequence[str]] = DEFAULT_SETS, smile: Optional[int] = None,
                 labelled: bool = True, max_yaw: float = 20.0, limit: Optional[int] = None):
        self.root = Path(root)
        rows, per_set = [], {}
        for r in read_index(self.root):
            if r.get("found") != "1" or not r.get("mouth_64") or r.get("mouth_clamped") == "1":
                continue
            if split is not None and r.get("split") != split:
                continue
            if sets is not None and r.get("set") not in sets:
                continue
            try:
                if abs(float(r.get("yaw") or "nan")) > max_yaw:
                    continue
            except ValueError:
                continue
            lab = r.get("smile", "")
            if (labelled or smile is not None) and lab == "":
                continue
            if smile is not None and (float(lab) > 0.5) != bool(smile):
                continue
            if limit is not None and per_set.get(r["set"], 0) >= limit:
                continue
            per_set[r["set"]] = per_set.get(r["set"], 0) + 1
            rows.append(r)
        if not rows:
            raise SystemExit(f"{self.root}: no mouth crops (split {split}, sets {sets}, "
                             f"smile {smile})")
        self.images = torch.from_numpy(np.stack([_read_rgb(self.root / r["mouth_64"])
                                                 for r in rows]))
        self.labels = torch.tensor([float(float(r["smile"]) > 0.5) if r.get("smile") else
                                    float("nan") for r in rows])
        self.sets = [r["set"] for r in rows]
        self.ids = [r["id"] for r in rows]
        self.grey = [r.get("grey") == "1" for r in rows]

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict:
        """``{set: [n_not_smiling, n_smiling]}``."""
        out = {}
        for s, y in zip(self.sets, self.labels.tolist()):
            c = out.setdefault(s, [0, 0])
            if y == y:
                c[int(y > 0.5)] += 1
        return out

    def batch(self, idx, flip: Optional[torch.Tensor] = None):
        """``(images float32 [0, 1] (n, 3, 64, 64), labels (n,))``; ``flip`` (bool per item)
        mirrors left-right (the seed's RandomHorizontalFlip)."""
        x = self.images[idx].float().div_(255.0)
        if flip is not None and bool(flip.any()):
            x[flip] = x[flip].flip(-1)
        return x, self.labels[idx]


# ---------------------------------------------------------------- MTFL layout

@dataclass
class MTFLRow:
    """One MTFL annotation: ``points`` ``(5, 2)`` float64 image pixels (left eye, right eye,
    nose, left mouth corner, right mouth corner), ``gender``, ``smile`` (1 = smiling,
    2 = not), ``glasses``, ``pose`` (1-5, 3 = frontal) as in the file."""
    path: str
    points: np.ndarray
    gender: int
    smile: int
    glasses: int
    pose: int

    @property
    def label(self) -> float:
        """1.0 smiling, 0.0 not."""
        return 1.0 if self.smile == 1 else 0.0


def read_mtfl(path) -> List[MTFLRow]:
    """Rows of an MTFL ``training.txt`` / ``testing.txt``: ``path x1..x5 y1..y5 gender smile
    glasses pose``, whitespace separated (paths may use ``\\``); blank lines skipped.

    Raises:
        ValueError: a line with the wrong number of fields or a non-number (file and line named).
    """
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) != 15:
            raise ValueError(f"{path}:{n}: {len(f)} fields, MTFL has 15 (path, 10 coordinates, "
                             f"gender, smile, glasses, pose)")
        try:
            v = [float(x) for x in f[1:11]]
            attrs = [int(float(x)) for x in f[11:]]
        except ValueError:
            raise ValueError(f"{path}:{n}: not a number in {line.strip()[:80]!r}") from None
        pts = np.stack([np.array(v[:5]), np.array(v[5:])], axis=1)
        rows.append(MTFLRow(f[0].replace("\\", "/"), pts, *attrs))
    return rows


def mtfl_mouth_crop(image: np.ndarray, row: MTFLRow, size: int = SIZE) -> np.ndarray:
    """The seed's mouth crop of an MTFL image (nose = point 3, corners = points 4 and 5), clamped
    to the image, resized to ``size x size`` (aspect not kept)."""
    box, _ = mouth_box_points(row.points[2], row.points[3], row.points[4], image.shape)
    return align.warp(image, align.box_affine(box, size, size), size, size)


class MTFLMouths(MouthCrops):
    """Mouth crops of an MTFL folder (``ROOT/training.txt`` or ``testing.txt`` with the image
    paths relative to ``ROOT``), same attributes as :class:`MouthCrops` (``sets`` = "mtfl").

    Args:
        pose: keep only this pose (the seed's 3, frontal; None: all). smile: 1 / 0 / None.
    """

    def __init__(self, root, split: str = "training", pose: Optional[int] = 3,
                 smile: Optional[int] = None, limit: Optional[int] = None):
        self.root = Path(root)
        ann = self.root / f"{split}.txt"
        if not ann.exists():
            raise SystemExit(f"{ann}: no MTFL annotation file")
        rows = [r for r in read_mtfl(ann) if (pose is None or r.pose == pose)
                and (smile is None or r.label == float(smile))][:limit]
        if not rows:
            raise SystemExit(f"{ann}: no rows with pose {pose}, smile {smile}")
        imgs = []
        for r in rows:
            im = cv2.imread(str(self.root / r.path), cv2.IMREAD_COLOR)
            if im is None:
                raise SystemExit(f"cannot read image {self.root / r.path}")
            imgs.append(mtfl_mouth_crop(im, r)[..., ::-1].transpose(2, 0, 1))
        self.images = torch.from_numpy(np.ascontiguousarray(np.stack(imgs)))
        self.labels = torch.tensor([r.label for r in rows])
        self.sets = ["mtfl"] * len(rows)
        self.ids = [r.path for r in rows]
        self.grey = [False] * len(rows)
