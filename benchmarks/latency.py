"""Per-stage latency of the frame pipeline on a video file, and its cost over tracking alone.

    python -m benchmarks.latency --input ../shared/data/real/videos/two_faces_1280x720.mp4 \
        --max-faces 2

Decodes the file once (the decode time per frame is reported as ``capture``), then runs over
the same in-memory frames, in one process and alternating rounds:

- **tracking alone**: a fresh :class:`~realtime.tracker.FaceTracker` on every frame;
- **full pipeline**: a fresh tracker + gaze (``--gaze-pitch``) + smile (``--smile``) effects +
  compositor (``--backend``) + a null sink.

Prints p50/p99 per stage in ms, fps, effects+composite per face, and the ratio of the full
pipeline to tracking alone (p50 per frame); writes everything to a JSON file
(default ``benchmarks/results/latency.json``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np


def _pct(v, q):
    return float(np.percentile(np.asarray(v) * 1e3, q)) if len(v) else float("nan")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="video file")
    ap.add_argument("--max-faces", type=int, default=1)
    ap.add_argument("--gaze-pitch", type=float, default=10.0)
    ap.add_argument("--smile", type=float, default=0.5)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--frames", type=int, default=300, help="frames to use (default 300)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--json", default="benchmarks/results/latency.json")
    a = ap.parse_args(argv)

    from kernels import get_compositor
    from realtime.gaze import GazeSettings
    from realtime.pipeline import EffectSettings, Pipeline, StageTimer
    from realtime.sinks import NullSink
    from realtime.smile import SmileSettings
    from realtime.sources import VideoFileSource
    from realtime.tracker import FaceTracker

    frames, decode = [], []
    with VideoFileSource(a.input) as src:
        it = iter(src)
        while len(frames) < a.frames:
            t0 = time.perf_counter()
            try:
                fr = next(it)
            except StopIteration:
                break
            decode.append(time.perf_counter() - t0)
            frames.append(fr)
    if not frames:
        raise SystemExit(f"no frames decoded from {a.input}")
    h, w = frames[0].image.shape[:2]

    track_only, full = [], []
    timer = StageTimer()
    faces_per_frame = []
    for rnd in range(a.rounds):
        with FaceTracker(max_faces=a.max_faces) as tr:
            for fr in frames:
                t0 = time.perf_counter()
                tr.track(fr.image, fr.pts_seconds)
                track_only.append(time.perf_counter() - t0)
        settings = EffectSettings(gaze=GazeSettings(pitch_deg=a.gaze_pitch),
                                  smile=SmileSettings(a.smile))
        with FaceTracker(max_faces=a.max_faces) as tr:
            pipe = Pipeline(tr, get_compositor(a.backend), settings, timer=timer, inplace=True)
            sink = NullSink()
            for fr in frames:
                # in place, as the CLI runs, on a copy: the frames are reused by the next round
                fr = dataclasses.replace(fr, image=fr.image.copy())
                t0 = time.perf_counter()
                out, faces, _ = pipe.process(fr)
                t1 = time.perf_counter()
                sink.write(fr, out)
                t2 = time.perf_counter()
                timer.add("output", t2 - t1)
                full.append(t2 - t0)
                if rnd == 0:
                    faces_per_frame.append(len(faces))

    cache_hits = pipe.gaze.cache.hits + pipe.smile.cache.hits
    cache_all = cache_hits + pipe.gaze.cache.misses + pipe.smile.cache.misses
    eff = timer.values_ms("effects") / 1e3
    comp = timer.values_ms("composite") / 1e3
    nf = np.array(faces_per_frame * a.rounds, np.float64)
    with_face = nf > 0
    per_face = (eff + comp)[with_face] / nf[with_face] if with_face.any() else np.array([])
    res = dict(
        input=str(a.input), size=[w, h], frames=len(frames), rounds=a.rounds,
        max_faces=a.max_faces, gaze_pitch=a.gaze_pitch, smile=a.smile, backend=a.backend,
        mean_faces=float(nf.mean()),
        roi_cache_hit_rate=cache_hits / max(cache_all, 1),
        machine=dict(cpu=platform.processor() or platform.machine(),
                     cores=__import__("os").cpu_count(), python=platform.python_version()),
        stages={
            "capture (decode)": dict(p50_ms=_pct(decode, 50), p99_ms=_pct(decode, 99)),
            "tracking": dict(p50_ms=_pct(timer.values_ms("tracking") / 1e3, 50),
                             p99_ms=_pct(timer.values_ms("tracking") / 1e3, 99)),
            "effects": dict(p50_ms=_pct(eff, 50), p99_ms=_pct(eff, 99)),
            "composite": dict(p50_ms=_pct(comp, 50), p99_ms=_pct(comp, 99)),
            "output (null)": dict(p50_ms=_pct(timer.values_ms("output") / 1e3, 50),
                                  p99_ms=_pct(timer.values_ms("output") / 1e3, 99)),
            "effects+composite per face": dict(p50_ms=_pct(per_face, 50),
                                               p99_ms=_pct(per_face, 99)),
            "tracking alone": dict(p50_ms=_pct(track_only, 50), p99_ms=_pct(track_only, 99)),
            "full pipeline": dict(p50_ms=_pct(full, 50), p99_ms=_pct(full, 99)),
        },
    )
    res["fps_full"] = 1000.0 / res["stages"]["full pipeline"]["p50_ms"]
    res["fps_tracking_alone"] = 1000.0 / res["stages"]["tracking alone"]["p50_ms"]
    res["ratio_full_to_tracking_p50"] = (res["stages"]["full pipeline"]["p50_ms"]
                                         / res["stages"]["tracking alone"]["p50_ms"])
    res["ratio_full_to_tracking_mean"] = float(np.mean(full) / np.mean(track_only))

    print(f"{a.input}: {w}x{h}, {len(frames)} frames x {a.rounds} rounds, "
          f"{res['mean_faces']:.2f} faces/frame, backend {a.backend}")
    print(f"ROI field cache hit rate (last round): {res['roi_cache_hit_rate']:.2f}")
    print(f"{'stage':28s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for k, v in res["stages"].items():
        print(f"{k:28s} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f}")
    print(f"fps: full {res['fps_full']:.1f}, tracking alone {res['fps_tracking_alone']:.1f}")
    print(f"full / tracking alone: {res['ratio_full_to_tracking_p50']:.3f} (p50), "
          f"{res['ratio_full_to_tracking_mean']:.3f} (mean)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {a.json}")
    return res


if __name__ == "__main__":
    main()
