"""Throughput of ``warpcam batch``: videos per hour and frames per second per core, for the local
process pool with 1 and 2 workers and for ``--ray local``.

    python -m benchmarks.batch                      # print the table
    python -m benchmarks.batch --json               # ... and write benchmarks/results/batch.json
    python -m benchmarks.batch --clips 3 --frames 30 --configs local1   # a quick look

Input: the first ``--frames`` (default 50) frames of ``--clips`` (default 6) single-face shared
videos (``../shared/data/real/videos``: MEAD 256 px, 512-524 px talking heads, see ``CLIPS``),
re-encoded (H.264) into a temporary folder, so that every run sees the same files. Each
configuration runs ``warpcam batch IN OUT --gaze-pitch 10 --smile 0.5 --backend cpu`` into a
fresh ``OUT`` (nothing skipped) through :func:`warpcam.realtime.batch.main`, and reads its JSON
report.

Figures per configuration:

- ``videos_per_hour`` = files / wall seconds x 3600 and ``fps`` = frames / wall seconds (the
  batch's wall time: process starts, model loading, decode, track, effects, encode);
- ``fps_per_core`` = ``fps`` / the cores the run may use (min(workers x THREADS_PER_JOB, usable
  cores));
- ``frames_per_cpu_second`` = frames / the CPU seconds of the jobs (all their threads, model
  loading included, from the report): what one fully busy core gives, the least sensitive to
  other load on the machine, and the figure to scale from (a node of C cores: about C x it).

``--ray local`` starts its in-process (loopback) Ray instance first, timed apart
(``ray_start_s``); its tasks then run on it. Torch runs with one thread (OMP_NUM_THREADS=1).
The machine's load average before and after is recorded: a loaded machine lowers the wall-time
figures, not the frames per CPU second as much.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import write_json
from tests.realdata import trim_video as trim

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "videos"
#: Single-face clips, small first (the default takes the first 6).
CLIPS = ["mead_w009_neutral_256.mp4", "mead_w009_happy_256.mp4", "glance_smile_blink_512.mp4",
         "glasses_talking_524.mp4", "news_talking_head_512.mp4", "looks_down_blinks_512.mp4",
         "eyes_left_right_wink_512.mp4"]
FLAGS = ["--gaze-pitch", "10", "--smile", "0.5", "--backend", "cpu"]
CONFIGS = {"local1": ("local", 1), "local2": ("local", 2), "ray2": ("ray", 2)}
DEFAULT_JSON = "benchmarks/results/batch.json"


def load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def run_config(name: str, in_dir: Path, work: Path, cores: int) -> dict:
    from warpcam.realtime import batch

    engine, workers = CONFIGS[name]
    out = work / f"out_{name}"
    argv = [str(in_dir), str(out), *FLAGS, "--workers", str(workers), "--quiet"]
    res = {"config": name, "engine": engine, "workers": workers,
           "cores": min(workers * batch.THREADS_PER_JOB, cores), "load_before": load()}
    ray = None
    if engine == "ray":
        t0 = time.perf_counter()
        ray = batch.start_local_ray(num_cpus=workers * batch.THREADS_PER_JOB)
        res["ray_start_s"] = round(time.perf_counter() - t0, 2)
        argv += ["--ray", "local"]
    try:
        code = batch.main(argv)
    finally:
        if ray is not None:
            ray.shutdown()
    rep = json.loads((out / batch.REPORT_NAME).read_text())
    tot = rep["totals"]
    wall, frames = tot["seconds"], tot["frames"]
    res.update(exit_status=code, files=tot["done"], failed=tot["failed"], frames=frames,
               wall_s=wall, cpu_s=tot["cpu_seconds"], load_after=load(),
               videos_per_hour=round(tot["done"] / wall * 3600, 1),
               fps=round(frames / wall, 2),
               fps_per_core=round(frames / wall / res["cores"], 2),
               frames_per_cpu_second=round(frames / tot["cpu_seconds"], 2),
               per_file_fps=[f["fps"] for f in rep["files"]])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=6, help=f"how many of {len(CLIPS)} clips")
    ap.add_argument("--frames", type=int, default=50, help="frames per clip")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated of {', '.join(CONFIGS)}")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default="", metavar="PATH",
                    help=f"write the results (default path {DEFAULT_JSON})")
    a = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    names = [c for c in a.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"benchmarks.batch: error: unknown config {unknown[0]}")
    clips = CLIPS[:a.clips]
    if not VIDEOS.is_dir():
        raise SystemExit(f"benchmarks.batch: error: {VIDEOS} is missing")
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="warpcam-bench-batch-"))
    try:
        in_dir = work / "in"
        in_dir.mkdir()
        counts = {c: trim(VIDEOS / c, in_dir / c, a.frames) for c in clips}
        warm = work / "warm"  # a first job off the clock: files of torch/mediapipe in the cache
        warm.mkdir()
        trim(VIDEOS / clips[0], warm / clips[0], 2)
        from warpcam.realtime import batch
        batch.main([str(warm), str(work / "out_warm"), *FLAGS, "--workers", "1", "--quiet"])
        rows = [run_config(n, in_dir, work, cores) for n in names]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(clips)} clips x {a.frames} frames ({sum(counts.values())} frames), "
          f"{cores} cores, load {rows[0]['load_before']}")
    print(f"{'config':8} {'workers':>7} {'cores':>5} {'wall s':>7} {'videos/h':>9} "
          f"{'frames/s':>8} {'fps/core':>8} {'f/CPU-s':>8}")
    for r in rows:
        print(f"{r['config']:8} {r['workers']:7d} {r['cores']:5d} {r['wall_s']:7.1f} "
              f"{r['videos_per_hour']:9.0f} {r['fps']:8.2f} {r['fps_per_core']:8.2f} "
              f"{r['frames_per_cpu_second']:8.2f}"
              + (f"  (Ray start {r['ray_start_s']:.1f} s, apart)" if "ray_start_s" in r else ""))
    if a.json:
        write_json(a.json, {
            "clips": counts, "flags": FLAGS, "cores": cores, "machine": platform.processor()
            or platform.machine(), "python": platform.python_version(), "results": rows})
    return 0 if all(r["exit_status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
