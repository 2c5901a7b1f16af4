"""Throughput of a file job against real time: ``warpcam --input VIDEO --output OUT.mp4`` with
gaze and smile, the whole path (decode, tracking in its own thread, effects, composite, H.264
encode, audio copy), in this process through :func:`warpcam.realtime.cli.run_job`.

    python -m benchmarks.file_job --input two_faces_1280x720.mp4 [--max-faces 2] [--json PATH]

A bare video name is looked up in ``../shared/data/real/videos/`` (as ``benchmarks.latency``).
Start-up (model and tracker loading, the numba loops from their cache, the encoder's first
frames) is left out: the rate is taken from the wall time between the ``--skip``-th written frame
(10) and the last one. ``realtime_factor`` is that rate over the video's own frame rate (the
issue-10 goal: at least 2x real time for a 30 fps video, i.e. 60 frames/s). Prints the figures;
writes a JSON file only with ``--json PATH``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import machine_info, write_json
from benchmarks.latency import resolve_input


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True,
                    help="video file, or a bare name of one in ../shared/data/real/videos/")
    ap.add_argument("--max-faces", type=int, default=2)
    ap.add_argument("--gaze-pitch", type=float, default=10.0)
    ap.add_argument("--smile", type=float, default=0.5)
    ap.add_argument("--skip", type=int, default=10, help="frames left out as start-up (10)")
    ap.add_argument("--json", default="", help="write the results to this JSON file")
    a = ap.parse_args(argv)
    src = resolve_input(a.input)

    import av

    with av.open(src) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate)
        has_audio = bool(c.streams.audio)
    from warpcam.realtime.cli import parse_job_args, run_job

    load0 = list(os.getloadavg())
    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.mp4")
        args = parse_job_args(["--input", src, "--output", out, "--quiet",
                               "--max-faces", str(a.max_faces),
                               "--gaze-pitch", str(a.gaze_pitch), "--smile", str(a.smile)])
        t_start = time.perf_counter()
        rc = run_job(args, on_frame=lambda *_: stamps.append(time.perf_counter()))
        t_end = time.perf_counter()
        if rc != 0:
            raise SystemExit(f"file job failed (exit {rc})")
        size = os.path.getsize(out)
    n = len(stamps)
    if n <= a.skip + 1:
        raise SystemExit(f"only {n} frames: too few to measure past --skip {a.skip}")
    rate = (n - 1 - a.skip) / (stamps[-1] - stamps[a.skip])
    res = dict(
        input=src, frames=n, video_fps=round(fps, 3), audio=has_audio,
        max_faces=a.max_faces, gaze_pitch=a.gaze_pitch, smile=a.smile,
        frames_per_s=round(rate, 1), realtime_factor=round(rate / fps, 2),
        startup_s=round(stamps[0] - t_start, 2), total_s=round(t_end - t_start, 2),
        output_bytes=size, skip=a.skip,
        machine=machine_info(load0),
    )
    print(f"{src}: {n} frames at {fps:.2f} fps{' with audio' if has_audio else ''}; "
          f"{rate:.1f} frames/s after the first {a.skip} = {rate / fps:.2f}x real time "
          f"(start-up {res['startup_s']} s, whole job {res['total_s']} s; load average "
          f"{[round(x, 1) for x in load0]} -> {[round(x, 1) for x in res['machine']['loadavg']]})")
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
