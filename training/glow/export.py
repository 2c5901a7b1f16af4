"""Export a Glow checkpoint as one ``torch.export`` program with metadata (kind
``warpcam.glow.faces``).

    python -m warpcam.training.glow.export --checkpoint /work/runs/glow/checkpoint.pt \\
        --out models/glow_faces.pt2

The program is :class:`~warpcam.training.glow.model.GlowCodec`: inputs ``x (N, 3, S, S)`` RGB
in ``[0, 1]`` (an aligned face, :mod:`warpcam.training.data.align`) and ``z (N, D)``
(``D = 3 S S``, standardised latents, flattened level by level from the first split to the
top); outputs ``z_of_x (N, D)`` = encode(x), ``x_of_z (N, 3, S, S)`` = decode(z) clamped to
``[0, 1]``, and ``bpd (N,)`` of ``x`` as an 8-bit image. Batch 1..64 (dynamic). Both
directions are in one graph so the transfer needs one file; pass zeros for the half that is
not wanted. Load it only through :func:`warpcam.realtime.runtime.load_model` (the archive is
checked before anything in it is deserialised); the checkpoint is read with
``torch.load(weights_only=True)`` (no unpickling).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from warpcam.core import artifact
from warpcam.core.artifact import ArtifactMeta
from warpcam.training.common.export import save_verified
from warpcam.training.data.align import TEMPLATE
from warpcam.training.glow.model import Glow, GlowCodec, GlowConfig

KIND = "warpcam.glow.faces"
TERMS = ("CelebA (Liu et al., ICCV 2015; non-commercial research only) and LFW (Huang et al. "
         "2007) aligned faces")
ALIGN_RULE = ("warpcam.training.data.align.aligned_face: similarity fit of the FaceMesh right "
              f"eye, left eye and mouth centres onto the template {TEMPLATE} (fractions of the "
              "crop side), bilinear, border replicated, anti-aliased downscale")


def load(path) -> tuple:
    """``(Glow in eval mode, checkpoint dict)`` from a training checkpoint."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = GlowConfig.from_dict(st.get("extra", {}).get("config", {}))
    net = Glow(cfg)
    net.load_state_dict(st["model"])
    return net.eval(), st


def metadata(cfg: GlowConfig, ckpt: dict, notes: str = "") -> dict:
    ex = ckpt.get("extra", {})
    mins = ex.get("minutes")
    counts = ex.get("data_counts", {})
    d = cfg.dims
    meta = ArtifactMeta(
        kind=KIND, format=artifact.FORMAT_VERSION, roi="face", crop_h=cfg.size, crop_w=cfg.size,
        crop_notes=dict(rule=ALIGN_RULE, border="replicate"),
        input=artifact.InputSpec(layout="NCHW", channels="RGB", range=(0.0, 1.0)),
        conditioning=artifact.ConditioningSpec(
            name="latent", order=("z",), units="",
            convention=f"z (N, {d}): standardised Glow latents eps = (z - mean) exp(-logs), "
                       "levels flattened from the first split to the top "
                       f"(shapes {cfg.latent_shapes()})"),
        outputs=(artifact.OutputSpec("z_of_x", f"(N, {d}) encode(x)"),
                 artifact.OutputSpec("x_of_z", f"(N, 3, {cfg.size}, {cfg.size}) RGB [0, 1], "
                                               "decode(z) clamped"),
                 artifact.OutputSpec("bpd", "(N,) bits per dimension of x as an 8-bit image: "
                                            "-log2 p(x - 0.5) / D + 8, the density at the "
                                            "pixel values (no dequantisation noise)")),
        config=cfg.to_dict(),
        training=artifact.TrainingInfo(
            data=tuple(sorted(counts)), sizes=tuple(int(counts[k]) for k in sorted(counts)),
            steps=ckpt.get("step"), epochs=ckpt.get("epoch"),
            commit=ex.get("commit", "unknown"), seed=ckpt.get("args", {}).get("seed"),
            exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            minutes=round(float(mins), 1) if mins is not None else None, notes=notes),
        extra=dict(terms=TERMS, latent_shapes=[list(s) for s in cfg.latent_shapes()],
                   val_bpd=ex.get("val_bpd"), n_bits=cfg.n_bits,
                   history=json.loads(ex.get("history", "[]"))[-12:]))
    return meta.to_dict()


def export(net: Glow, meta: dict, out) -> Path:
    """Write ``out`` (``.pt2``, metadata embedded) and ``out.json`` (module docstring).

    Raises:
        ArtifactError: invalid metadata. ExportError: the archive would need unpickling.
    """
    mod = GlowCodec(net.eval()).eval()
    s, d = net.cfg.size, net.cfg.dims
    batch = torch.export.Dim("batch", min=1, max=64)
    args = (torch.rand(2, 3, s, s), torch.randn(2, d))
    with torch.no_grad():
        ep = torch.export.export(mod, args, dynamic_shapes=({0: batch}, {0: batch}))
    return save_verified(ep, meta, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a Glow checkpoint to a .pt2 program.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--notes", default="")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not Path(a.checkpoint).is_file():
        raise SystemExit(f"--checkpoint {a.checkpoint}: no such file")
    net, ckpt = load(a.checkpoint)
    out = export(net, metadata(net.cfg, ckpt, a.notes), a.out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
