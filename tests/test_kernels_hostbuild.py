"""The host build and the packed tables the CUDA kernels read: struct layouts, offsets and the
tile list that forms the composite launch grid."""
from __future__ import annotations

import numpy as np
import pytest

from warpcam.kernels import cuda as kcuda
from warpcam.kernels import hostbuild
from warpcam.core.types import WarpJob


@pytest.fixture(scope="module")
def host():
    if hostbuild.find_compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): cannot build the host copy of the kernels")
    return hostbuild.load()


def test_struct_layouts_match(host):
    assert host.job_size == kcuda.JOB_DTYPE.itemsize == 112
    assert host.roi_size == kcuda.ROI_DTYPE.itemsize == 64
    assert host.tile == kcuda.TILE


def test_build_is_cached_outside_the_repo(host, tmp_path, monkeypatch):
    lib = hostbuild.build()
    repo = hostbuild.Path(hostbuild.__file__).resolve().parents[1]
    assert repo not in lib.resolve().parents
    assert hostbuild.build() == lib  # cached: same path, no rebuild
    monkeypatch.setenv("WARPCAM_CACHE_DIR", str(tmp_path))
    fresh = hostbuild.build()
    assert fresh.parent == tmp_path and fresh.exists()
    assert hostbuild.HostKernels(fresh).job_size == 112


def test_missing_compiler_is_reported(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-warpcam")
    assert hostbuild.find_compiler() is None
    with pytest.raises(hostbuild.HostBuildError, match="no C\\+\\+ compiler"):
        hostbuild.build()


def _job(a, size=(6, 8), alpha=1.0, **kw):
    h, w = size
    return WarpJob(np.asarray(a, float), np.random.default_rng(0).normal(size=(h, w, 2)),
                   np.full((h, w), alpha, np.float32), **kw)


def test_pack_jobs_offsets_and_order():
    rng = np.random.default_rng(1)
    size = (6, 8)
    j1 = _job([[2, 0, 10], [0, 2, 12]], lightness=rng.random(size),
              color=rng.random(size + (3,)) * 255, attention=rng.random(size))
    j2 = _job([[1, 0, 200], [0, 1, 200]])  # wholly outside a 100 x 120 frame: dropped
    j3 = _job([[1, 0.2, 40], [-0.2, 1, 30]], palette_mix=(rng.random(size), (1.0, 2.0, 3.0)))
    packed = kcuda.pack_jobs([j1, j2, j3], (100, 120, 3))
    assert packed.njobs == 2
    t, f = packed.table, packed.fields
    assert f.dtype == np.float32
    n = 6 * 8

    def field(off, c):
        return f[off:off + n * c]

    f32 = np.float32
    np.testing.assert_array_equal(field(t[0]["flow"], 2), j1.flow.reshape(-1))
    np.testing.assert_array_equal(field(t[0]["alpha"], 1), j1.alpha.reshape(-1))
    np.testing.assert_array_equal(field(t[0]["light"], 1), j1.lightness.reshape(-1).astype(f32))
    np.testing.assert_array_equal(field(t[0]["color"], 3), j1.color.reshape(-1).astype(f32))
    np.testing.assert_array_equal(field(t[0]["att"], 1), j1.attention.reshape(-1).astype(f32))
    assert t[0]["palw"] == -1
    assert t[1]["light"] == -1 and t[1]["color"] == -1 and t[1]["att"] == -1
    np.testing.assert_array_equal(field(t[1]["palw"], 1),
                                  j3.palette_mix[0].reshape(-1).astype(f32))
    np.testing.assert_array_equal(t[1]["pal"], [1, 2, 3])
    np.testing.assert_allclose(t[1]["a"], j3.crop_to_frame.reshape(-1), rtol=1e-7)
    inv = np.linalg.inv(np.vstack([j3.crop_to_frame, [0, 0, 1]]))[:2]
    np.testing.assert_allclose(t[1]["inv"], inv.reshape(-1), rtol=1e-6)
    assert (t["h"] == 6).all() and (t["w"] == 8).all()
    assert tuple(t[0][["x0", "y0", "x1", "y1"]].item()) == j1.frame_bbox((100, 120))


def test_job_box_shrinks_to_alpha_support_only():
    size = (20, 20)
    alpha = np.zeros(size, np.float32)
    alpha[5:8, 9:12] = 1.0
    j = WarpJob(np.array([[2.0, 0, 10], [0, 2.0, 10]]), np.zeros(size + (2,)), alpha)
    box = kcuda.job_box(j, (200, 200))
    # Crop columns 8..12 and rows 4..8 (support grown by one) -> frame 26..35, 18..27.
    assert box == (26, 18, 35, 27)
    # alpha > 0 on the crop edge: the box is frame_bbox's (it reaches half a crop pixel out).
    full = WarpJob(j.crop_to_frame, j.flow, np.ones(size, np.float32))
    assert kcuda.job_box(full, (200, 200)) == full.frame_bbox((200, 200))
    assert kcuda.job_box(WarpJob(j.crop_to_frame, j.flow, np.zeros(size)), (200, 200)) is None


def test_tiles_cover_exactly_the_boxes():
    H, W = 100, 130
    boxes = [(3, 5, 20, 17), (60, 40, 61, 41), (110, 90, 130, 100)]
    tiles = kcuda.job_tiles(boxes, H, W)
    assert tiles.dtype == np.int32 and tiles.shape[1] == 2
    assert len({tuple(t) for t in tiles}) == len(tiles)
    T = kcuda.TILE
    covered = np.zeros((H, W), bool)
    for tx, ty in tiles:
        covered[ty * T:(ty + 1) * T, tx * T:(tx + 1) * T] = True
    need = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in boxes:
        need[y0:y1, x0:x1] = True
    assert covered[need].all()
    for tx, ty in tiles:  # every tile meets a box
        assert need[ty * T:(ty + 1) * T, tx * T:(tx + 1) * T].any()
    assert kcuda.job_tiles([], H, W).shape == (0, 2)


def test_pack_crop_layout():
    from warpcam.kernels.crop import CropSpec

    a = np.tile(np.array([[1.0, 0, 3], [0, 1.0, 4]]), (3, 1, 1))
    specs = [CropSpec(a[:2], (4, 5), 0.5, 0.5, flip=[False, True]),
             CropSpec(a[2:], (6, 7), (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), border="constant")]
    table, total, shapes = kcuda.pack_crop(specs)
    assert shapes == [(2, 3, 4, 5), (1, 3, 6, 7)]
    assert total == 2 * 3 * 20 + 3 * 42
    assert list(table["out_offset"]) == [0, 60, 120]
    assert list(table["border"]) == [kcuda.BORDER_REPLICATE] * 2 + [kcuda.BORDER_ZERO]
    np.testing.assert_allclose(table[1]["a"], [-1, 0, 7, 0, 1, 4])  # u -> 4 - u folded in
    np.testing.assert_allclose(table[2]["scale"], 1 / (255 * np.array([0.5, 0.6, 0.7])), rtol=1e-6)
    np.testing.assert_allclose(table[2]["bias"], -np.array([0.1, 0.2, 0.3]) / [0.5, 0.6, 0.7],
                               rtol=1e-6)
    flat = np.arange(total)
    parts = kcuda.split_output(flat, shapes)
    assert parts[1].shape == (1, 3, 6, 7) and parts[1].reshape(-1)[0] == 120
