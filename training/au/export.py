"""Export a trained AU-editing checkpoint (its generator) as a ``torch.export`` program with
metadata.

    python -m warpcam.training.au.export --checkpoint /work/runs/au/cpu96/checkpoint.pt \\
        --out models/au_edit.pt2

The program is :class:`warpcam.training.au.model.AUInference`: ``(img (N, 3, S, S) RGB
[0, 1], rel_aus (N, 17) relative AUs / 5) -> (attention (N, 1, S, S) in [0, 1], 1 keeps the
input; residual (N, 3, S, S) RGB, colour - input in [0, 1] units)``, and with ``--flow`` a
third output ``flow (N, 2, S, S)``, the backward warp in crop pixels; dynamic batch 1..16.
Metadata (:class:`warpcam.core.artifact.ArtifactMeta`, embedded and in ``OUT.json``):
``roi = "face"``, the aligned-face template, AU names and scale, config, data, terms. Written
through :func:`warpcam.training.common.export.save_verified` (nothing is left at ``OUT`` when
the archive would not load safely).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from warpcam.core import artifact
from warpcam.core.artifact import ArtifactMeta
from warpcam.training.au.model import AU_NAMES, AU_SCALE, AUGAN, AUInference, AUNetConfig
from warpcam.training.common.export import save_verified

#: The artifact kind of an AU-editing model (what ``--au-model`` asks for).
MODEL_KIND = "warpcam.au.edit"
TERMS = ("CelebA (Liu et al., ICCV 2015): non-commercial research only; LFW (Huang et al. "
         "2007) photos with the shared expression labels: research use; frames of the shared "
         "MEAD / real videos (../shared/data/real/README): research use")


def model_from_checkpoint(path) -> tuple:
    """``(AUGAN in eval mode, checkpoint dict)`` (``weights_only`` load)."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = AUNetConfig.from_dict(st.get("extra", {}).get("config", {}))
    net = AUGAN(cfg)
    net.load_state_dict(st["model"])
    return net.eval(), st


def metadata(cfg: AUNetConfig, ckpt: dict, notes: str = "") -> dict:
    from warpcam.training.data import align
    extra = ckpt.get("extra", {})
    args = ckpt.get("args", {})
    mins = extra.get("minutes")
    meta = ArtifactMeta(
        kind=MODEL_KIND, format=artifact.FORMAT_VERSION, roi="face", crop_h=cfg.size,
        crop_w=cfg.size,
        crop_notes=dict(rule="aligned face (warpcam.training.data.align.align_affine): "
                        "least-squares similarity of the eye centres and the mouth centre "
                        "onto the template", template={k: list(v) for k, v in
                                                        align.TEMPLATE.items()},
                        border="replicate"),
        input=artifact.InputSpec(layout="NCHW", channels="RGB", range=(0.0, 1.0)),
        conditioning=artifact.ConditioningSpec(
            name="relative action units", order=AU_NAMES, units=f"OpenFace 0-5 / {AU_SCALE:g}",
            convention="desired - current AU intensity of each AU, on OpenFace's 0-5 scale "
                       f"divided by {AU_SCALE:g}; 0 leaves an AU as it is"),
        outputs=(artifact.OutputSpec("attention", "(N, 1, H, W) in [0, 1]; 1 keeps the input"),
                 artifact.OutputSpec("residual", "(N, 3, H, W) RGB colour - input, [0, 1] "
                                     "units; out = in + (1 - attention) residual"))
        + ((artifact.OutputSpec("flow", "(N, 2, H, W) backward warp in crop pixels (x, y); "
                                "out = attention warp(in, flow) + (1 - attention) "
                                "(in + residual)"),) if cfg.flow else ()),
        config=cfg.to_dict(),
        training=artifact.TrainingInfo(
            data=tuple(extra.get("data", [])), sizes=tuple(extra.get("data_sizes", [])),
            steps=ckpt.get("step"), epochs=ckpt.get("epoch"),
            commit=extra.get("commit", "unknown"), seed=args.get("seed"),
            exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            minutes=round(float(mins), 1) if mins is not None else None, notes=notes),
        extra=dict(terms=TERMS, au_names=list(AU_NAMES), au_scale=AU_SCALE,
                   attention=cfg.attention))
    return meta.to_dict()


def export(net: AUGAN, meta: dict, out) -> Path:
    """Write ``out`` (``.pt2`` with the metadata embedded) and ``out.json``.

    Raises:
        ArtifactError: invalid metadata. ExportError: the archive would need unpickling.
    """
    inf = AUInference(net.G.eval()).eval()
    s = net.cfg.size
    args = (torch.rand(2, 3, s, s), torch.zeros(2, net.cfg.cond_nc))
    batch = torch.export.Dim("batch", min=1, max=16)
    with torch.no_grad():
        ep = torch.export.export(inf, args, dynamic_shapes=({0: batch}, {0: batch}))
    return save_verified(ep, meta, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export an AU-editing checkpoint to a .pt2 "
                                 "program.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default="models/au_edit.pt2")
    ap.add_argument("--notes", default="")
    a = ap.parse_args(argv)
    if not Path(a.checkpoint).is_file():
        raise SystemExit(f"--checkpoint {a.checkpoint}: no such file")
    net, ckpt = model_from_checkpoint(a.checkpoint)
    out = export(net, metadata(net.cfg, ckpt, a.notes), a.out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
