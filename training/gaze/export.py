"""Export a trained gaze checkpoint as a ``torch.export`` program with metadata.

    python -m warpcam.training.gaze.export --checkpoint runs/gaze_synth/checkpoint.pt \\
        --out models/gaze_deepwarp.pt2

The program is :class:`warpcam.training.gaze.model.GazeInference`: ``(img (N, 3, 41, 51) RGB [0, 1],
angle (N, 2) degrees[, anchors (N, 7, 2)]) -> (flow (N, 2, 41, 51) crop pixels, lcm_weight
(N, 1, 41, 51), palette (3,) RGB [0, 1])``, with a dynamic batch dimension. The metadata
(``warpcam_meta.json``, embedded as an extra file and written beside as ``OUT.json``) holds the
crop spec, normalisation, angle units and conventions, the network config, the training data,
steps and time, and the commit. ``warpcam.realtime.gaze_model.load_gaze_model`` reads it back without
importing ``training/``.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from warpcam.training.gaze.model import CROP_H, CROP_W, DeepWarpGaze, GazeInference, GazeNetConfig

META_NAME = "warpcam_meta.json"
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
    extra = ckpt.get("extra", {})
    args = ckpt.get("args", {})
    return dict(
        kind=MODEL_KIND, format=1, roi="eye",
        crop=dict(h=CROP_H, w=CROP_W, rule="centre of the eye contour, 2x corner-to-corner "
                  "width, height 0.8 of the width, x along the eye axis (warpcam.realtime.gaze "
                  "GazeCorrector.eye_roi)", flip="subject's left eye mirrored left-right"),
        input=dict(layout="NCHW", channels="RGB", range=[0.0, 1.0]),
        conditioning=dict(name="gaze change target - source", order=["pitch", "yaw"],
                          convention="pitch up positive, yaw toward crop +x positive"),
        angle_units="degrees",
        outputs=dict(flow="(N, 2, H, W) backward warp in crop pixels, (x, y)",
                     lcm_weight="(N, 1, H, W) palette weight",
                     palette="(3,) RGB in [0, 1]"),
        config=cfg.to_dict(), training_data=extra.get("data", []),
        training_sizes=extra.get("data_sizes", []), steps=ckpt.get("step"),
        epochs=ckpt.get("epoch"), commit=extra.get("commit", "unknown"),
        seed=args.get("seed"), exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        notes=notes)


def export(net: DeepWarpGaze, meta: dict, out) -> Path:
    """Write ``out`` (``.pt2``, metadata embedded) and ``out.json`` (the same metadata)."""
    inf = GazeInference(net.eval()).eval()
    n = 2
    args = [torch.rand(n, 3, CROP_H, CROP_W), torch.zeros(n, 2)]
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = [{0: batch}, {0: batch}]
    if net.cfg.anchors:
        args.append(torch.rand(n, 7, 2) * 40)
        shapes.append({0: batch})
    ep = torch.export.export(inf, tuple(args), dynamic_shapes=tuple(shapes))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=2)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():  # torch's note about CPU-only weight groups
        warnings.filterwarnings("ignore", message="No complete tensor found")
        torch.export.save(ep, str(tmp), extra_files={META_NAME: text})
    tmp.replace(out)
    out.with_suffix(".json").write_text(text + "\n")
    return out


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
