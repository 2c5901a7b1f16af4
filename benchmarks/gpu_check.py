"""One short run on a bare GPU machine: do the CUDA kernels, the CUDA crop and the model
runtime's GPU paths work, agree with the torch backend, and how fast are they?

    python -m benchmarks.gpu_check                      # writes benchmarks/results/gpu_check.json
    python -m benchmarks.gpu_check --json /tmp/gpu.json  # elsewhere

Needs Python 3.12 (3.10+ works), numpy 2 (1.26 works), a CUDA build of torch, CuPy built for
the machine's CUDA (``cupy-cuda12x`` or ``cupy-cuda13x``, 13 or 14), OpenCV headless and SciPy;
**not** mediapipe, PyAV, TensorRT or a network (nothing it imports pulls them in: the frames
and jobs are random, the gaze model is the bundled artifact). Finishes in well under 5 minutes
(``--budget`` seconds, 240 by default: a section that would start after it is skipped and
says so).

What it does, each part recorded in one JSON file:

1. **environment**: Python, numpy, torch (and its CUDA), CuPy, OpenCV, SciPy versions, the GPU;
2. **agreement** at 1280x720 and 1920x1080: random frames and random jobs (every optional field:
   lightness, palette mix, colour/attention; rotations, scales, ROIs off the frame edge), the
   ``cuda`` backend against the ``torch`` backend on the GPU (and both against ``cpu``), with the
   CPU tests' tolerance (``tests/test_kernels_agreement.py``: >= 99.9 % of the frame's pixels and
   >= 99 % of the touched ones within one grey level, pixels outside every ROI byte-identical),
   and the crops (``crop_groups``) within one grey level on >= 99 % of values;
3. **timing**: crop (one ``crop_groups`` of 4 eye and 2 mouth ROIs) and composite (6 jobs, numpy
   frame in and out, as the pipeline calls it) p50/p99 over ``--frames`` (200) frames per
   backend (``cuda``, ``torch`` on the GPU; ``cpu`` for reference over fewer frames);
4. **gaze model** through the model runtime on the GPU (``load_gaze_model(device="cuda")``:
   TensorRT fp16 when torch-tensorrt is installed, else ``torch.compile``): which backend it
   chose, its outputs against the CPU runtime's on the same random crops, and the p50 per
   batch of 4 eyes, also fed straight from the CUDA crop (``crops_to_torch``, no host copy);
5. **expression models** (issues 12-14: the DeepWarp smile, the AU edit, KeepSmiling's three
   GANs, Glow), each bundled ``.pt2`` as its exported module on the GPU (eager fp32) against the
   CPU runtime on random inputs, and the p50/p99 per face (batch 1) on the GPU and the CPU
   (:func:`expression_models`).

Without a GPU (no CUDA device visible to torch or CuPy) it says so in one line and exits 0,
writing the JSON only when ``--json`` names a file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

DEFAULT_JSON = "benchmarks/results/gpu_check.json"
SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}


# ------------------------------------------------------------------------------ environment
def _version(name: str):
    try:
        mod = __import__(name)
    except Exception as exc:  # missing or broken (a CuPy without its CUDA libraries)
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return getattr(mod, "__version__", "?"), None


def environment() -> dict:
    env = dict(python=platform.python_version(), platform=platform.platform(),
               cpu_count=os.cpu_count())
    for name in ("numpy", "torch", "cupy", "cv2", "scipy", "torch_tensorrt"):
        v, err = _version(name)
        env[name] = v if err is None else None
        if err is not None:
            env[f"{name}_error"] = err
    env["torch_cuda"] = None
    env["gpu"] = None
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_capability"] = list(torch.cuda.get_device_capability(0))
            env["gpu_count"] = torch.cuda.device_count()
    except Exception as exc:
        env["torch_cuda_error"] = " ".join(str(exc).split())[:200]
    env["cupy_devices"] = 0
    if env.get("cupy"):
        try:
            import cupy

            env["cupy_devices"] = int(cupy.cuda.runtime.getDeviceCount())
            env["cupy_cuda_runtime"] = int(cupy.cuda.runtime.runtimeGetVersion())
        except Exception as exc:
            env["cupy_error"] = " ".join(str(exc).split())[:200]
    return env


def no_gpu_reason(env: dict) -> str:
    """Empty when both torch and CuPy see a CUDA device, else one line saying what is missing."""
    missing = []
    if env.get("torch") is None:
        missing.append(f"torch is not importable ({env.get('torch_error')})")
    elif env.get("gpu") is None:
        missing.append(f"torch {env['torch']} sees no CUDA device "
                       f"(built for CUDA {env.get('torch_cuda')})")
    if env.get("cupy") is None:
        missing.append(f"CuPy is not importable ({env.get('cupy_error')})")
    elif not env.get("cupy_devices"):
        missing.append(f"CuPy {env['cupy']} sees no CUDA device ({env.get('cupy_error', '')})")
    return "; ".join(missing)


# ------------------------------------------------------------------------------ random work
def random_frame(rng, shape) -> np.ndarray:
    """A frame with smooth structure and some edges (not white noise, which is the worst case of
    OpenCV's 1/32-pixel rounding and is not what a camera sees)."""
    import cv2

    H, W = shape
    small = rng.uniform(0, 255, (H // 16 + 1, W // 16 + 1, 3)).astype(np.float32)
    img = cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    img += cv2.GaussianBlur(rng.normal(0, 25, (H, W, 3)).astype(np.float32), (0, 0), 1.5)
    for _ in range(12):  # a few sharp rectangles
        x, y = int(rng.integers(0, W - 60)), int(rng.integers(0, H - 60))
        img[y:y + int(rng.integers(10, 60)), x:x + int(rng.integers(10, 60))] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _smooth(rng, shape, sigma, amp):
    import cv2

    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    f = f.reshape(shape)
    return (f * (amp / (np.abs(f).max() + 1e-6))).astype(np.float32)


def _feather(size, edge=0.3):
    h, w = size
    v, u = np.mgrid[:h, :w].astype(np.float32)
    r = np.hypot((u - (w - 1) / 2) / (w / 2), (v - (h - 1) / 2) / (h / 2))
    return np.clip((1 - r) / edge, 0, 1).astype(np.float32)


def random_jobs(rng, frame, n: int = 6, extras: bool = True) -> list:
    """``n`` random jobs over the frame: sizes of eye and mouth crops, spans 4-25 % of the width,
    rotations up to 30 degrees, one of them hanging off an edge; every optional field when
    ``extras``."""
    import cv2

    from warpcam.core.geometry import roi_affine
    from warpcam.core.types import WarpJob

    H, W = frame.shape[:2]
    jobs = []
    for k in range(n):
        size = [(41, 51), (32, 40), (31, 40), (64, 64)][k % 4]
        span = float(rng.uniform(0.04, 0.25)) * W
        if k == n - 1:  # partly outside the frame
            cx, cy = -0.03 * W, float(rng.uniform(0.2, 0.8)) * H
        else:
            cx, cy = float(rng.uniform(0.1, 0.9)) * W, float(rng.uniform(0.1, 0.9)) * H
        a = roi_affine((cx, cy), math.radians(float(rng.uniform(-30, 30))), span,
                       span * size[0] / size[1], size[1], size[0])
        kw = {}
        if extras and k % 2 == 0:
            kw["lightness"] = 1.0 + _smooth(rng, size, 4, 0.25)
            kw["palette_mix"] = (np.clip(_smooth(rng, size, 4, 0.5), 0, 1),
                                 rng.uniform(0, 255, 3).astype(np.float32))
        if extras and k % 3 == 0:
            crop = cv2.warpAffine(frame, a, (size[1], size[0]),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            kw["color"] = np.clip(crop * rng.uniform(0.7, 1.2, 3)
                                  + _smooth(rng, size + (3,), 3, 20), 0, 255).astype(np.float32)
            kw["attention"] = np.clip(0.5 + _smooth(rng, size, 3, 0.6), 0, 1)
        jobs.append(WarpJob(a, _smooth(rng, size + (2,), 5, float(rng.uniform(1, 4))),
                            _feather(size), **kw))
    return jobs


def random_specs(rng, shape) -> list:
    """The crop groups of one frame: 4 eye ROIs (41 x 51, two flipped) and 2 mouth ROIs
    (48 x 64, [-1, 1] normalisation), one group each."""
    from warpcam.core.geometry import roi_affine
    from warpcam.kernels.crop import CropSpec

    H, W = shape
    eyes = np.stack([roi_affine((rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H),
                                math.radians(rng.uniform(-20, 20)), 0.08 * W, 0.064 * W, 51, 41)
                     for _ in range(4)])
    mouths = np.stack([roi_affine((rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H),
                                  math.radians(rng.uniform(-20, 20)), 0.15 * W, 0.11 * W, 64, 48)
                       for _ in range(2)])
    return [CropSpec(eyes, (41, 51), 0.0, 1.0, [False, True, False, True]),
            CropSpec(mouths, (48, 64), 0.5, 0.5)]


# ------------------------------------------------------------------------------ comparisons
def _diff(a, b) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)


def compare_frames(a, b, frame, jobs) -> dict:
    """The CPU tests' bound: >= 99.9 % of the frame's pixels and >= 99 % of the pixels the jobs
    touch within one grey level, exact outside every job's box."""
    d = _diff(a, b)
    touched = np.any(a != frame, -1) | np.any(b != frame, -1)
    outside = np.ones(frame.shape[:2], bool)
    for j in jobs:
        box = j.frame_bbox(frame.shape)
        if box is not None:
            outside[box[1]:box[3], box[0]:box[2]] = False
    within = float((d <= 1).mean())
    roi_within = float((d[touched] <= 1).mean()) if touched.any() else 1.0
    exact_outside = bool(np.array_equal(a[outside], frame[outside])
                         and np.array_equal(b[outside], frame[outside]))
    return dict(max_diff=int(d.max()), within_1_frame=within, within_1_touched=roi_within,
                touched_pixels=int(touched.sum()), exact_outside=exact_outside,
                ok=bool(within >= 0.999 and roi_within >= 0.99 and exact_outside))


def compare_crops(a_list, b_list, specs) -> dict:
    worst, frac = 0.0, 1.0
    for a, b, s in zip(a_list, b_list, specs):
        std = np.broadcast_to(np.asarray(s.std, np.float64), (3,))
        unit = (1.0 / (255.0 * std))[None, :, None, None]
        d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / unit
        worst = max(worst, float(d.max()))
        frac = min(frac, float((d <= 1.0).mean()))
    return dict(max_diff_levels=worst, within_1=frac, ok=bool(frac >= 0.99 and worst < 6))


# ------------------------------------------------------------------------------ sections
def _sync():
    import torch

    if not torch.cuda.is_available():  # the CPU stand-ins of the tests
        return
    torch.cuda.synchronize()
    try:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    except Exception:
        pass


def _pcts(ts) -> dict:
    v = np.asarray(ts) * 1e3
    return dict(p50_ms=float(np.percentile(v, 50)), p99_ms=float(np.percentile(v, 99)),
                n=int(v.size))


def backends() -> dict:
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.kernels.cuda_backend import CudaCompositor
    from warpcam.kernels.torch_backend import TorchCompositor

    return {"cuda": CudaCompositor(), "torch": TorchCompositor("cuda"), "cpu": CpuCompositor()}


def agreement(bes, seed: int) -> dict:
    out = {}
    rng = np.random.default_rng(seed)
    for label, shape in SIZES.items():
        frame = random_frame(rng, shape)
        res = {}
        for extras in (True, False):
            jobs = random_jobs(rng, frame, 6, extras)
            before = frame.copy()
            got = {name: be.composite(frame, jobs) for name, be in bes.items()}
            _sync()
            key = "all_fields" if extras else "flow_only"
            res[key] = {
                "cuda_vs_torch": compare_frames(got["cuda"], got["torch"], frame, jobs),
                "cuda_vs_cpu": compare_frames(got["cuda"], got["cpu"], frame, jobs),
                "torch_vs_cpu": compare_frames(got["torch"], got["cpu"], frame, jobs),
                "input_untouched": bool(np.array_equal(frame, before)),
            }
            # in place, as the pipeline runs
            f2 = frame.copy()
            bes["cuda"].composite(f2, jobs, inplace=True)
            _sync()
            res[key]["cuda_inplace_equal"] = bool(np.array_equal(f2, got["cuda"]))
        specs = random_specs(rng, shape)
        crops = {name: be.crops_to_numpy(be.crop_groups(frame, specs)) for name, be in bes.items()}
        res["crop"] = {"cuda_vs_torch": compare_crops(crops["cuda"], crops["torch"], specs),
                       "cuda_vs_cpu": compare_crops(crops["cuda"], crops["cpu"], specs)}
        out[label] = res
    return out


def timing(bes, frames: int, seed: int) -> dict:
    out = {}
    rng = np.random.default_rng(seed)
    for label, shape in SIZES.items():
        frame = random_frame(rng, shape)
        jobs = random_jobs(rng, frame, 6, extras=False)
        specs = random_specs(rng, shape)
        res = {}
        for name, be in bes.items():
            n = frames if name != "cpu" else max(frames // 4, 10)
            for _ in range(5):  # warm-up (kernel compilation, allocations)
                be.composite(frame.copy(), jobs, inplace=True)
                be.crops_to_torch(be.crop_groups(frame, specs)) if name != "cpu" else \
                    be.crop_groups(frame, specs)
            _sync()
            tc, tk, tb = [], [], []
            for _ in range(n):
                img = frame.copy()
                t0 = time.perf_counter()
                c = be.crop_groups(img, specs)
                if name != "cpu":
                    be.crops_to_torch(c)
                    _sync()
                t1 = time.perf_counter()
                be.composite(img, jobs, inplace=True)
                t2 = time.perf_counter()
                with be.frame(img):  # the pipeline's shared upload: crops + composite
                    c = be.crop_groups(img, specs)
                    if name != "cpu":
                        be.crops_to_torch(c)
                    be.composite(img, jobs, inplace=True)
                if name != "cpu":
                    _sync()
                t3 = time.perf_counter()
                tc.append(t1 - t0)
                tk.append(t2 - t1)
                tb.append(t3 - t2)
            res[name] = dict(crop=_pcts(tc), composite=_pcts(tk), crop_and_composite_shared=_pcts(tb))
        out[label] = res
    return out


def gaze_model(frames: int, seed: int, device: str = "cuda") -> dict:
    import torch

    from warpcam.realtime.gaze_model import load_gaze_model

    rng = np.random.default_rng(seed)
    out = {}
    t0 = time.perf_counter()
    gpu = load_gaze_model(device=device)
    out["load_seconds"] = time.perf_counter() - t0
    out["backend"] = gpu.backend
    out["torch_tensorrt_installed"] = _version("torch_tensorrt")[1] is None
    cpu = load_gaze_model(device="cpu")
    n = 4
    crops = rng.uniform(0, 1, (n, 3, 41, 51)).astype(np.float32)
    angles = rng.uniform(-15, 15, (n, 2)).astype(np.float32)
    anchors = (rng.uniform(0, 1, (n, 7, 2)) * [51, 41]).astype(np.float32) if gpu.anchors else None
    try:
        a = gpu(crops, angles, anchors)
    except Exception as exc:  # an engine built for one batch size only
        out["batch4_error"] = " ".join(str(exc).split())[:300]
        n = 2
        crops, angles = crops[:n], angles[:n]
        anchors = anchors[:n] if anchors is not None else None
        a = gpu(crops, angles, anchors)
    b = cpu(crops, angles, anchors)
    out["batch"] = n
    out["max_abs_diff_vs_cpu"] = {k: float(np.abs(np.asarray(x) - np.asarray(y)).max())
                                  for k, x, y in zip(("flow_px", "weights", "palette"), a, b)}
    # fp16 engines differ more than fp32 ones; a tenth of a crop pixel of flow is invisible
    tol = 0.1 if gpu.backend == "tensorrt-fp16" else 0.02
    out["ok"] = bool(out["max_abs_diff_vs_cpu"]["flow_px"] < tol)
    out["tolerance_flow_px"] = tol
    for _ in range(10):
        gpu(crops, angles, anchors)
    ts = []
    for _ in range(frames):
        t = time.perf_counter()
        gpu(crops, angles, anchors)
        ts.append(time.perf_counter() - t)
    out["numpy_in_out"] = _pcts(ts)
    # straight from the CUDA crop service: crops stay on the GPU
    if device != "cuda":
        return out
    try:
        from warpcam.kernels.cuda_backend import CudaCompositor

        comp = CudaCompositor()
        frame = random_frame(rng, SIZES["720p"])
        spec = random_specs(rng, SIZES["720p"])[0]
        ang_t = torch.from_numpy(angles[:n]).cuda()
        anc_t = torch.from_numpy(anchors[:n]).cuda() if anchors is not None else None
        ts = []
        for i in range(frames + 10):
            t = time.perf_counter()
            with comp.frame(frame):
                c = comp.crops_to_torch(comp.crop_rois(frame, spec.affines[:n], spec.size,
                                                       flip=spec.flip[:n]))
                gpu(c, ang_t, anc_t)
            if i >= 10:
                ts.append(time.perf_counter() - t)
        out["from_cuda_crop"] = _pcts(ts)
    except Exception as exc:
        out["from_cuda_crop_error"] = " ".join(str(exc).split())[:300]
    return out


#: the bundled expression models (issues 12-14): smile, AU edit, KeepSmiling's three, Glow
EXPRESSION_MODELS = ("smile_deepwarp", "au_edit", "keepsmiling_split", "keepsmiling_complex",
                     "keepsmiling_simple", "glow_faces")


def _random_inputs(rng, model, n: int) -> list:
    """Random inputs of batch ``n`` for a loaded model: the image input (the first with 4 dims)
    uniform over the declared input range, the others (conditions, latents, hints) standard
    normal scaled by 0.7 (deltas and relative AUs near [-1, 1], Glow's z near its prior)."""
    out, image_done = [], False
    lo, hi = model.input.range if model.input is not None else (0.0, 1.0)
    for a in model.example_inputs(n):
        if a.ndim == 4 and not image_done:
            out.append(rng.uniform(lo, hi, a.shape).astype(np.float32))
            image_done = True
        else:
            out.append((0.7 * rng.standard_normal(a.shape)).astype(np.float32))
    return out


def expression_models(frames: int, seed: int, device: str = "cuda", budget_s: float = 90.0,
                      names=EXPRESSION_MODELS) -> dict:
    """Each bundled expression model (``models/NAME.pt2``) run once on the CPU through the
    model runtime and once on ``device`` as the exported program's module (eager, full fp32:
    TF32 off, so that the comparison measures the port, not the precision; ``torch.compile``
    and TensorRT are the gaze model's section): the largest output difference relative to the
    output's own scale (ok below 1e-3), and the p50/p99 per call at batch 1 (one face) over
    ``frames`` calls on each. Models past ``budget_s`` seconds are skipped and say so."""
    import torch

    from importlib import resources

    from warpcam.realtime.runtime import load_model

    rng = np.random.default_rng(seed)
    out = {"gpu_mode": "eager fp32 (TF32 off)", "device": device}
    t_section = time.perf_counter()
    old_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for name in names:
            path = Path(str(resources.files("warpcam.models") / f"{name}.pt2"))
            if not path.exists():
                out[name] = dict(skipped="not bundled")
                continue
            if time.perf_counter() - t_section > budget_s:
                out[name] = dict(skipped=f"over the section's {budget_s:g} s budget")
                continue
            r = out[name] = {}
            try:
                t0 = time.perf_counter()
                cpu = load_model(path, device="cpu")
                r["load_seconds"] = round(time.perf_counter() - t0, 2)
                gm = cpu.program.module().to(device)  # (an exported module has no .eval())
                x = _random_inputs(rng, cpu, 1)
                want = cpu(*x)

                def run_dev():
                    with torch.inference_mode():
                        got = gm(*[torch.from_numpy(a).to(device) for a in x])
                        got = got if isinstance(got, (tuple, list)) else (got,)
                        return [g.float().cpu().numpy() for g in got]
                got = run_dev()
                rel = {}
                for k, a, b in zip(cpu.output_names, got, want):
                    scale = float(np.abs(b).max()) + 1e-6
                    rel[k] = float(np.abs(a - b).max()) / scale
                r["max_rel_diff_vs_cpu"] = rel
                r["ok"] = bool(all(v < 1e-3 for v in rel.values()) and all(
                    np.isfinite(g).all() for g in got))
                for key, fn, n_calls in (("device_per_face", run_dev, frames),
                                         ("cpu_per_face", lambda: cpu(*x), max(3, frames // 10))):
                    for _ in range(3):
                        fn()
                    ts = []
                    for _ in range(n_calls):
                        t = time.perf_counter()
                        fn()
                        _sync()
                        ts.append(time.perf_counter() - t)
                    r[key] = _pcts(ts)
            except Exception as exc:
                r["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    return out


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None,
                    help=f"output JSON (default {DEFAULT_JSON} when a GPU is found; without a "
                         "GPU only when given)")
    ap.add_argument("--frames", type=int, default=200, help="frames timed per backend (200)")
    ap.add_argument("--budget", type=float, default=240.0,
                    help="seconds; sections that would start later are skipped (240)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    env = environment()
    res = dict(tool="benchmarks.gpu_check", env=env, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    reason = no_gpu_reason(env)
    if reason:
        res.update(gpu_found=False, reason=reason, ok=None)
        print(f"gpu_check: NO GPU FOUND, nothing checked ({reason}). Run this on a machine "
              "with a CUDA GPU, a CUDA build of torch and CuPy for its CUDA.")
        _finish(res, a.json, t_start)
        return 0
    res["gpu_found"] = True
    print(f"gpu_check: {env['gpu']} (torch {env['torch']} CUDA {env['torch_cuda']}, "
          f"CuPy {env['cupy']}, numpy {env['numpy']}, Python {env['python']})")
    sections = [("agreement", lambda bes: agreement(bes, a.seed)),
                ("timing", lambda bes: timing(bes, a.frames, a.seed + 1)),
                ("gaze_model", lambda bes: gaze_model(a.frames, a.seed + 2)),
                ("expression_models", lambda bes: expression_models(
                    a.frames, a.seed + 3, budget_s=max(10.0, a.budget - (time.perf_counter()
                                                                         - t_start))))]
    try:
        bes = backends()
    except Exception as exc:
        bes = None
        res["backends_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        print(f"backends: FAILED ({res['backends_error']})")
    for name, fn in sections:
        if time.perf_counter() - t_start > a.budget:
            res[name] = dict(skipped=f"over the {a.budget:g} s budget")
            print(f"{name}: skipped (over the {a.budget:g} s budget)")
            continue
        if bes is None and name not in ("gaze_model", "expression_models"):
            res[name] = dict(skipped="no backends")
            continue
        t0 = time.perf_counter()
        try:
            res[name] = fn(bes)
        except Exception as exc:
            res[name] = dict(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                             traceback=traceback.format_exc()[-2000:])
        res[name]["seconds"] = time.perf_counter() - t0
        _report(name, res[name])
    oks = (list(_oks(res.get("agreement", {}))) + [res.get("gaze_model", {}).get("ok", False)]
           + list(_oks(res.get("expression_models", {}))))
    errors = [k for k in ("agreement", "timing", "gaze_model", "expression_models")
              if "error" in res.get(k, {})] + (["backends"] if "backends_error" in res else [])
    errors += [f"expression_models.{k}" for k, v in res.get("expression_models", {}).items()
               if isinstance(v, dict) and "error" in v]
    res["errors"] = errors
    res["ok"] = bool(all(oks) and not errors)
    res["heavy_modules_imported"] = [m for m in ("mediapipe", "av") if m in sys.modules]
    _finish(res, a.json or DEFAULT_JSON, t_start)
    print(f"gpu_check: {'OK' if res['ok'] else 'FAILED'} in {res['seconds']:.0f} s")
    return 0 if res["ok"] else 1


def _oks(d):
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "ok":
                yield bool(v)
            else:
                yield from _oks(v)


def _report(name, r) -> None:
    if "error" in r:
        print(f"{name}: ERROR {r['error']}")
        return
    if name == "agreement":
        for size, v in r.items():
            if isinstance(v, dict):
                for case, c in v.items():
                    for pair, m in c.items():
                        if isinstance(m, dict):
                            print(f"agreement {size} {case} {pair}: {'ok' if m['ok'] else 'FAIL'} "
                                  + ", ".join(f"{k} {m[k]:.4g}" for k in m
                                              if isinstance(m[k], float)))
    elif name == "timing":
        for size, v in r.items():
            if isinstance(v, dict):
                for be, m in v.items():
                    print(f"timing {size} {be:5s}: crop p50 {m['crop']['p50_ms']:.3f} ms, "
                          f"composite p50 {m['composite']['p50_ms']:.3f} ms, both shared "
                          f"{m['crop_and_composite_shared']['p50_ms']:.3f} ms")
    elif name == "expression_models":
        for k, m in r.items():
            if not isinstance(m, dict):
                continue
            if "skipped" in m or "error" in m:
                print(f"model {k}: {m.get('skipped') or 'ERROR ' + m['error']}")
                continue
            print(f"model {k}: {'ok' if m['ok'] else 'FAIL'} (largest relative difference "
                  f"{max(m['max_rel_diff_vs_cpu'].values()):.2g}), per face p50 "
                  f"{m['device_per_face']['p50_ms']:.3f} ms on {r.get('device')}, "
                  f"{m['cpu_per_face']['p50_ms']:.3f} ms on the CPU")
    elif name == "gaze_model":
        print(f"gaze model: backend {r.get('backend')}, vs CPU {r.get('max_abs_diff_vs_cpu')}, "
              f"p50 {r.get('numpy_in_out', {}).get('p50_ms', float('nan')):.3f} ms "
              f"(batch {r.get('batch')}), from the CUDA crop "
              f"{r.get('from_cuda_crop', {}).get('p50_ms', float('nan')):.3f} ms")


def _finish(res, path, t_start) -> None:
    res["seconds"] = time.perf_counter() - t_start
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(res, indent=2, default=str))
        print(f"wrote {p}")


if __name__ == "__main__":
    sys.exit(main())
