"""The wheel: built from the checkout, installed apart from it, it runs a one-image job with the
bundled gaze model from another working directory; it installs one import package only."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _listed_packages() -> set:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def test_every_package_folder_is_listed_in_pyproject():
    """setuptools' package-dir needs an explicit list: a new subpackage missing from it would be
    left out of the wheel."""
    mapping = {"warpcam": ROOT / "warpcam", "warpcam.realtime": ROOT / "realtime",
               "warpcam.kernels": ROOT / "kernels", "warpcam.training": ROOT / "training",
               "warpcam.models": ROOT / "models"}
    found = set()
    for pkg, folder in mapping.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((pkg,) + rel))
    assert found == _listed_packages()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--quiet", "-w", str(out), str(ROOT)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("warpcam-*.whl")
    return whl


def test_wheel_holds_one_import_package_with_models_and_cuda_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"warpcam", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for must in ("warpcam/models/gaze_deepwarp.pt2", "warpcam/kernels/cuda/warp_math.cuh",
                 "warpcam/kernels/cuda/warp_kernels.cu", "warpcam/kernels/cuda/host_loops.cpp",
                 "warpcam/realtime/cli.py", "warpcam/core/types.py",
                 "warpcam/training/gaze/model.py"):
        assert must in names, must
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta


def test_installed_wheel_runs_a_job_with_the_bundled_model_elsewhere(wheel, tmp_path):
    import cv2

    from tests.realdata import astronaut_bgr

    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                        "--target", str(target), str(wheel)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    cv2.imwrite(str(work / "face.png"), astronaut_bgr())
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run(
        [sys.executable, "-c", "import warpcam, warpcam.models as m, warpcam.kernels.cuda as c; "
                               "print(warpcam.__file__); print(m.path('gaze_deepwarp.pt2')); "
                               "print(c.HEADER.is_file())"],
        capture_output=True, text=True, cwd=work, env=env, timeout=120)
    lines = where.stdout.splitlines()
    assert where.returncode == 0 and len(lines) == 3, where.stderr
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target)), lines
    assert lines[2] == "True"
    job = subprocess.run([sys.executable, "-m", "warpcam.realtime.cli", "--input", "face.png",
                          "--output", "out.png", "--gaze-model", "--gaze-pitch", "10", "--quiet"],
                         capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert job.returncode == 0, job.stderr
    out = cv2.imread(str(work / "out.png"))
    assert out is not None and out.shape == astronaut_bgr().shape
    assert (out != astronaut_bgr()).any()  # the eyes moved
