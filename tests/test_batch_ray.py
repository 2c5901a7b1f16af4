"""``warpcam batch --ray local``: the same jobs as Ray tasks on an in-process Ray instance that
the test starts (loopback only, bounded in time, shut down at the end) give the same outputs,
manifest and report as the local process pool; a rerun skips all; each task declares its CPUs,
and a GPU for ``--backend cuda`` (checked on a node that declares one GPU, without a real one).
Real clips (MEAD, 256 px), trimmed to a few frames. Needs the ``ray`` extra."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
av = pytest.importorskip("av")

from tests.test_batch import (CLIPS, FLAGS, decode, leftovers, make_tree,  # noqa: E402
                              report, run_batch)

#: Seconds the whole module may take (Ray's start included) before it is stopped.
LIMIT_S = 240
FRAMES = 6


@pytest.fixture(scope="module")
def local_ray():
    """One loopback Ray head for the module: 2 CPUs and one declared GPU (a resource count:
    Ray hands out GPU ids whether or not a device is there), stopped at the end."""
    from warpcam.realtime import batch

    def too_long(signum, frame):
        raise TimeoutError(f"the Ray tests ran over {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(LIMIT_S)
    ray = None
    try:
        ray = batch.start_local_ray(num_cpus=2, num_gpus=1)
        yield ray
    finally:
        if ray is not None:
            ray.shutdown()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def without_timing(rows: dict) -> dict:
    return {k: {f: v for f, v in row.items() if f not in ("seconds", "cpu_seconds", "fps")}
            for k, row in rows.items() if k != "_totals"}


def test_ray_local_gives_the_outputs_manifest_and_report_of_the_local_pool(tmp_path, local_ray,
                                                                          monkeypatch):
    ray = local_ray
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]  # loopback only
    src = make_tree(tmp_path / "in", frames=FRAMES, broken=True)
    out_pool, out_ray = tmp_path / "pool", tmp_path / "ray"
    assert run_batch(src, out_pool, *FLAGS, "--workers", "2") == 1  # the broken file fails
    monkeypatch.chdir(tmp_path)  # relative folders: a task runs in a working folder of Ray's
    assert run_batch("in", "ray", *FLAGS, "--workers", "2", "--ray", "local") == 1
    assert ray.is_initialized()  # an instance the batch did not start is left running

    pool, by_ray = report(out_pool), report(out_ray)
    assert without_timing(by_ray) == without_timing(pool)
    assert by_ray["sub/broken.mp4"]["status"] == "failed"
    assert "cannot open video" in by_ray["sub/broken.mp4"]["error"]
    for rel in CLIPS:
        assert by_ray[rel]["status"] == "done" and by_ray[rel]["frames"] == FRAMES
        got, want = decode(out_ray / rel), decode(out_pool / rel)
        assert len(got) == len(want) == FRAMES
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    full = json.loads((out_ray / "warpcam-batch-report.json").read_text())
    assert full["engine"] == "ray" and full["totals"]["done"] == 2
    assert full["totals"]["failed"] == 1 and full["totals"]["frames"] == 2 * FRAMES

    def manifest(out: Path) -> dict:
        files = json.loads((out / "warpcam-batch-manifest.json").read_text())["files"]
        return {k: {f: v for f, v in e.items() if f != "seconds"} for k, e in files.items()}

    assert manifest(out_ray) == manifest(out_pool) and set(manifest(out_ray)) == set(CLIPS)
    assert leftovers(out_ray) == []
    # the rerun on Ray skips the finished files and retries only the broken one
    assert run_batch(src, out_ray, *FLAGS, "--workers", "2", "--ray", "local") == 1
    rep = report(out_ray)
    assert [rep[r]["status"] for r in CLIPS] == ["skipped", "skipped"]
    assert rep["sub/broken.mp4"]["status"] == "failed"


def test_ray_tasks_declare_their_cpus_and_a_gpu_for_the_cuda_backend(tmp_path, local_ray):
    from warpcam.realtime import batch

    assert batch.task_options(False)["num_gpus"] == 0
    assert batch.task_options(True)["num_gpus"] == 1
    src = make_tree(tmp_path / "in", frames=2, broken=True)
    results = {}

    def run(gpu: bool, argv: list) -> dict:
        job = {"input": str(src / "sub" / "broken.mp4"), "output": str(tmp_path / "o.mp4"),
               "argv": argv, "analyze": False}
        batch.RayEngine("local", 1, gpu).run(
            [job], lambda name, frames: None, lambda j, res: results.setdefault(gpu, res))
        return results[gpu]

    cpu = run(False, ["--backend", "cpu"])
    assert cpu["resources"] == {"CPU": float(batch.THREADS_PER_JOB)}
    assert cpu["node"] == "127.0.0.1"
    assert cpu["status"] == "failed" and "cannot open video" in cpu["error"]
    # `--backend cuda`: the task holds the node's GPU (none is here: the job fails in one line)
    gpu = run(True, ["--backend", "cuda"])
    assert gpu["resources"] == {"CPU": float(batch.THREADS_PER_JOB), "GPU": 1.0}
    assert gpu["status"] == "failed" and "\n" not in gpu["error"]
    assert not (tmp_path / "o.mp4").exists()
