"""Export a KeepSmiling checkpoint as a ``torch.export`` program with metadata.

    python -m warpcam.training.keepsmiling.export --checkpoint RUN/checkpoint.pt \\
        --data /work/data/faces --out models/keepsmiling_split.pt2

Programs (all images ``(N, 3, 64, 64)`` RGB in [0, 1], dynamic batch 1..64, BatchNorm in eval
mode):

- SplitGAN (kind ``warpcam.keepsmiling.split``): :class:`~warpcam.training.keepsmiling.model.
  SplitInference` ``(x, strength (N, 1)) -> (edit, recon)`` with the latent translation ``t``
  inside (:mod:`warpcam.training.keepsmiling.translate`, computed from ``--data``'s
  ``--split`` crops at export time); ``strength`` 1 adds the mean smile, -1 removes it.
- ComplexGAN (``warpcam.keepsmiling.complex``): ``(x, label (N, 1)) -> G(x, label)``,
  label 1 = smiling.
- SimpleGAN (``warpcam.keepsmiling.simple``): ``z (N, 100) -> G(z)`` (a smiling mouth).

Metadata: ``roi = "mouth"``, the crop rule, config, data counts, training time and terms; the
written archive is checked with :func:`warpcam.core.artifact.read_meta` before it is renamed
into place (:func:`warpcam.training.common.export.save_verified`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn

from warpcam.core import artifact
from warpcam.core.artifact import ArtifactMeta
from warpcam.training.common.export import save_verified
from warpcam.training.keepsmiling import model as M
from warpcam.training.keepsmiling.data import DEFAULT_SETS, MouthCrops
from warpcam.training.keepsmiling.translate import latent_translation

KINDS = {"simple": "warpcam.keepsmiling.simple", "complex": "warpcam.keepsmiling.complex",
         "split": "warpcam.keepsmiling.split"}
TERMS = ("CelebA (Liu et al., ICCV 2015), MPLab GENKI-4K (http://mplab.ucsd.edu) and "
         "SMILEsmileD (Arigbabu et al.): non-commercial research only")
CROP_RULE = ("KeepSmiling mouth box (warpcam.core.mouth.mouth_box_points) on FaceMesh nose tip 1 "
             "and mouth corners 61, 291: box f0 -+ (b + a_vec), clamped to the image, resized "
             "to 64x64 without keeping the aspect ratio")


class _Complex(nn.Module):
    def __init__(self, G):
        super().__init__()
        self.G = G

    def forward(self, x, label):
        return M.from_net(self.G(M.to_net(x), label.reshape(-1)))


class _Simple(nn.Module):
    def __init__(self, G):
        super().__init__()
        self.G = G

    def forward(self, z):
        return M.from_net(self.G(z[:, :, None, None]))


def load(path) -> tuple:
    """``(KeepSmiling net in eval mode, checkpoint dict)``."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = M.KSConfig.from_dict(st.get("extra", {}).get("config", {}))
    net = M.KeepSmiling(cfg)
    net.load_state_dict(st["model"])
    return net.eval(), st


def metadata(cfg: M.KSConfig, ckpt: dict, extra: dict, notes: str = "") -> dict:
    ex = ckpt.get("extra", {})
    mins = ex.get("minutes")
    if cfg.setup == "split":
        cond = artifact.ConditioningSpec(
            name="latent translation strength", order=("strength",), units="",
            convention="edit = De(E(x) + strength * t), t = mean smiling - mean non-smiling "
                       "latent; +1 adds a smile, -1 removes it, 0 gives the reconstruction")
        outs = (artifact.OutputSpec("edit", "(N, 3, 64, 64) RGB [0, 1]"),
                artifact.OutputSpec("recon", "(N, 3, 64, 64) RGB [0, 1], De(E(x))"))
    elif cfg.setup == "complex":
        cond = artifact.ConditioningSpec(name="target label", order=("label",), units="",
                                         convention="1 smiling, 0 not smiling")
        outs = (artifact.OutputSpec("image", "(N, 3, 64, 64) RGB [0, 1]"),)
    else:
        cond = artifact.ConditioningSpec(name="noise", order=("z",), units="",
                                         convention="z ~ N(0, 1), (N, 100)")
        outs = (artifact.OutputSpec("image", "(N, 3, 64, 64) RGB [0, 1], a smiling mouth"),)
    counts = ex.get("data_counts", {})
    meta = ArtifactMeta(
        kind=KINDS[cfg.setup], format=artifact.FORMAT_VERSION, roi="mouth", crop_h=M.SIZE,
        crop_w=M.SIZE, crop_notes=dict(rule=CROP_RULE, border="replicate"),
        input=artifact.InputSpec(layout="NCHW", channels="RGB", range=(0.0, 1.0)),
        conditioning=cond, outputs=outs, config=cfg.to_dict(),
        training=artifact.TrainingInfo(
            data=tuple(sorted(counts)), sizes=tuple(sum(counts[k]) for k in sorted(counts)),
            steps=ckpt.get("step"), epochs=ckpt.get("epoch"),
            commit=ex.get("commit", "unknown"), seed=ckpt.get("args", {}).get("seed"),
            exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            minutes=round(float(mins), 1) if mins is not None else None, notes=notes),
        extra=dict(terms=TERMS, **extra))
    return meta.to_dict()


def export(net: M.KeepSmiling, meta: dict, out, t: torch.Tensor = None) -> Path:
    """Write ``out`` (``.pt2``, metadata embedded) and ``out.json`` (module docstring).

    Raises:
        ArtifactError: invalid metadata. ExportError: the archive would need unpickling.
    """
    setup = net.cfg.setup
    batch = torch.export.Dim("batch", min=1, max=64)
    n = 2
    if setup == "split":
        if t is None:
            raise ValueError("a SplitGAN export needs its translation t")
        mod = M.SplitInference(net.E, net.De, t).eval()
        args = (torch.rand(n, 3, M.SIZE, M.SIZE), torch.ones(n, 1))
        shapes = ({0: batch}, {0: batch})
    elif setup == "complex":
        mod = _Complex(net.G).eval()
        args = (torch.rand(n, 3, M.SIZE, M.SIZE), torch.ones(n, 1))
        shapes = ({0: batch}, {0: batch})
    else:
        mod = _Simple(net.G).eval()
        args = (torch.randn(n, net.cfg.nz),)
        shapes = ({0: batch},)
    with torch.no_grad():
        ep = torch.export.export(mod, args, dynamic_shapes=shapes)
    return save_verified(ep, meta, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a KeepSmiling checkpoint to a .pt2 program.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="SplitGAN: the data set that defines t")
    ap.add_argument("--split", default="train", help="SplitGAN: the split that defines t")
    ap.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    ap.add_argument("--notes", default="")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    net, ckpt = load(a.checkpoint)
    extra, t = {}, None
    if net.cfg.setup == "split":
        if not a.data:
            raise SystemExit("a SplitGAN export needs --data (the crops that define t)")
        t, stats = latent_translation(net.E, MouthCrops(a.data, a.split, sets=a.sets))
        extra = dict(translation=dict(split=a.split, sets=list(a.sets), **stats))
    out = export(net, metadata(net.cfg, ckpt, extra, a.notes), a.out, t)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
