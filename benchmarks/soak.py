"""Soak benchmark: the full pipeline over many frames of a real video, looped, watching memory and
per-frame latency.

    python -m benchmarks.soak --frames 20000
    python -m benchmarks.soak --frames 2000 --every 200 --warmup 400     # a short run

The input (default ``../shared/data/real/videos/two_faces_1280x720.mp4``, two faces at 720p) is
decoded again on every loop (a fresh :class:`~warpcam.realtime.io.VideoFileSource` pass each time, so
decoder leaks count too), with frame indices and timestamps continuing across loops. Frames go
through :meth:`warpcam.realtime.pipeline.Pipeline.run` exactly as the CLI runs them (threaded tracking,
gaze ``--gaze-pitch`` and smile ``--smile`` effects, CPU compositor, in place) into a null sink,
or with ``--output file`` into a real video file in a temporary folder, deleted at the end.

Recorded:

- resident memory (RSS) every ``--every`` frames, and the number of live Python objects;
- per frame: the pipeline latency (decoded -> sink done) and the work time (effects + composite
  + output of the frame, plus the most recent tracking time: tracking runs one frame ahead in
  its own thread), in preallocated arrays (the recording itself does not grow).

Verdicts (issue 5): memory growth after the warm-up under ``--max-growth-mb`` (20 MB), and no
p99 drift: the p99 of the last quarter of the run within ``--max-p99-drift`` (25 %) of the p99 of
the first quarter after warm-up, on the work time (the latency of a file job also contains the
feed queue's wait, which follows the slower stage, not drift). Writes
``benchmarks/results/soak.json`` and ``docs/soak_memory_latency.png``.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save_figure, write_json

DEFAULT_INPUT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "videos"
                 / "two_faces_1280x720.mp4")


def rss_bytes() -> int:
    """Resident set size of this process (psutil when installed, else /proc)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LoopedVideo:
    """A video file played ``frames`` frames long, looping; a fresh decoder pass per loop.

    Frames keep increasing ``index`` and ``pts_seconds`` across loops; ``pts`` / ``time_base``
    are dropped (the file sink then times frames from ``pts_seconds``).
    """

    is_live = False

    def __init__(self, path, frames: int):
        from warpcam.realtime.io import VideoFileSource

        self.path, self.total = Path(path), int(frames)
        with VideoFileSource(self.path) as probe:
            self.width, self.height = probe.width, probe.height
            self.fps = probe.fps or 30.0
        self.frame_count = self.total
        self.loops = 0

    def __iter__(self):
        import dataclasses

        from warpcam.realtime.io import VideoFileSource

        n, offset = 0, 0.0
        while n < self.total:
            last = 0.0
            with VideoFileSource(self.path) as src:
                for fr in src:
                    if n >= self.total:
                        return
                    last = fr.pts_seconds or 0.0
                    yield dataclasses.replace(fr, index=n, pts_seconds=offset + last, pts=None,
                                              time_base=None)
                    n += 1
            self.loops += 1
            offset += last + 1.0 / self.fps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="video file (looped)")
    ap.add_argument("--frames", type=int, default=20000, help="frames to run (20000)")
    ap.add_argument("--every", type=int, default=1000, help="memory sample interval (1000)")
    ap.add_argument("--warmup", type=int, default=1000,
                    help="frames before the memory baseline (1000)")
    ap.add_argument("--max-faces", type=int, default=2)
    ap.add_argument("--gaze-pitch", type=float, default=10.0)
    ap.add_argument("--eye-contact", action="store_true", help="eye contact on (as for a webcam)")
    ap.add_argument("--smile", type=float, default=0.5)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--output", choices=("null", "file"), default="null",
                    help="null sink, or a real video file in a temporary folder (deleted)")
    ap.add_argument("--max-growth-mb", type=float, default=20.0)
    ap.add_argument("--max-p99-drift", type=float, default=0.25)
    ap.add_argument("--json", default="benchmarks/results/soak.json")
    ap.add_argument("--plot", default="docs/soak_memory_latency.png")
    a = ap.parse_args(argv)
    if a.warmup >= a.frames:
        ap.error("--warmup must be smaller than --frames")

    from warpcam.kernels import get_compositor
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline, StageTimer
    from warpcam.realtime.io import NullSink, VideoFileSink
    from warpcam.realtime.effects.smile import SmileSettings
    from warpcam.realtime.tracker import FaceTracker

    source = LoopedVideo(a.input, a.frames)
    settings = build_effects(gaze=GazeSettings(pitch_deg=a.gaze_pitch, eye_contact=a.eye_contact),
                              smile=SmileSettings(a.smile))
    tmpdir = None
    if a.output == "file":
        tmpdir = tempfile.mkdtemp(prefix="warpcam-soak-")
        sink = VideoFileSink(Path(tmpdir) / "soak.mp4", width=source.width, height=source.height,
                             fps=source.fps)
    else:
        sink = NullSink()

    latency = np.full(a.frames, np.nan)   # decoded -> sink done, seconds
    work = np.full(a.frames, np.nan)      # tracking + effects + composite + output, seconds
    faces_n = np.zeros(a.frames, np.int16)
    samples = []                          # (frame, rss bytes, python objects, seconds)
    timer = StageTimer(window=64)         # the pipeline's own record: small and bounded
    t0 = time.perf_counter()
    state = {"n": 0, "track": 0.0}

    def sample(n):
        samples.append((n, rss_bytes(), len(gc.get_objects()), time.perf_counter() - t0))

    def on_frame(frame, out, faces, jobs):
        n = state["n"]
        now = time.perf_counter()
        if n < a.frames:
            if frame.captured_at is not None:
                latency[n] = now - frame.captured_at
            st = timer.last_ms
            work[n] = (st("tracking", 1).sum() + st("effects", 1).sum()
                       + st("composite", 1).sum() + st("output", 1).sum()) / 1e3
            faces_n[n] = len(faces)
        state["n"] = n + 1
        if (n + 1) % a.every == 0:
            sample(n + 1)

    sample(0)
    with FaceTracker(max_faces=a.max_faces) as tracker:
        pipe = Pipeline(tracker, get_compositor(a.backend), settings, timer=timer, inplace=True)
        try:
            stats = pipe.run(source, sink, on_frame=on_frame)
        finally:
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
    wall = time.perf_counter() - t0
    n_done = state["n"]

    fr = np.array([s[0] for s in samples])
    rss_mb = np.array([s[1] for s in samples]) / 2 ** 20
    objs = np.array([s[2] for s in samples])
    after = fr >= a.warmup
    base_i = int(np.argmax(after)) if after.any() else len(fr) - 1
    growth = float(rss_mb[-1] - rss_mb[base_i])
    peak_growth = float(rss_mb[base_i:].max() - rss_mb[base_i])
    slope = float(np.polyfit(fr[base_i:], rss_mb[base_i:], 1)[0] * 1000) \
        if after.sum() >= 2 else float("nan")

    def pct_windows(v):
        win = []
        for s in range(a.warmup, n_done, a.every):
            seg = v[s:min(s + a.every, n_done)]
            seg = seg[np.isfinite(seg)]
            if seg.size:
                win.append((s, float(np.percentile(seg, 50) * 1e3),
                            float(np.percentile(seg, 99) * 1e3)))
        return win

    def quarter_p99(v):
        span = v[a.warmup:n_done]
        q = max(1, span.size // 4)
        first, last = span[:q], span[-q:]
        first, last = first[np.isfinite(first)], last[np.isfinite(last)]
        return float(np.percentile(first, 99) * 1e3), float(np.percentile(last, 99) * 1e3)

    w_first, w_last = quarter_p99(work)
    l_first, l_last = quarter_p99(latency)
    drift = (w_last - w_first) / w_first
    res = dict(
        input=str(a.input), size=[source.width, source.height], frames=n_done,
        loops=source.loops, warmup=a.warmup, every=a.every, output=a.output,
        max_faces=a.max_faces, gaze_pitch=a.gaze_pitch, eye_contact=a.eye_contact,
        smile=a.smile, backend=a.backend, mean_faces=float(faces_n[:n_done].mean()),
        wall_seconds=wall, fps=n_done / wall,
        memory=dict(rss_mb=[[int(f), float(m)] for f, m in zip(fr, rss_mb)],
                    python_objects=[[int(f), int(o)] for f, o in zip(fr, objs)],
                    baseline_frame=int(fr[base_i]), baseline_mb=float(rss_mb[base_i]),
                    growth_after_warmup_mb=growth, peak_growth_after_warmup_mb=peak_growth,
                    slope_mb_per_1000_frames=slope,
                    python_objects_growth=int(objs[-1] - objs[base_i])),
        latency_ms=dict(p50=float(np.nanpercentile(latency[a.warmup:n_done], 50) * 1e3),
                        p99=float(np.nanpercentile(latency[a.warmup:n_done], 99) * 1e3),
                        p99_first_quarter=l_first, p99_last_quarter=l_last,
                        p99_drift_fraction=(l_last - l_first) / l_first,
                        windows=pct_windows(latency)),
        work_ms=dict(p50=float(np.nanpercentile(work[a.warmup:n_done], 50) * 1e3),
                     p99=float(np.nanpercentile(work[a.warmup:n_done], 99) * 1e3),
                     p99_first_quarter=w_first, p99_last_quarter=w_last,
                     p99_drift_fraction=drift, windows=pct_windows(work)),
        verdict=dict(memory_flat=bool(peak_growth < a.max_growth_mb),
                     p99_no_drift=bool(drift < a.max_p99_drift),
                     max_growth_mb=a.max_growth_mb, max_p99_drift=a.max_p99_drift),
        pipeline_stages=stats["stages"],
        per_frame=dict(latency_ms=[round(float(x) * 1e3, 2) for x in latency[:n_done]],
                       work_ms=[round(float(x) * 1e3, 2) for x in work[:n_done]],
                       faces=faces_n[:n_done].tolist()),
        machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                     python=platform.python_version(),
                     loadavg=list(os.getloadavg()) if hasattr(os, "getloadavg") else None),
    )
    print(f"{a.input}: {source.width}x{source.height}, {n_done} frames ({source.loops} loops) in "
          f"{wall:.0f} s ({res['fps']:.1f} fps), {res['mean_faces']:.2f} faces/frame")
    print(f"RSS: {rss_mb[0]:.0f} MB at start, {rss_mb[base_i]:.0f} MB after {fr[base_i]} frames, "
          f"{rss_mb[-1]:.0f} MB at the end: growth {growth:+.1f} MB (peak {peak_growth:+.1f}), "
          f"{slope:+.2f} MB / 1000 frames; Python objects "
          f"{res['memory']['python_objects_growth']:+d}")
    print(f"work p50 {res['work_ms']['p50']:.1f} ms, p99 {res['work_ms']['p99']:.1f} ms "
          f"(first quarter {w_first:.1f}, last quarter {w_last:.1f}: drift {drift:+.0%}); "
          f"latency p50 {res['latency_ms']['p50']:.1f}, p99 {res['latency_ms']['p99']:.1f} ms")
    print(f"verdict: memory flat {res['verdict']['memory_flat']}, p99 no drift "
          f"{res['verdict']['p99_no_drift']}")
    if a.json:
        write_json(a.json, res)
    if a.plot:
        plot(res, latency[:n_done] * 1e3, work[:n_done] * 1e3, a.plot)
        print(f"wrote {a.plot}")
    return res


def plot(res: dict, latency_ms: np.ndarray, work_ms: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    m = np.array(res["memory"]["rss_mb"], float)
    ax1.plot(m[:, 0], m[:, 1], "o-", ms=3)
    ax1.axvline(res["memory"]["baseline_frame"], color="grey", ls=":", lw=1, label="warm-up end")
    ax1.axhline(res["memory"]["baseline_mb"] + res["verdict"]["max_growth_mb"], color="r",
                ls="--", lw=1, label=f"baseline + {res['verdict']['max_growth_mb']:g} MB")
    ax1.set_ylabel("resident memory (MB)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax1.set_title(f"soak: {res['size'][0]}x{res['size'][1]}, {res['frames']} frames, "
                  f"growth {res['memory']['growth_after_warmup_mb']:+.1f} MB after warm-up")
    x = np.arange(latency_ms.size)
    ax2.plot(x, work_ms, ",", alpha=0.3, color="C0")
    for key, col, lab in (("work_ms", "C0", "work"), ("latency_ms", "C1", "latency")):
        w = np.array(res[key]["windows"], float)
        if w.size:
            mid = w[:, 0] + res["every"] / 2
            ax2.plot(mid, w[:, 2], "o-", color=col, ms=3, label=f"{lab} p99 per window")
            ax2.plot(mid, w[:, 1], "s--", color=col, ms=2, lw=1, label=f"{lab} p50 per window")
    ax2.axhline(1000 / 30, color="k", ls="--", lw=1, label="33.3 ms (30 fps)")
    ax2.set_ylim(0, max(40.0, float(np.nanpercentile(latency_ms, 99.5)) * 1.2))
    ax2.set_xlabel("frame")
    ax2.set_ylabel("ms")
    ax2.legend(fontsize=7, ncol=2)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
