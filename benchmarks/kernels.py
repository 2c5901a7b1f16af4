"""Time the ROI crop and the composite per compositor backend.

    python -m benchmarks.kernels [--sizes 640x480,1280x720,1920x1080] [--faces 1,2,4]
                                 [--backends cpu,torch[,cuda]] [--repeats 50]
                                 [--out benchmarks/results/kernels.json]

For each frame size and face count it builds a synthetic but realistically shaped scene (per face:
two eye jobs 41x51 with flow and lightness or palette mix, a mouth job 64x64 with flow and palette
mix; crops: both eyes at 41x51, the left one mirrored, the mouth at 64x64 and the face at 128x128,
normalised to [-1, 1]) on a real photo (scikit-image's astronaut, resized), then times, per
backend, ``crop_groups`` (all ROIs, float32) and ``composite`` (numpy frame in, numpy frame out,
so the CUDA timing includes the upload and download), and prints ms p50/p99 and the cpu/torch
ratio. Results go to a JSON file.

With a CUDA GPU (CuPy installed) the ``cuda`` backend is timed too and, before timing, its output
is checked against the torch backend on the same GPU (or on the CPU when torch has no CUDA): the
fraction of pixels within one grey level (>= 99.9 % required), and the crops within 0.02 grey
levels. The verdict is printed and stored; the exit status is 1 when the check fails, so the first
run on a GPU proves or disproves the kernels.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from warpcam.core.geometry import roi_affine
from warpcam.core.types import WarpJob
from warpcam.kernels import BACKENDS, backend_class
from warpcam.kernels import crop as crop_mod

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "kernels.json"
EYE = (41, 51)
MOUTH = (64, 64)
FACE = (128, 128)


def base_frame(width: int, height: int) -> np.ndarray:
    """A real photo (the scikit-image astronaut, BGR) resized to ``width x height``."""
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[..., ::-1])
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


def crop_affine(cx: float, cy: float, size: tuple, span: float, angle_deg: float) -> np.ndarray:
    """Crop -> frame affine of a ``size`` (h, w) crop centred on frame ``(cx, cy)``, ``span`` frame
    pixels wide (same scale on both axes), rotated by ``angle_deg`` (clockwise in the image):
    :func:`warpcam.core.geometry.roi_affine`."""
    h, w = size
    return roi_affine((cx, cy), np.deg2rad(angle_deg), span, span * h / w, w, h)


def feather(size: tuple, edge: float = 0.25) -> np.ndarray:
    """``h x w`` float32 alpha: 1 in an inner ellipse, a smooth ramp to 0 at the crop edge."""
    h, w = size
    v, u = np.mgrid[:h, :w].astype(np.float32)
    r = np.hypot((u - (w - 1) / 2) / (w / 2), (v - (h - 1) / 2) / (h / 2))
    t = np.clip((1.0 - r) / edge, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple, sigma: float, amp: float) -> np.ndarray:
    """Gaussian-smoothed noise of ``shape`` (h, w[, c]) scaled to about ``amp`` (float32)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    out = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    out = out.reshape(shape)
    return (out * (amp / (np.abs(out).max() + 1e-6))).astype(np.float32)


def face_scene(width: int, height: int, faces: int, seed: int = 0) -> tuple:
    """Jobs and crop specs of ``faces`` faces spread over a ``width x height`` frame.

    Returns:
        ``(jobs, specs)``: 3 WarpJobs per face (eyes, mouth) and 3 CropSpecs (eyes with the left
        one mirrored, mouths, faces), all normalised to [-1, 1].
    """
    rng = np.random.default_rng(seed)
    face_w = width * {1: 0.30, 2: 0.22}.get(faces, 0.15)
    cols = int(np.ceil(np.sqrt(faces)))
    rows = int(np.ceil(faces / cols))
    jobs, eyes, mouths, heads = [], [], [], []
    for i in range(faces):
        cx = width * (i % cols + 0.5) / cols
        cy = height * (i // cols + 0.5) / rows
        roll = rng.uniform(-12, 12)
        t = np.deg2rad(roll)
        ex, ey = np.cos(t), np.sin(t)  # unit vector along the eye line
        for side in (-1, 1):  # subject's right eye (image left), then left eye
            ecx = cx + side * 0.2 * face_w * ex + 0.15 * face_w * ey
            ecy = cy + side * 0.2 * face_w * ey - 0.15 * face_w * ex
            a = crop_affine(ecx, ecy, EYE, 0.4 * face_w, roll)
            eyes.append(a)
            kw = {"lightness": 1.0 + smooth_field(rng, EYE, 4, 0.15)}
            if side > 0:
                kw = {"palette_mix": (np.clip(smooth_field(rng, EYE, 4, 0.4), 0, 1),
                                      np.array([215.0, 220.0, 225.0]))}
            jobs.append(WarpJob(a, smooth_field(rng, EYE + (2,), 5, 3.0), feather(EYE), **kw,
                                kind="eye_right" if side < 0 else "eye_left", face_id=i))
        mx, my = cx - 0.3 * face_w * ey, cy + 0.3 * face_w * ex
        a = crop_affine(mx, my, MOUTH, 0.55 * face_w, roll)
        mouths.append(a)
        jobs.append(WarpJob(a, smooth_field(rng, MOUTH + (2,), 6, 4.0), feather(MOUTH),
                            palette_mix=(np.clip(smooth_field(rng, MOUTH, 6, 0.3), 0, 1),
                                         np.array([120.0, 110.0, 170.0])),
                            kind="mouth", face_id=i))
        heads.append(crop_affine(cx, cy, FACE, 1.3 * face_w, roll))
    specs = [
        crop_mod.CropSpec(np.array(eyes), EYE, 0.5, 0.5,
                          flip=[k % 2 == 1 for k in range(len(eyes))]),
        crop_mod.CropSpec(np.array(mouths), MOUTH, 0.5, 0.5),
        crop_mod.CropSpec(np.array(heads), FACE, 0.5, 0.5),
    ]
    return jobs, specs


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> dict:
    """Wall-clock statistics of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts = np.array(ts)
    return {"p50_ms": float(np.percentile(ts, 50)), "p99_ms": float(np.percentile(ts, 99)),
            "mean_ms": float(ts.mean()), "n": int(ts.size)}


class _Backend:
    """Uniform ``crop(frame, specs)`` / ``composite(frame, jobs)`` over the registered backends
    (the crop timed until its result is usable on the host side: torch tensors moved to the
    CPU, the CUDA stream synchronised)."""

    def __init__(self, name: str, device: Optional[str] = None):
        self.name = name
        cls = backend_class(name)
        comp = cls(device) if device is not None else cls()
        self.impl = comp
        self.composite = comp.composite
        if name == "torch":
            self.crop = lambda f, s: [t.cpu() for t in comp.crop_groups(f, s)]
        elif name == "cuda":
            def crop(f, s):
                out = comp.crop_groups(f, s)
                comp.stream.synchronize()
                return out

            self.crop = crop
        else:
            self.crop = comp.crop_groups


def cuda_ready() -> bool:
    try:
        from warpcam.kernels.cuda_backend import cuda_available
    except ImportError:
        return False
    return cuda_available()


def check_cuda(sizes: Sequence[tuple], faces: Sequence[int]) -> dict:
    """CUDA backend vs the torch backend on the same GPU (CPU if torch has no CUDA)."""
    import torch
    import cupy

    from warpcam.kernels.cuda_backend import CudaCompositor
    from warpcam.kernels.torch_backend import TorchCompositor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref, gpu = TorchCompositor(device), CudaCompositor()
    cases, ok = [], True
    for (w, h) in sizes:
        frame = base_frame(w, h)
        for n in faces:
            jobs, specs = face_scene(w, h, n, seed=n)
            a = ref.composite(frame, jobs)
            b = gpu.composite(frame, jobs)
            d = np.abs(a.astype(np.int16) - b).max(axis=-1)
            within = float((d <= 1).mean())
            outside = _outside_mask(frame.shape, jobs)
            exact_outside = bool(np.array_equal(b[outside], frame[outside]))
            crop_err = 0.0
            got = gpu.crop_groups(frame, specs)  # every ROI of the frame in one launch
            gpu.stream.synchronize()
            for rt, ct in zip(ref.crop_groups(frame, specs), got):
                levels = (rt.cpu().numpy() - cupy.asnumpy(ct)) * (255 * 0.5)  # std 0.5
                crop_err = max(crop_err, float(np.abs(levels).max()))
            good = within >= 0.999 and exact_outside and crop_err <= 0.02
            ok &= good
            cases.append({"size": f"{w}x{h}", "faces": n, "within_1": within,
                          "max_diff": int(d.max()), "exact_outside": exact_outside,
                          "crop_max_levels": crop_err, "ok": good})
    return {"reference": f"torch on {device}", "ok": ok, "cases": cases}


def _outside_mask(shape: tuple, jobs: Sequence[WarpJob]) -> np.ndarray:
    mask = np.ones(shape[:2], bool)
    for j in jobs:
        box = j.frame_bbox(shape)
        if box is not None:
            mask[box[1]:box[3], box[0]:box[2]] = False
    return mask


def parse_sizes(text: str) -> list:
    out = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {item!r}") from None
        out.append((w, h))
    return out


def parse_ints(text: str) -> list:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def run(sizes, faces, backends, repeats: int, warmup: int) -> dict:
    rows = []
    impls = {name: _Backend(name) for name in backends}
    for (w, h) in sizes:
        frame = base_frame(w, h)
        for n in faces:
            jobs, specs = face_scene(w, h, n, seed=n)
            for name, be in impls.items():
                for op, fn in (("crop", lambda: be.crop(frame, specs)),
                               ("composite", lambda: be.composite(frame, jobs))):
                    stats = time_call(fn, repeats, warmup)
                    rows.append({"backend": name, "op": op, "size": f"{w}x{h}", "faces": n,
                                 "jobs": len(jobs), "rois": sum(len(s.affines) for s in specs),
                                 **stats})
    return {"results": rows, "ratios": ratios(rows)}


def ratios(rows: Sequence[dict]) -> dict:
    """torch / cpu time per op (sum of p50 over the configurations both ran; > 1: cpu faster)."""
    out = {}
    for op in ("crop", "composite"):
        cpu = {(r["size"], r["faces"]): r["p50_ms"] for r in rows
               if r["backend"] == "cpu" and r["op"] == op}
        tor = {(r["size"], r["faces"]): r["p50_ms"] for r in rows
               if r["backend"] == "torch" and r["op"] == op}
        keys = cpu.keys() & tor.keys()
        if keys:
            out[f"torch_over_cpu_{op}"] = sum(tor[k] for k in keys) / sum(cpu[k] for k in keys)
    return out


def format_table(rows: Sequence[dict]) -> str:
    lines = [f"{'backend':8} {'op':10} {'size':>10} {'faces':>5} {'jobs':>4} {'rois':>4} "
             f"{'p50 ms':>8} {'p99 ms':>8}"]
    for r in rows:
        lines.append(f"{r['backend']:8} {r['op']:10} {r['size']:>10} {r['faces']:>5} "
                     f"{r['jobs']:>4} {r['rois']:>4} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels",
                                description="Time the ROI crop and the composite per backend.")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("640x480,1280x720,1920x1080"),
                   help="comma-separated WIDTHxHEIGHT (default: 640x480,1280x720,1920x1080)")
    p.add_argument("--faces", type=parse_ints, default=[1, 2, 4],
                   help="comma-separated face counts (default: 1,2,4)")
    p.add_argument("--backends", default=None,
                   help="comma-separated subset of cpu,torch,cuda (default: cpu,torch, plus cuda "
                        "when CuPy sees a GPU)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="JSON output (default: benchmarks/results/kernels.json)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")

    have_cuda = cuda_ready()
    backends = (args.backends.split(",") if args.backends
                else ["cpu", "torch"] + (["cuda"] if have_cuda else []))
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        p.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if "cuda" in backends and not have_cuda:
        print("benchmarks.kernels: --backends cuda needs CuPy and a CUDA GPU", file=sys.stderr)
        return 2

    import torch

    report = {
        "meta": {"date": _dt.datetime.now().isoformat(timespec="seconds"),
                 "machine": platform.machine(), "processor": platform.processor(),
                 "cpus": os.cpu_count(), "python": platform.python_version(),
                 "numpy": np.__version__, "opencv": cv2.__version__, "torch": torch.__version__,
                 "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
                 "repeats": args.repeats, "warmup": args.warmup},
    }
    status = 0
    if "cuda" in backends:
        check = check_cuda(args.sizes, args.faces)
        report["cuda_check"] = check
        print(f"CUDA vs {check['reference']}: {'PASS' if check['ok'] else 'FAIL'}")
        for c in check["cases"]:
            print(f"  {c['size']:>10} faces={c['faces']} within 1 grey level: "
                  f"{100 * c['within_1']:.3f}% max {c['max_diff']} exact outside: "
                  f"{c['exact_outside']} crop max {c['crop_max_levels']:.4f} levels")
        status = 0 if check["ok"] else 1
    report.update(run(args.sizes, args.faces, backends, args.repeats, args.warmup))
    print(format_table(report["results"]))
    for key, val in report["ratios"].items():
        op = key.rsplit("_", 1)[1]
        print(f"{op}: torch takes {val:.2f}x the cpu backend's time (p50, summed over configs)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
