"""Pair datasets for gaze redirection: one interface over three sources.

Every dataset here is a sequence of **pairs** of the same eye under the same head pose at two
gaze directions. ``ds[i]`` is a dict:

- ``src``, ``tgt``: ``41 x 51 x 3`` uint8 **RGB** eye crops (the pipeline's ROI, right-eye
  layout: left eyes are flipped), the target in the source's crop frame;
- ``angle``: ``(2,)`` float32, the gaze change target - source, ``(pitch, yaw)`` degrees in the
  crop frame (pitch up, yaw toward crop +x);
- ``landmarks``: ``(19, 2)`` float32 crop pixels of the source (upper lid 9, lower lid 9 from
  the outer to the inner corner, iris centre) and ``iris_d`` (float, crop pixels);
- ``source``: a short name (``synthetic``, ``mined``, ``columbia``, ``unityeyes``).

Sources: :class:`SyntheticPairs` (renders of :mod:`warpcam.training.gaze.render`), :class:`StoredPairs`
(pairs stored as arrays: mined from videos by :mod:`warpcam.training.gaze.mine`, or built by the
public-dataset loaders of :mod:`warpcam.training.gaze.datasets`), :class:`MixedPairs` (a fixed-length
deterministic mixture). :class:`ShardedBatchSampler` gives every process of a DDP run its slice
of the same global batches, so one process with the global batch sees exactly the same data.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import cv2
import numpy as np
import torch

KEYS = ("src", "tgt", "angle", "landmarks", "iris_d")


class SyntheticPairs:
    """All ordered pairs ``(i, j), i != j`` within each rendered eye group.

    Args:
        data: the dict of :func:`warpcam.training.gaze.render.render_groups` or the path of an ``.npz``
            written by ``python -m warpcam.training.gaze.render``.
        max_angle: pairs whose angle change exceeds this (degrees, either axis) are skipped
            by the index map (the product asks for at most 30).
    """

    def __init__(self, data, max_angle: float = 30.0, augment: bool = False, seed: int = 0):
        if not isinstance(data, dict):
            with np.load(data) as z:
                data = {k: z[k] for k in ("images", "gaze", "landmarks", "iris_d")}
        self.images, self.gaze = data["images"], data["gaze"]
        self.landmarks, self.iris_d = data["landmarks"], data["iris_d"]
        n, k = self.gaze.shape[:2]
        gi, ii, jj = np.meshgrid(np.arange(n), np.arange(k), np.arange(k), indexing="ij")
        sel = ii != jj
        gi, ii, jj = gi[sel], ii[sel], jj[sel]
        d = self.gaze[gi, jj] - self.gaze[gi, ii]
        ok = np.abs(d).max(axis=1) <= max_angle
        self.index = np.stack([gi[ok], ii[ok], jj[ok]], 1).astype(np.int64)
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        g, a, b = self.index[i]
        item = dict(src=self.images[g, a], tgt=self.images[g, b],
                    angle=(self.gaze[g, b] - self.gaze[g, a]).astype(np.float32),
                    landmarks=self.landmarks[g, a], iris_d=float(self.iris_d[g, a]),
                    source="synthetic")
        if self.augment:
            item = augment_pair(item, np.random.default_rng((self.seed, int(i))))
        return item


def augment_pair(item: dict, rng: np.random.Generator) -> dict:
    """Photometric augmentation, the same for source and target (gamma, contrast, brightness,
    colour balance, sharpening), and tracker-like noise on the source landmarks (0.4 crop px).
    Deterministic given ``rng`` (seeded by the item index), so DDP runs stay reproducible."""
    gamma = rng.uniform(0.7, 1.4)
    contrast = rng.uniform(0.75, 1.35)
    bright = rng.uniform(-20, 20)
    gains = rng.uniform(0.92, 1.08, 3)
    sharpen = rng.uniform(0.0, 1.2) if rng.random() < 0.5 else 0.0

    def f(img):
        x = img.astype(np.float32)
        if sharpen > 0:
            x = x + sharpen * (x - cv2.GaussianBlur(x, (0, 0), 1.0))
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** gamma
        x = (x - 128.0) * contrast + 128.0 + bright
        return np.clip(x * gains, 0, 255).astype(np.uint8)
    out = dict(item)
    out["src"], out["tgt"] = f(item["src"]), f(item["tgt"])
    out["landmarks"] = (item["landmarks"] + rng.normal(0, 0.4, item["landmarks"].shape)).astype(np.float32)
    return out


class StoredPairs:
    """Pairs stored as arrays (``src``, ``tgt``, ``angle``, ``landmarks``, ``iris_d``; an
    ``.npz`` path or a dict), e.g. mined from videos or built from a public dataset."""

    def __init__(self, data, source: str = "mined"):
        if not isinstance(data, dict):
            with np.load(data) as z:
                data = {k: z[k] for k in z.files}
        missing = [k for k in KEYS if k not in data]
        if missing:
            raise ValueError(f"stored pairs lack {missing}")
        self.data = data
        self.source = str(data.get("source", source)) if "source" in data else source
        if len(data["src"]) != len(data["tgt"]) or len(data["src"]) != len(data["angle"]):
            raise ValueError("stored pairs: src, tgt and angle lengths differ")

    def __len__(self) -> int:
        return len(self.data["src"])

    def __getitem__(self, i: int) -> dict:
        d = self.data
        return dict(src=d["src"][i], tgt=d["tgt"][i], angle=d["angle"][i].astype(np.float32),
                    landmarks=d["landmarks"][i], iris_d=float(d["iris_d"][i]),
                    source=self.source)


def save_pairs(path, pairs: Sequence[dict], **meta) -> None:
    """Write pair dicts to an ``.npz`` readable by :class:`StoredPairs`."""
    out = {k: np.stack([np.asarray(p[k]) for p in pairs]) for k in KEYS}
    out.update({k: np.asarray(v) for k, v in meta.items()})
    np.savez(path, **out)


class MixedPairs:
    """A fixed-length mixture: item ``i`` comes from dataset ``k`` with probability
    ``weights[k]``, and from a deterministic (``seed``) item of it. Useful to give a small mined
    set a fixed share of every batch next to a large synthetic one."""

    def __init__(self, datasets: Sequence, weights: Sequence[float], length: int, seed: int = 0):
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("one weight per dataset")
        w = np.asarray(weights, np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be >= 0 and not all 0, got {weights}")
        self.datasets = [d for d, x in zip(datasets, w) if x > 0]
        w = w[w > 0] / w[w > 0].sum()
        rng = np.random.default_rng(seed)
        self.which = rng.choice(len(self.datasets), size=length, p=w)
        self.item = np.array([rng.integers(0, len(self.datasets[k])) for k in self.which])

    def __len__(self) -> int:
        return len(self.which)

    def __getitem__(self, i: int) -> dict:
        return self.datasets[self.which[i]][int(self.item[i])]


def collate(items: List[dict]) -> Dict[str, torch.Tensor]:
    """Stack pair dicts into float tensors: ``src``, ``tgt`` ``(N, 3, 41, 51)`` RGB in [0, 1],
    ``angle`` ``(N, 2)``, ``landmarks`` ``(N, 19, 2)``, ``iris_d`` ``(N,)``."""
    def img(k):
        a = np.stack([it[k] for it in items])
        return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)
    return dict(src=img("src"), tgt=img("tgt"),
                angle=torch.from_numpy(np.stack([it["angle"] for it in items]).astype(np.float32)),
                landmarks=torch.from_numpy(np.stack([it["landmarks"] for it in items]).astype(np.float32)),
                iris_d=torch.tensor([float(it["iris_d"]) for it in items]))


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Deterministic global batches, each split evenly across the processes.

    Epoch ``e`` permutes the indices with ``seed + e``, cuts them into global batches of
    ``global_batch`` (the remainder is dropped) and gives process ``rank`` the slice
    ``[rank * b, (rank + 1) * b)`` of every global batch, ``b = global_batch / world_size``. With
    loss means and DDP's gradient averaging, ``world_size`` processes then take exactly the steps
    of one process with the same ``global_batch``. ``skip`` batches at the start of the epoch
    are left out (resuming mid-epoch).
    """

    def __init__(self, n: int, global_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, max_batches=None):
        if global_batch % world_size:
            raise ValueError(f"--batch-size {global_batch} must be a multiple of the "
                             f"{world_size} processes")
        if n < global_batch:
            raise ValueError(f"dataset of {n} pairs is smaller than one batch ({global_batch})")
        self.n, self.gb, self.rank, self.world = n, global_batch, rank, world_size
        self.seed, self.epoch, self.skip = seed, 0, 0
        self.max_batches = max_batches

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        nb = self.n // self.gb
        if self.max_batches is not None:
            nb = min(nb, self.max_batches)
        return max(nb - self.skip, 0)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        b = self.gb // self.world
        nb = self.n // self.gb
        if self.max_batches is not None:
            nb = min(nb, self.max_batches)
        for k in range(self.skip, nb):
            s = k * self.gb + self.rank * b
            yield perm[s:s + b]
