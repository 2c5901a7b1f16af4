"""Export a trained smile checkpoint (its transformer T) as a ``torch.export`` program with
metadata.

    python -m warpcam.training.smile.export --checkpoint runs/smile_cpu/checkpoint.pt \\
        --out models/smile_deepwarp.pt2

The program is :class:`warpcam.training.smile.model.SmileInference`: ``(img (N, 3, 64, 64) RGB
[0, 1], delta (N, 1)[, anchors (N, 4, 2)][, hint (N, 2, 64, 64)]) -> (flow (N, 2, 64, 64) crop pixels (x, y),
lcm_weight (N, 1, 64, 64), palette (3,) RGB [0, 1])``, dynamic batch 1..64, batch norm in eval
mode (running statistics), the training mean image ``mu`` inside. Metadata
(:class:`warpcam.core.artifact.ArtifactMeta`, embedded and in ``OUT.json``): ``roi = "face"``,
the aligned-face template, delta convention, config, data and terms. The written archive is
checked with :func:`warpcam.core.artifact.read_meta` (nothing in it may need unpickling);
on failure nothing is written at ``OUT``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from warpcam.core import artifact
from warpcam.core.artifact import ArtifactMeta
from warpcam.training.common.export import ExportError, save_verified  # noqa: F401
from warpcam.training.smile.model import SIZE, SmileGAN, SmileInference, SmileNetConfig

#: The artifact kind of a DeepWarp smile model (what the smile effect's loader asks for).
MODEL_KIND = "warpcam.smile.deepwarp"
TERMS = ("CelebA (Liu et al., ICCV 2015) and MPLab GENKI-4K (http://mplab.ucsd.edu): "
         "non-commercial research only")


def model_from_checkpoint(path) -> tuple:
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = SmileNetConfig.from_dict(st.get("extra", {}).get("config", {}))
    net = SmileGAN(cfg)
    net.load_state_dict(st["model"])
    return net.eval(), st


def without_hint(net: SmileGAN) -> SmileGAN:
    """The same model run with a zero hint, as a hint-free model: the hint enters only the
    first conv of each scale, linearly, so dropping its input channels gives exactly the
    output of a zero hint (tested)."""
    import dataclasses
    cfg = dataclasses.replace(net.cfg, hint=False)
    out = SmileGAN(cfg)
    sd = dict(net.state_dict())
    e = cfg.delta_vec
    for scale in ("s16", "s32", "s64"):
        k = f"T.{scale}.blocks.0.conv.weight"
        w = sd[k]
        sd[k] = torch.cat([w[:, :w.shape[1] - e - 2], w[:, w.shape[1] - e:]], 1)
    out.load_state_dict(sd)
    return out.eval()


def metadata(cfg: SmileNetConfig, ckpt: dict, notes: str = "",
             landmark_mix: float = 0.0, network_gain: float = 1.0) -> dict:
    """``landmark_mix``, ``network_gain``: the effect's defaults for the combination
    ``|delta| * (network_gain * network + landmark_mix * landmark smile)``."""
    from warpcam.training.data import align
    extra = ckpt.get("extra", {})
    args = ckpt.get("args", {})
    mins = extra.get("minutes")
    meta = ArtifactMeta(
        kind=MODEL_KIND, format=artifact.FORMAT_VERSION, roi="face", crop_h=SIZE, crop_w=SIZE,
        crop_notes=dict(rule="aligned face (warpcam.training.data.align.align_affine): "
                        "least-squares similarity of the eye centres and the mouth centre "
                        "onto the template", template={k: list(v) for k, v in
                                                        align.TEMPLATE.items()},
                        border="replicate"),
        input=artifact.InputSpec(layout="NCHW", channels="RGB", range=(0.0, 1.0)),
        conditioning=artifact.ConditioningSpec(
            name="smile change delta", order=("delta",), units="",
            convention="+1 adds a smile, -1 removes it (trained on +-1 only; the effect runs "
                       "sign(delta) and scales the flow and LCM weight by |delta|)"),
        outputs=(artifact.OutputSpec("flow", "(N, 2, H, W) backward warp in crop pixels, (x, y)"),
                 artifact.OutputSpec("lcm_weight", "(N, 1, H, W) palette weight"),
                 artifact.OutputSpec("palette", "(3,) RGB in [0, 1]")),
        config=cfg.to_dict(),
        training=artifact.TrainingInfo(
            data=tuple(extra.get("data", [])), sizes=tuple(extra.get("data_sizes", [])),
            steps=ckpt.get("step"), epochs=ckpt.get("epoch"),
            commit=extra.get("commit", "unknown"), seed=args.get("seed"),
            exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            minutes=round(float(mins), 1) if mins is not None else None, notes=notes),
        extra=dict(terms=TERMS, anchors=cfg.anchors, hint=bool(cfg.hint),
                   landmark_mix=float(landmark_mix), network_gain=float(network_gain)))
    return meta.to_dict()


def export(net: SmileGAN, meta: dict, out) -> Path:
    """Write ``out`` (``.pt2`` with the metadata embedded) and ``out.json``.

    Raises:
        ArtifactError: invalid metadata. ExportError: the archive would need unpickling.
    """
    t = net.T.eval()
    inf = SmileInference(t).eval()
    n = 2
    args = [torch.rand(n, 3, SIZE, SIZE), torch.ones(n, 1)]
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = [{0: batch}, {0: batch}]
    if t.cfg.anchors:
        args.append(torch.rand(n, t.cfg.anchors, 2) * 60)
        shapes.append({0: batch})
    if t.cfg.hint:
        args.append(torch.randn(n, 2, SIZE, SIZE))
        shapes.append({0: batch})
    with torch.no_grad():
        ep = torch.export.export(inf, tuple(args), dynamic_shapes=tuple(shapes))
    return save_verified(ep, meta, out)


def resave(program, out, landmark_mix: float, network_gain: float, notes: str = "") -> Path:
    """``program`` (a smile ``.pt2``, its metadata checked first) written again as ``out``
    with ``landmark_mix`` and ``network_gain`` in its metadata (and ``notes`` appended)."""
    m = artifact.read_meta(program)  # refuses a foreign or unsafe archive before loading
    if m.kind != MODEL_KIND:
        raise ExportError(f"{program}: a {m.kind}, not a smile model")
    meta = m.to_dict()
    meta.update(landmark_mix=float(landmark_mix), network_gain=float(network_gain))
    meta.setdefault("hint", bool(meta.get("config", {}).get("hint", False)))
    if notes:
        meta["notes"] = (meta.get("notes", "") + " " + notes).strip()
    ep = torch.export.load(str(program))
    return save_verified(ep, meta, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a smile checkpoint to a .pt2 program.")
    ap.add_argument("--checkpoint")
    ap.add_argument("--out", default="models/smile_deepwarp.pt2")
    ap.add_argument("--notes", default="")
    ap.add_argument("--minutes", type=float, default=None,
                    help="training wall time to record (default: the checkpoint's run; give "
                         "the total when the run was continued with --init)")
    ap.add_argument("--landmark-mix", type=float, default=0.0,
                    help="the effect adds this share of the landmark smile's flow (metadata)")
    ap.add_argument("--network-gain", type=float, default=1.0,
                    help="the effect scales the network's flow and LCM by this (metadata)")
    ap.add_argument("--no-hint", action="store_true",
                    help="export a hint model as run with a zero hint (no hint input)")
    ap.add_argument("--program", metavar="PT2",
                    help="instead of a checkpoint: re-save this exported program (same graph "
                         "and weights) with the effect defaults given here in its metadata")
    a = ap.parse_args(argv)
    if a.program:
        out = resave(a.program, a.out, a.landmark_mix, a.network_gain, a.notes)
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return
    if not a.checkpoint:
        ap.error("give --checkpoint or --program")
    net, ckpt = model_from_checkpoint(a.checkpoint)
    if a.no_hint and net.cfg.hint:
        net = without_hint(net)
    meta = metadata(net.cfg, ckpt, a.notes, a.landmark_mix, a.network_gain)
    if a.minutes is not None:
        meta["training_minutes"] = float(a.minutes)
    out = export(net, meta, a.out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
