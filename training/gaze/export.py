"""Export a trained gaze checkpoint as a ``torch.export`` program with metadata.

    python -m warpcam.training.gaze.export --checkpoint runs/gaze_synth/checkpoint.pt \\
        --out models/gaze_deepwarp.pt2

The program is :class:`warpcam.training.gaze.model.GazeInference`: ``(img (N, 3, 41, 51) RGB [0, 1],
angle (N, 2) degrees[, anchors (N, 7, 2)]) -> (flow (N, 2, 41, 51) crop pixels, lcm_weight
(N, 1, 41, 51), palette (3,) RGB [0, 1])``, with a dynamic batch dimension. The metadata
(``warpcam_meta.json``, embedded as an extra file and written beside as ``OUT.json``) holds the
crop spec, normalisation, angle units and conventions, the network config, the training data,
steps and time, and the commit: an :class:`warpcam.core.artifact.ArtifactMeta`, the one format
shared with the reader (``warpcam.realtime.runtime.load_model``), which never imports
``training/``.

Nothing in the archive may need unpickling to load: ``torch.export.save`` pickles tensor
subclasses (``use_pickle``) and custom objects, so the written file is checked with
:func:`warpcam.core.artifact.check_archive` and the export fails (nothing written at ``OUT``)
if the loader would refuse it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from warpcam.core import artifact
from warpcam.core.artifact import META_NAME, ArtifactError, ArtifactMeta  # noqa: F401
from warpcam.core.eyes import EYE_CROP_H as CROP_H, EYE_CROP_W as CROP_W
from warpcam.training.gaze.model import DeepWarpGaze, GazeInference, GazeNetConfig
from warpcam.training.common.export import ExportError, save_verified  # noqa: F401

#: The artifact kind of a DeepWarp gaze model (what the runtime's gaze loader asks for).
MODEL_KIND = "warpcam.gaze.deepwarp"


def model_from_checkpoint(path) -> tuple:
    """``(DeepWarpGaze in eval mode, checkpoint dict)`` from a training checkpoint
    (``weights_only`` load)."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    extra = st.get("extra", {})
    cfg = GazeNetConfig(**extra.get("config", {})) if extra.get("config") else GazeNetConfig()
    net = DeepWarpGaze(cfg)
    net.load_state_dict(st["model"])
    return net.eval(), st


def metadata(cfg: GazeNetConfig, ckpt: dict, notes: str = "") -> dict:
    """The artifact metadata (:meth:`ArtifactMeta.to_dict`) of a gaze network: crop spec,
    normalisation, conditioning (degrees), outputs, config and training info."""
    extra = ckpt.get("extra", {})
    args = ckpt.get("args", {})
    meta = ArtifactMeta(
        kind=MODEL_KIND, format=artifact.FORMAT_VERSION, roi="eye", crop_h=CROP_H, crop_w=CROP_W,
        crop_notes=dict(rule="centre of the eye contour, 2x corner-to-corner width, height 0.8 "
                        "of the width, x along the eye axis (warpcam.core.eyes.eye_roi)",
                        flip="subject's left eye mirrored left-right"),
        input=artifact.InputSpec(layout="NCHW", channels="RGB", range=(0.0, 1.0)),
        conditioning=artifact.ConditioningSpec(
            name="gaze change target - source", order=("pitch", "yaw"), units="degrees",
            convention="pitch up positive, yaw toward crop +x positive"),
        outputs=(artifact.OutputSpec("flow", "(N, 2, H, W) backward warp in crop pixels, (x, y)"),
                 artifact.OutputSpec("lcm_weight", "(N, 1, H, W) palette weight"),
                 artifact.OutputSpec("palette", "(3,) RGB in [0, 1]")),
        config=cfg.to_dict(),
        training=artifact.TrainingInfo(
            data=tuple(extra.get("data", [])), sizes=tuple(extra.get("data_sizes", [])),
            steps=ckpt.get("step"), epochs=ckpt.get("epoch"),
            commit=extra.get("commit", "unknown"), seed=args.get("seed"),
            exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), notes=notes),
        extra=dict(angle_units="degrees"))  # the legacy key older readers check
    return meta.to_dict()


def export(net: DeepWarpGaze, meta: dict, out) -> Path:
    """Write ``out`` (``.pt2``, metadata embedded) and ``out.json`` (the same metadata).

    Args:
        net: the network (exported in eval mode, dynamic batch 1..64).
        meta: metadata dict (:func:`metadata`, possibly with extra keys).
        out: the ``.pt2`` path.

    Raises:
        ArtifactError: invalid metadata.
        ExportError: the archive torch wrote would need unpickling to load (nothing written).
    """
    inf = GazeInference(net.eval()).eval()
    n = 2
    args = [torch.rand(n, 3, CROP_H, CROP_W), torch.zeros(n, 2)]
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = [{0: batch}, {0: batch}]
    if net.cfg.anchors:
        args.append(torch.rand(n, 7, 2) * 40)
        shapes.append({0: batch})
    ep = torch.export.export(inf, tuple(args), dynamic_shapes=tuple(shapes))
    return save_verified(ep, meta, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a gaze checkpoint to a .pt2 program with "
                                 "metadata (torch.export).")
    ap.add_argument("--checkpoint", required=True, help="training checkpoint (checkpoint.pt)")
    ap.add_argument("--out", default="models/gaze_deepwarp.pt2", help="output .pt2")
    ap.add_argument("--notes", default="", help="free text stored in the metadata")
    ap.add_argument("--minutes", type=float, default=None,
                    help="training wall time to record (default: from summary.json beside "
                         "the checkpoint)")
    a = ap.parse_args(argv)
    net, ckpt = model_from_checkpoint(a.checkpoint)
    meta = metadata(net.cfg, ckpt, a.notes)
    summ = Path(a.checkpoint).with_name("summary.json")
    if a.minutes is not None:
        meta["training_minutes"] = a.minutes
    elif summ.exists():
        meta["training_minutes"] = round(json.loads(summ.read_text()).get("minutes", 0.0), 1)
    out = export(net, meta, a.out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
