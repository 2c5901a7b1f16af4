"""The fast paths agree with their references (never timed here), and the GPU check runs and
says so on a machine without a GPU.

- ``CpuCompositor(fast=True)`` (one 4-channel remap of the crop fields per job) against
  ``CpuCompositor(fast=False)`` (the reference, one remap per field);
- :func:`warpcam.realtime.effects.smile.smile_flow` (a direct thin-plate solve) against
  :func:`~warpcam.realtime.effects.smile.smile_flow_reference` (scipy's ``RBFInterpolator``);
- the whole frame (gaze + smile + composite, cache off) fast against reference, on real faces
  from ``../shared/data/real``: within one grey level.
"""
from __future__ import annotations

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


def test_fast_frame_matches_reference_frame(tracked, monkeypatch):
    """Everything fast (direct TPS, fast composite) against everything reference
    (RBFInterpolator, per-field composite), cache off: the same output within one grey level."""
    from warpcam.realtime.effects import smile as S

    fast_out, ref_out = [], []
    for _, img, faces, t in tracked:
        fast_out.append(CpuCompositor().composite(img, _jobs(img, faces, t, False)))
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
