"""SplitGAN's latent translation (seed 003: ``encoder_splitGAN.py``,
``feature_vectors_calculations.py``, ``translation_splitGAN.py``).

``t = mean(E(x) | smiling) - mean(E(x) | not smiling)`` over the flattened latents
(``latent x 5 x 5``); a mouth is made to smile with ``De(E(x) + s t)`` and the smile removed with
``s < 0``. Fixes of the seed: each mean is divided by **its own** count (``get_mean`` divided
both sums by the number of smiling latents), the networks are in **eval** mode (the seed left
BatchNorm in train mode on batches of one), and the difference is taken **per data set** and
averaged over the sets that have both classes, so that a set's own look (SMILEsmileD is grey,
CelebA colour) and its smile share do not enter ``t``.

    python -m warpcam.training.keepsmiling.translate --checkpoint RUN/checkpoint.pt \\
        --data /work/data/faces --split test --out docs/keepsmiling_translation.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from warpcam.training.keepsmiling import model as M
from warpcam.training.keepsmiling.data import DEFAULT_SETS, MouthCrops


@torch.no_grad()
def encode(E: M.Encoder, data: MouthCrops, batch: int = 128) -> torch.Tensor:
    """Latents ``(N, C, 5, 5)`` of every crop of ``data`` (eval mode)."""
    was = E.training
    E.eval()
    out = [E(M.to_net(data.batch(torch.arange(s, min(s + batch, len(data))))[0]))
           for s in range(0, len(data), batch)]
    E.train(was)
    return torch.cat(out)


@torch.no_grad()
def latent_translation(E: M.Encoder, data: MouthCrops, per_set: bool = True) -> tuple:
    """``(t (C, 5, 5), stats)``: the smiling-minus-not mean latent difference (module docstring).

    ``stats``: per set ``n_smile``, ``n_not``, ``norm`` of its difference, and ``separation``
    (the gap of the two classes' mean projections on ``t`` in pooled standard deviations);
    ``cos_sets`` (cosine between the sets' differences) and ``norm``.

    Raises:
        ValueError: no set has both smiling and non-smiling crops.
    """
    z = encode(E, data).flatten(1)
    y = data.labels
    sets = np.array(data.sets) if per_set else np.array(["all"] * len(data))
    diffs, stats = {}, {}
    for s in sorted(set(sets.tolist())):
        m = torch.from_numpy(sets == s)
        sm, ns = m & (y > 0.5), m & (y < 0.5)
        if sm.sum() == 0 or ns.sum() == 0:
            continue
        d = z[sm].mean(0) - z[ns].mean(0)   # each mean over its own count
        diffs[s] = d
        stats[s] = dict(n_smile=int(sm.sum()), n_not=int(ns.sum()), norm=float(d.norm()))
    if not diffs:
        raise ValueError("no data set with both smiling and non-smiling crops")
    t = torch.stack(list(diffs.values())).mean(0)
    u = t / t.norm().clamp_min(1e-12)
    for s in diffs:
        m = torch.from_numpy(sets == s)
        p = z[m] @ u
        ys = y[m]
        a, b = p[ys > 0.5], p[ys < 0.5]
        pooled = float(torch.cat([a - a.mean(), b - b.mean()]).std().clamp_min(1e-12))
        stats[s]["separation"] = float(a.mean() - b.mean()) / pooled
    names = list(diffs)
    cos = {f"{a}~{b}": float(torch.nn.functional.cosine_similarity(diffs[a], diffs[b], 0))
           for i, a in enumerate(names) for b in names[i + 1:]}
    stats["cos_sets"] = cos
    stats["norm"] = float(t.norm())
    return t.reshape(z.shape[1:]).reshape(-1, 5, 5), stats


@torch.no_grad()
def translation_sheet(net: M.KeepSmiling, t: torch.Tensor, x01: torch.Tensor,
                      strengths=(-1.0, 0.0, 1.0, 1.5)) -> np.ndarray:
    """BGR uint8 sheet: row 0 the inputs, then ``De(E(x) + s t)`` for each strength."""
    net.eval()
    z = net.E(M.to_net(x01))
    rows = [x01] + [M.from_net(net.De(z + s * t[None])) for s in strengths]
    tiles = [np.hstack(list((r.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)))
             for r in rows]
    return np.ascontiguousarray(np.vstack(tiles)[..., ::-1])


def load_split(path) -> tuple:
    """``(KeepSmiling net in eval mode, checkpoint dict)`` of a SplitGAN checkpoint."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = M.KSConfig.from_dict(st.get("extra", {}).get("config", {}))
    if cfg.setup != "split":
        raise SystemExit(f"{path}: a {cfg.setup} checkpoint; the translation needs SplitGAN")
    net = M.KeepSmiling(cfg)
    net.load_state_dict(st["model"])
    return net.eval(), st


def main(argv=None):
    ap = argparse.ArgumentParser(description="SplitGAN latent translation and its sheet.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="train", help="crops that define t (train, val, test)")
    ap.add_argument("--sheet-split", default="test", help="crops shown in the sheet")
    ap.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    ap.add_argument("--out", default=None, help="sheet PNG (non-smiling crops of --sheet-split)")
    ap.add_argument("--n", type=int, default=10)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    net, _ = load_split(a.checkpoint)
    t, stats = latent_translation(net.E, MouthCrops(a.data, a.split, sets=a.sets))
    print(stats)
    if a.out:
        show = MouthCrops(a.data, a.sheet_split, sets=("celeba", "genki4k"), smile=0, limit=a.n)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(show), generator=g)[:a.n]
        sheet = translation_sheet(net, t, show.batch(idx)[0])
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(a.out, cv2.resize(sheet, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
