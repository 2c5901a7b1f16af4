"""The fast paths agree with their references (never timed here), and the GPU check runs and
says so on a machine without a GPU.

- ``CpuCompositor(fast=True)`` (one 4-channel remap of the crop fields per job) against
  ``CpuCompositor(fast=False)`` (the reference, one remap per field);
- :func:`warpcam.realtime.effects.smile.smile_flow` (a direct thin-plate solve) against
  :func:`~warpcam.realtime.effects.smile.smile_flow_reference` (scipy's ``RBFInterpolator``);
- the whole frame (gaze + smile + composite, cache off) fast against reference, on real faces
  from ``../shared/data/real``: within one grey level;
- the compiled loops (numba, :mod:`warpcam.core.jit`) against the NumPy/OpenCV paths: the fused
  composite, the iris warp, the eye visibility, the eye alpha and the smile spline, on the same
  real faces, and the whole frame against the reference.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.realdata import read_frames
from warpcam.kernels.cpu import CpuCompositor

ROOT = Path(__file__).resolve().parents[1]


def _diff(a, b) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)


@pytest.fixture(scope="module")
def tracked():
    """Real frames with their tracked faces: 2-face 720p and the portrait phone selfie."""
    from warpcam.realtime.tracker import FaceTracker

    out = []
    for name, mf in (("two_faces_1280x720.mp4", 2), ("phone_selfie_720x1280.mp4", 1)):
        frames = read_frames(name, every=6, limit=20)
        with FaceTracker(max_faces=mf) as tr:
            for i, img in enumerate(frames):
                faces = tr.track(img, i / 5.0)
                if faces:
                    out.append((name, img, faces, i / 5.0))
    assert len(out) >= 20
    return out


def _jobs(img, faces, t, reference: bool, monkeypatch=None):
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.effects.base import FrameCrops
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects.smile import SmileSettings

    effects = build_effects(gaze=GazeSettings(pitch_deg=10.0), smile=SmileSettings(0.5))
    for e in effects:  # the field cache off: every field built this frame
        target = getattr(e, "fulfiller", e)
        if getattr(target, "cache", None) is not None:
            target.cache = None
    crops = FrameCrops(CpuCompositor(fast=not reference), img)
    jobs = []
    for e in effects:
        jobs += e.jobs(img, faces, t, crops)
    return jobs


def test_fast_composite_matches_reference_on_real_faces(tracked):
    fast, ref = CpuCompositor(), CpuCompositor(fast=False)
    touched_all = within = 0
    worst = 0
    for name, img, faces, t in tracked:
        jobs = _jobs(img, faces, t, reference=True)
        assert jobs, name
        a, b = ref.composite(img, jobs), fast.composite(img, jobs)
        d = _diff(a, b)
        touched = np.any(a != img, -1) | np.any(b != img, -1)
        touched_all += int(touched.sum())
        within += int((d[touched] <= 1).sum())
        worst = max(worst, int(d.max()))
        assert np.array_equal(a[~touched], b[~touched])
    # OpenCV rounds sample positions to 1/32 pixel; the fast path's float sums differ from the
    # reference's in the last bit, which flips that rounding at a handful of pixels.
    assert within / touched_all >= 0.9999, (within / touched_all, worst)
    assert worst <= 3


def test_fast_composite_matches_reference_on_random_jobs():
    from benchmarks.gpu_check import random_frame, random_jobs

    rng = np.random.default_rng(3)
    fast, ref = CpuCompositor(), CpuCompositor(fast=False)
    for extras in (False, True):
        frame = random_frame(rng, (360, 640))
        jobs = random_jobs(rng, frame, 6, extras)
        a, b = ref.composite(frame, jobs), fast.composite(frame, jobs)
        d = _diff(a, b)
        touched = np.any(a != frame, -1) | np.any(b != frame, -1)
        assert (d[touched] <= 1).mean() >= 0.999 and d.max() <= 3
        f2 = frame.copy()
        assert fast.composite(f2, jobs, inplace=True) is f2 and np.array_equal(f2, b)


def test_fast_tps_matches_rbfinterpolator(tracked):
    from warpcam.realtime.effects import smile as S

    calls = []
    orig = S.smile_flow

    def spy(h, w, src, disp, *a, **k):
        calls.append((h, w, np.array(src), np.array(disp)))
        return orig(h, w, src, disp, *a, **k)

    S.smile_flow = spy
    try:
        eff = S.SmileEffect(S.SmileSettings(0.7), cache=False)
        for _, img, faces, t in tracked:
            eff.jobs(img, faces, t)
    finally:
        S.smile_flow = orig
    assert len(calls) >= 20
    for h, w, src, disp in calls:
        got, want = S.smile_flow(h, w, src, disp), S.smile_flow_reference(h, w, src, disp)
        assert got.shape == want.shape == (h, w, 2) and got.dtype == np.float32
        assert np.abs(got - want).max() < 2e-3  # crop pixels (about 0.01 frame pixel)


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "numba"])
def test_fast_frame_matches_reference_frame(tracked, monkeypatch, compiled):
    """Everything fast (direct TPS, fast composite; with ``compiled`` the numba loops of every
    field and of the composite) against everything reference (RBFInterpolator, per-field
    composite, NumPy fields), cache off: the same output within one grey level."""
    from warpcam.core import jit
    from warpcam.realtime.effects import smile as S

    if compiled:
        pytest.importorskip("numba")
    monkeypatch.setattr(jit, "_enabled", compiled)
    assert not compiled or jit.prepare(), [jit.why_not(m) for m in jit.MODULES]
    fast_out, ref_out = [], []
    for _, img, faces, t in tracked:
        fast_out.append(CpuCompositor(jit=compiled).composite(img, _jobs(img, faces, t, False)))
    monkeypatch.setattr(jit, "_enabled", False)
    monkeypatch.setattr(S, "smile_flow", S.smile_flow_reference)
    for _, img, faces, t in tracked:
        ref_out.append(CpuCompositor(fast=False).composite(img, _jobs(img, faces, t, True)))
    touched_all = within = worst = 0
    for (_, img, _, _), a, b in zip(tracked, ref_out, fast_out):
        d = _diff(a, b)
        touched = np.any(a != img, -1) | np.any(b != img, -1)
        touched_all += int(touched.sum())
        within += int((d[touched] <= 1).sum())
        worst = max(worst, int(d.max()))
    assert within / touched_all >= 0.9999, (within / touched_all, worst)
    assert worst <= 3


# ------------------------------------------------------------------------------ compiled loops
def _requests(tracked):
    """Every eye request of the tracked frames (gaze pitch 10 deg, as the benchmarks)."""
    from warpcam.realtime.effects.gaze import GazePlanner, GazeSettings

    s = GazeSettings(pitch_deg=10.0)
    out = []
    for _, img, faces, t in tracked:
        out += [(img, r) for r in GazePlanner().plan(s, img, faces, t)]
    return s, out


def test_compiled_composite_matches_fast_path(tracked):
    """The fused numba composite against the NumPy/OpenCV fast path: byte-identical on real
    jobs and random ones (palette, lightness and colour fields included), in place or not, and
    in place it never reads back what it wrote (overlapping jobs)."""
    pytest.importorskip("numba")
    from benchmarks.gpu_check import random_frame, random_jobs

    jit_c, fast = CpuCompositor(jit=True), CpuCompositor(jit=False)
    rng = np.random.default_rng(5)
    cases = [(img, _jobs(img, faces, t, False)) for _, img, faces, t in tracked[::3]]
    for extras in (False, True):
        frame = random_frame(rng, (360, 640))
        cases.append((frame, random_jobs(rng, frame, 8, extras)))
    changed = 0
    for img, jobs in cases:
        want = fast.composite(img, jobs)
        got = jit_c.composite(img, jobs)
        assert np.array_equal(got, want)
        inplace = img.copy()
        assert jit_c.composite(inplace, jobs, inplace=True) is inplace
        assert np.array_equal(inplace, want)
        changed += int(np.any(want != img, -1).sum())
    assert changed > 10000


def test_compiled_eye_fields_match_numpy(tracked, monkeypatch):
    """Iris warp (flow, reveal, mask, shift achieved), eye visibility and the eye job's alpha:
    numba against NumPy/OpenCV on every eye of the real frames."""
    pytest.importorskip("numba")
    from warpcam.core import eyewarp, jit
    from warpcam.realtime.effects import gaze as G

    assert jit.prepare(), [jit.why_not(m) for m in jit.MODULES]
    s, reqs = _requests(tracked)
    assert len(reqs) >= 20
    warp = G.LandmarkEyeWarp(cache=False)
    worst_flow = worst_vis = 0.0
    moved = 0
    for img, r in reqs:
        got = {}
        for on in (True, False):
            monkeypatch.setattr(jit, "_enabled", on)
            job = warp._eye_job(r, s, G.FrameCrops(None, img))
            vis = G.eye_visibility(img, r.face, r.side, r.k)
            got[on] = (job, vis)
        (jj, vj), (jn, vn) = got[True], got[False]
        worst_flow = max(worst_flow, float(np.abs(jj.flow - jn.flow).max()))
        assert np.abs(jj.alpha - jn.alpha).max() < 1e-3
        assert (jj.palette_mix is None) == (jn.palette_mix is None)
        if jj.palette_mix is not None:
            assert np.abs(jj.palette_mix[0] - jn.palette_mix[0]).max() < 1e-3
            assert np.abs(jj.palette_mix[1] - jn.palette_mix[1]).max() <= 1.0
        assert np.allclose(jj.meta["iris_shift_px"], jn.meta["iris_shift_px"], atol=1e-6)
        worst_vis = max(worst_vis, abs(vj - vn))
        moved += int(np.abs(jn.flow).max() > 0.5)
    assert worst_flow < 1e-3, worst_flow  # crop pixels
    assert worst_vis < 1e-6, worst_vis
    assert moved >= len(reqs) // 2  # the comparison saw real iris moves
    # a shift the fold check must shrink: the same shrinking both ways
    img, r = reqs[0]
    ew = {}
    for on in (True, False):
        monkeypatch.setattr(jit, "_enabled", on)
        ew[on] = eyewarp.iris_shift_flow(24, 30, np.array([[2, 12], [15, 6], [28, 12]], float),
                                         np.array([[2, 12], [15, 17], [28, 12]], float),
                                         (15, 12), 4.0, (9.0, -3.0), (1.0, 0.35))
    assert np.allclose(ew[True].shift, ew[False].shift)
    assert 0 < np.hypot(*ew[True].shift) < np.hypot(9.0, 3.0)
    assert np.abs(ew[True].flow - ew[False].flow).max() < 1e-3


def test_compiled_smile_matches_rbfinterpolator(tracked, monkeypatch):
    """The numba thin-plate spline (LU solve, grid, OpenCV-style upsampling) against scipy's
    RBFInterpolator, and the smile job's fields against the NumPy path."""
    pytest.importorskip("numba")
    from warpcam.core import jit
    from warpcam.realtime.effects import smile as S

    loops = jit.load("warpcam.core._jitloops", wait=True)
    assert loops is not None, jit.why_not("warpcam.core._jitloops")
    calls = []
    orig = S.smile_flow

    def spy(h, w, src, disp, *a, **k):
        calls.append((h, w, np.array(src), np.array(disp)))
        return orig(h, w, src, disp, *a, **k)

    monkeypatch.setattr(S, "smile_flow", spy)
    eff = S.SmileEffect(S.SmileSettings(0.7), cache=False)
    for _, img, faces, t in tracked:
        eff.jobs(img, faces, t)
    monkeypatch.setattr(S, "smile_flow", orig)
    assert len(calls) >= 20
    for h, w, src, disp in calls:
        win = S._flow_grid(h, w, 3)[4][..., 0]
        ok, got = loops.tps_flow(h, w, src, disp, 3, 1e-3, np.ascontiguousarray(win))
        want = S.smile_flow_reference(h, w, src, disp)
        assert ok and got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < 2e-3
    jobs = {}
    for on in (True, False):
        monkeypatch.setattr(jit, "_enabled", on)
        e = S.SmileEffect(S.SmileSettings(1.0), cache=False)
        jobs[on] = [j for _, img, faces, t in tracked for j in e.jobs(img, faces, t)]
    assert len(jobs[True]) == len(jobs[False]) >= 20
    for a, b in zip(jobs[True], jobs[False]):
        assert np.abs(a.flow - b.flow).max() < 2e-3
        # alpha is the dilated mask flow > 0.01 crop px: float rounding flips a few pixels
        # of its edge, where the flow is 0.01 crop px (the frame test bounds the effect)
        assert (a.alpha != b.alpha).mean() < 0.01
        assert np.allclose(a.meta["corner_shift_px"], b.meta["corner_shift_px"], atol=1e-6)


def test_switch_off_and_missing_numba_fall_back(monkeypatch):
    """``WARPCAM_JIT=0`` (or no numba) selects the reference paths and says why; with the
    switch on, the first frames never wait for numba (the loops compile in the background,
    the reference paths run meanwhile)."""
    from warpcam.core import jit

    monkeypatch.setattr(jit, "_enabled", False)
    assert jit.load("warpcam.core._jitloops") is None
    assert "switched off" in jit.why_not("warpcam.core._jitloops")
    monkeypatch.setattr(jit, "_enabled", True)
    assert jit.load("warpcam.no_such_loops", wait=True) is None
    assert "no_such_loops" in jit.why_not("warpcam.no_such_loops")
    code = ("import os, sys; os.environ['WARPCAM_JIT'] = '0'\n"
            "from warpcam.core import jit; import warpcam.realtime.effects.gaze\n"
            "print(jit.enabled(), 'numba' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.split() == ["False", "False"], r.stdout + r.stderr
    if importlib.util.find_spec("numba") is None:
        return
    # a bounded wait (what a live source does before its first frame) returns by its timeout
    # whether or not the loops are ready, and the build goes on in the background
    code = ("import time; from warpcam.core import jit; m = 'warpcam.core._jitloops'\n"
            "t = time.perf_counter(); first = jit.load(m); dt = time.perf_counter() - t\n"
            "busy = jit.why_not(m) == 'still compiling in the background' and jit.compiling()\n"
            "t = time.perf_counter(); jit.prepare(timeout=0.2); dq = time.perf_counter() - t\n"
            "print(first is None, dt < 0.1, busy, dq < 1.0, jit.prepare(timeout=240),"
            " jit.load(m) is not None, not jit.compiling())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.stdout.split() == ["True"] * 7, r.stdout + r.stderr


# ------------------------------------------------------------------------------ GPU check
def test_gpu_check_without_gpu_says_so_and_exits_0(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU path does not apply")
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "NO GPU FOUND" in r.stdout
    res = json.loads(out.read_text())
    assert res["gpu_found"] is False and res["reason"]
    # without --json nothing is written on a machine without a GPU
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and not (tmp_path / "benchmarks").exists(), r.stdout + r.stderr


def test_gpu_check_imports_no_mediapipe_or_av():
    code = ("import sys, benchmarks.gpu_check, warpcam.kernels.cpu, warpcam.kernels.torch_backend,"
            " warpcam.kernels.crop, warpcam.realtime.gaze_model, warpcam.realtime.runtime,"
            " warpcam.core.geometry, warpcam.core.types\n"
            "try:\n    import warpcam.kernels.cuda_backend\nexcept ImportError:\n    pass\n"
            "print(sorted(m for m in ('mediapipe', 'av') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_gpu_check_sections_run_on_cpu_stand_ins():
    """The GPU sections' code, with CPU backends standing in for the GPU ones (a GPU machine
    runs them for real): catches errors before the first GPU session does."""
    from benchmarks import gpu_check
    from warpcam.kernels.torch_backend import TorchCompositor

    bes = {"cuda": CpuCompositor(), "torch": TorchCompositor("cpu"), "cpu": CpuCompositor()}
    agree = gpu_check.agreement(bes, 0)
    for size in ("720p", "1080p"):
        for case in ("all_fields", "flow_only"):
            assert agree[size][case]["torch_vs_cpu"]["ok"], agree[size][case]
            assert agree[size][case]["input_untouched"]
        assert agree[size]["crop"]["cuda_vs_torch"]["ok"]
    tim = gpu_check.timing(bes, 2, 1)
    assert tim["720p"]["torch"]["composite"]["n"] == 2
    gm = gpu_check.gaze_model(3, 2, device="cpu")
    assert gm["ok"] and gm["backend"] == "torch-cpu"
    # the expression models' section: each bundled model's module against the runtime
    em = gpu_check.expression_models(2, 3, device="cpu",
                                     names=("smile_deepwarp", "keepsmiling_simple", "no_such"))
    assert em["no_such"] == {"skipped": "not bundled"}
    for name in ("smile_deepwarp", "keepsmiling_simple"):
        assert em[name]["ok"], em[name]
        assert em[name]["device_per_face"]["n"] == 2 and em[name]["cpu_per_face"]["n"] == 3
    skipped = gpu_check.expression_models(2, 3, device="cpu", budget_s=0.0,
                                          names=("smile_deepwarp", "au_edit"))
    assert "budget" in skipped["au_edit"]["skipped"]
