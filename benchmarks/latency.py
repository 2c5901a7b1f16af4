"""Per-stage latency of the frame pipeline on a video file, and its cost over tracking alone.

    python -m benchmarks.latency --input two_faces_1280x720.mp4 --max-faces 2

A bare file name that does not exist as given is looked up in the shared real videos
(``../shared/data/real/videos/`` beside the checkout). ``--no-cache`` also runs the full pipeline
with the effects' ROI field cache off (every field rebuilt every frame, as on a face that keeps
moving) and reports both; the JSON's top-level keys are those of the run with the cache on, and
``cache_off`` holds the same keys for the run without it.

Decodes the file once (the decode time per frame is reported as ``capture``), then runs over
the same in-memory frames, in one process and alternating rounds:

- **tracking alone**: a fresh :class:`~warpcam.realtime.tracker.FaceTracker` on every frame;
- **full pipeline**: a fresh tracker + gaze (``--gaze-pitch``) + smile (``--smile``) effects +
  compositor (``--backend``) + a null sink.

Prints p50/p99 per stage in ms, fps, effects+composite per face, and the ratio of the full
pipeline to tracking alone (p50 per frame); writes everything to a JSON file
(only with ``--json PATH``: the committed results in ``benchmarks/results/`` are never
overwritten unless asked).

**Live mode** (``--live``): the latency a person on a call sees. The decoded frames are served
by a fake camera at ``--fps`` (30) on a fixed schedule (a frame the grabber does not fetch
before the next one is due is lost, as with a 1-frame driver buffer), through the whole live path
of the CLI: :class:`~warpcam.realtime.io.WebcamSource` grabber thread, the
:class:`~warpcam.realtime.io.ReconnectingSource` wrapper, the pipeline's tracking thread, effects,
composite, and a sink of the camera's size. Per frame it measures the time from the frame
becoming available (its slot in the camera schedule) to the sink finishing with it, and counts
every camera frame that never reached the sink. Conditions: ``plumbing`` (no tracker, no
effects: the cost of the path itself), ``tracking`` (effects off) and ``effects`` (gaze + smile)::

    python -m benchmarks.latency --live --input two_faces_1280x720.mp4 --seconds 20

Writes a JSON file only with ``--json PATH``.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from benchmarks import machine_info, save_figure, write_json


def _pct(v, q):
    return float(np.percentile(np.asarray(v) * 1e3, q)) if len(v) else float("nan")


SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "videos"


def resolve_input(name: str) -> str:
    """``name`` if it exists, else the shared real video of that name
    (``../shared/data/real/videos/NAME`` beside the checkout); ``SystemExit`` when neither."""
    p = Path(name)
    if p.exists():
        return str(p)
    for cand in (SHARED_VIDEOS / p.name, Path.cwd().parent / "shared" / "data" / "real" / "videos"
                 / p.name):
        if cand.exists():
            return str(cand)
    raise SystemExit(f"no video {name!r} (looked in . and {SHARED_VIDEOS})")


def _cache_off(effects) -> None:
    """Turn the ROI field cache of every effect off (fields rebuilt every frame)."""
    for e in effects:
        target = getattr(e, "fulfiller", e)
        if getattr(target, "cache", None) is not None:
            target.cache = None


def _cache_counts(effects) -> tuple:
    hits = misses = 0
    for e in effects:
        c = getattr(e, "cache", None)
        if c is not None:
            hits, misses = hits + c.hits, misses + c.misses
    return hits, misses


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True,
                    help="video file, or a bare name of one in ../shared/data/real/videos/")
    ap.add_argument("--max-faces", type=int, default=1)
    ap.add_argument("--gaze-pitch", type=float, default=10.0)
    ap.add_argument("--smile", type=float, default=0.5)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--frames", type=int, default=300, help="frames to use (default 300)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--json", default="",
                    help="write the results to this JSON file (default: none; the committed "
                         "benchmarks/results/latency.json and latency_live.json are only "
                         "overwritten when named here)")
    ap.add_argument("--no-cache", action="store_true",
                    help="also run the full pipeline with the ROI field cache off and report "
                         "both (the JSON's cache_off)")
    ap.add_argument("--reference-paths", action="store_true",
                    help="the reference implementations (per-field CPU composite, scipy "
                         "RBFInterpolator smile, NumPy fields): the 'before' of docs/speed.md")
    ap.add_argument("--no-jit", action="store_true",
                    help="the NumPy/OpenCV fast paths instead of the compiled (numba) loops "
                         "(as WARPCAM_JIT=0)")
    ap.add_argument("--gaze-model", nargs="?", const="", default=None, metavar="FILE",
                    help="gaze by the learned model (.pt2; without FILE the bundled one) "
                         "instead of the landmark warp")
    ap.add_argument("--live", action="store_true",
                    help="live mode: a paced fake camera through the whole live path (see above)")
    ap.add_argument("--fps", type=float, default=30.0, help="live: camera frame rate (30)")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="live: seconds measured per condition, after warm-up (20)")
    ap.add_argument("--warmup", type=float, default=2.0, help="live: seconds not measured (2)")
    ap.add_argument("--conditions", default="plumbing,tracking,effects",
                    help="live: comma-separated subset of plumbing,tracking,effects")
    ap.add_argument("--clip-frames", type=int, default=90,
                    help="live: frames of the input kept in memory and looped (90: 250 MB at "
                         "720p)")
    ap.add_argument("--plot", default="docs/reliability_latency_live.png",
                    help="live: latency distribution plot ('' to skip)")
    a = ap.parse_args(argv)
    a.input = resolve_input(a.input)
    if a.live:
        return live_main(a)
    load_start = list(__import__("os").getloadavg())

    from warpcam.kernels import get_compositor
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline, StageTimer
    from warpcam.realtime.io import NullSink
    from warpcam.realtime.effects.smile import SmileSettings
    from warpcam.realtime.io import VideoFileSource
    from warpcam.realtime.tracker import FaceTracker

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

    from warpcam.core import jit as _jit
    if a.reference_paths or a.no_jit:
        _jit.set_enabled(False)
    if a.reference_paths:
        from warpcam.kernels import cpu as _cpu
        from warpcam.realtime.effects import smile as _smile
        _smile.smile_flow = _smile.smile_flow_reference
        _cpu.CpuCompositor.__init__.__defaults__ = (False,)
    jit_build_s = None
    if _jit.enabled():  # compiled before the clock starts (a live run compiles in the background)
        t0 = time.perf_counter()
        _jit.prepare()
        jit_build_s = time.perf_counter() - t0
    options = {}
    if a.gaze_model is not None:
        from warpcam.realtime.gaze_model import load_gaze_model
        options["gaze"] = {"model": load_gaze_model(a.gaze_model or None)}
    conditions = ["cache_on"] + (["cache_off"] if a.no_cache else [])
    track_only = []
    full = {c: [] for c in conditions}
    timers = {c: StageTimer(window=None) for c in conditions}
    faces_per_frame = {c: [] for c in conditions}
    render_cpu = {c: [] for c in conditions}  # thread CPU seconds of effects + composite
    cache = {c: (0, 0) for c in conditions}
    first_frame = {}  # the first frame of each condition in a fresh process (compiled loops load)
    for rnd in range(a.rounds):
        with FaceTracker(max_faces=a.max_faces) as tr:
            for fr in frames:
                t0 = time.perf_counter()
                tr.track(fr.image, fr.pts_seconds)
                track_only.append(time.perf_counter() - t0)
        for cond in conditions:
            effects = build_effects(dict(gaze=GazeSettings(pitch_deg=a.gaze_pitch),
                                         smile=SmileSettings(a.smile)), options)
            if cond == "cache_off":
                _cache_off(effects)
            timer = timers[cond]
            with FaceTracker(max_faces=a.max_faces) as tr:
                pipe = Pipeline(tr, get_compositor(a.backend), effects, timer=timer,
                                inplace=True)
                sink = NullSink()
                for fr in frames:
                    # in place, as the CLI runs, on a copy: the frames are reused next round
                    fr = dataclasses.replace(fr, image=fr.image.copy())
                    t0 = time.perf_counter()
                    img, faces, t = pipe.track(fr)  # = pipe.process(fr), with the render's
                    c0 = time.thread_time()         # CPU time taken apart (load-proof)
                    out, _ = pipe.render(img, faces, t)
                    render_cpu[cond].append(time.thread_time() - c0)
                    t1 = time.perf_counter()
                    sink.write(fr, out)
                    t2 = time.perf_counter()
                    timer.add("output", t2 - t1)
                    full[cond].append(t2 - t0)
                    faces_per_frame[cond].append(len(faces))
                    first_frame.setdefault(cond, (t2 - t0) * 1e3)
            cache[cond] = _cache_counts(effects)  # last round's counters

    def summary(cond) -> dict:
        timer = timers[cond]
        hits, misses = cache[cond]
        eff = timer.values_ms("effects") / 1e3
        comp = timer.values_ms("composite") / 1e3
        nf = np.array(faces_per_frame[cond], np.float64)
        with_face = nf > 0
        per_face = (eff + comp)[with_face] / nf[with_face] if with_face.any() else np.array([])
        cpu = np.asarray(render_cpu[cond])
        cpu_face = cpu[with_face] / nf[with_face] if with_face.any() else np.array([])
        stages = {
            "capture (decode)": dict(p50_ms=_pct(decode, 50), p99_ms=_pct(decode, 99)),
            "tracking": dict(p50_ms=_pct(timer.values_ms("tracking") / 1e3, 50),
                             p99_ms=_pct(timer.values_ms("tracking") / 1e3, 99)),
            "effects": dict(p50_ms=_pct(eff, 50), p99_ms=_pct(eff, 99)),
        }
        for k in sorted(timer.summary()):
            if k.startswith("effect."):
                v = timer.values_ms(k) / 1e3
                stages[k] = dict(p50_ms=_pct(v, 50), p99_ms=_pct(v, 99))
        stages.update({
            "composite": dict(p50_ms=_pct(comp, 50), p99_ms=_pct(comp, 99)),
            "output (null)": dict(p50_ms=_pct(timer.values_ms("output") / 1e3, 50),
                                  p99_ms=_pct(timer.values_ms("output") / 1e3, 99)),
            "effects+composite per face": dict(p50_ms=_pct(per_face, 50),
                                               p99_ms=_pct(per_face, 99)),
            # the same, in CPU time of the thread that runs them: what the work costs, without
            # the time the thread waited for a core (the machine may be shared)
            "effects+composite per face (thread CPU)": dict(p50_ms=_pct(cpu_face, 50),
                                                            p99_ms=_pct(cpu_face, 99)),
            "tracking alone": dict(p50_ms=_pct(track_only, 50), p99_ms=_pct(track_only, 99)),
            "full pipeline": dict(p50_ms=_pct(full[cond], 50), p99_ms=_pct(full[cond], 99)),
        })
        r = dict(mean_faces=float(nf.mean()), roi_cache_hit_rate=hits / max(hits + misses, 1),
                 stages=stages)
        r["fps_full"] = 1000.0 / stages["full pipeline"]["p50_ms"]
        r["fps_tracking_alone"] = 1000.0 / stages["tracking alone"]["p50_ms"]
        r["ratio_full_to_tracking_p50"] = (stages["full pipeline"]["p50_ms"]
                                           / stages["tracking alone"]["p50_ms"])
        r["ratio_full_to_tracking_mean"] = float(np.mean(full[cond]) / np.mean(track_only))
        return r

    res = dict(
        input=str(a.input), size=[w, h], frames=len(frames), rounds=a.rounds,
        max_faces=a.max_faces, gaze_pitch=a.gaze_pitch, smile=a.smile, backend=a.backend,
        gaze="model" if a.gaze_model is not None else "landmark",
        paths=("reference" if a.reference_paths else "fast" if a.no_jit
               else "compiled" if _jit.load("warpcam.core._jitloops") is not None
               else "fast (numba missing)"),
        first_frame_full_ms=first_frame, jit_prepare_s=jit_build_s,
        machine=machine_info(load_start),
    )
    res.update(summary("cache_on"))
    if a.no_cache:
        res["cache_off"] = summary("cache_off")

    print(f"{a.input}: {w}x{h}, {len(frames)} frames x {a.rounds} rounds, "
          f"{res['mean_faces']:.2f} faces/frame, backend {a.backend}, gaze {res['gaze']}, "
          f"paths {res['paths']}, load average {load_start} at the start, "
          f"{res['machine']['loadavg']} at the end")
    if jit_build_s is not None:
        print(f"compiled loops ready in {jit_build_s:.1f} s (before timing)")
    print("first full-pipeline frame (ms): "
          + ", ".join(f"{c} {v:.1f}" for c, v in first_frame.items()))
    for cond in conditions:
        r = res if cond == "cache_on" else res["cache_off"]
        print(f"-- ROI field cache {'on' if cond == 'cache_on' else 'OFF'}: hit rate "
              f"(last round) {r['roi_cache_hit_rate']:.2f}")
        print(f"{'stage':28s} {'p50 ms':>8s} {'p99 ms':>8s}")
        for k, v in r["stages"].items():
            print(f"{k:28s} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f}")
        print(f"fps: full {r['fps_full']:.1f}, tracking alone {r['fps_tracking_alone']:.1f}")
        print(f"full / tracking alone: {r['ratio_full_to_tracking_p50']:.3f} (p50), "
              f"{r['ratio_full_to_tracking_mean']:.3f} (mean)")
    if a.json:
        write_json(a.json, res)
    return res


# ------------------------------------------------------------------------------------------------
# live mode
# ------------------------------------------------------------------------------------------------

class PacedCapture:
    """A ``cv2.VideoCapture`` stand-in that is a camera running on its own clock.

    Frame ``k`` becomes available at ``t0 + k / fps`` (``t0`` = the first read). ``read()``
    returns the newest frame already available, waiting for the next one when it has none; the
    frames that became available and were replaced before a read took them are lost (a camera
    with a 1-frame driver buffer). ``served`` records, for each successful read (the
    :class:`~warpcam.realtime.io.WebcamSource` sequence number), the camera frame number and the
    moment it became available.
    """

    def __init__(self, images, fps: float):
        self.images, self.period = images, 1.0 / float(fps)
        self.t0 = None
        self.next_k = 0          # next camera frame nobody has read yet
        self.served = []         # [(camera frame number, available_at perf_counter)]
        self.stop_after = None   # camera frames to produce (None: for ever)
        self.props = {}

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def release(self):
        pass

    def read(self):
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        newest = int((now - self.t0) / self.period)  # newest frame available now
        if newest < self.next_k:  # nothing new yet: wait for frame next_k
            at = self.t0 + self.next_k * self.period
            time.sleep(max(0.0, at - time.perf_counter()))
            k = self.next_k
        else:
            k = newest  # older unread frames were overwritten in the 1-frame buffer
        if self.stop_after is not None and k >= self.stop_after:
            time.sleep(self.period)
            return False, None
        self.next_k = k + 1
        self.served.append((k, self.t0 + k * self.period))
        return True, self.images[k % len(self.images)].copy()


def _timing_sink(width, height, done_when):
    """A live sink of the camera's size that stamps when it is done with each frame and asks
    the pipeline to stop (``frame_done`` returns False) once ``done_when()`` is true."""
    from warpcam.realtime.io import NullSink

    class _TimingSink(NullSink):
        def __init__(self):
            super().__init__(width, height)
            self.done = []  # (frame index, status, perf_counter when done)

        @property
        def is_live(self):
            return True

        def _write(self, frame, image):
            self.done.append((frame.index, getattr(frame, "status", None), time.perf_counter()))

        def frame_done(self, pipeline):
            return not done_when()  # False stops the run (like the preview's key q)

    return _TimingSink()


def _live_condition(name, images, a, width, height):
    from warpcam.kernels import get_compositor
    from warpcam.realtime.effects.gaze import GazeSettings
    from warpcam.realtime.effects import build_effects
    from warpcam.realtime.pipeline import Pipeline, StageTimer
    from warpcam.realtime.effects.smile import SmileSettings
    from warpcam.realtime.io import ReconnectingSource, WebcamSource
    from warpcam.realtime.tracker import FaceTracker

    class _NoTracker:
        def track(self, image, t=None):
            return []

        def close(self):
            pass

    off = build_effects(gaze=GazeSettings(enabled=False), smile=SmileSettings(0.0))
    if name == "plumbing":
        tracker, settings = _NoTracker(), off
    else:
        tracker = FaceTracker(max_faces=a.max_faces)
        for img in images[:10]:  # the graph's start-up is not part of a call
            tracker.track(img)
        settings = off if name == "tracking" else build_effects(
            gaze=GazeSettings(pitch_deg=a.gaze_pitch), smile=SmileSettings(a.smile))
    total = int(round((a.warmup + a.seconds) * a.fps))
    cap = PacedCapture(images, a.fps)
    cap.stop_after = total
    cam = WebcamSource(0, width, height, a.fps, capture_factory=lambda i, api: cap,
                       frame_timeout=5.0, first_frame_timeout=5.0)
    src = ReconnectingSource(lambda: cam, first=cam)
    served_last = {"seq": None, "t": None}

    def done():
        # the camera has produced its last frame, and that frame is out (or 1 s passed)
        if cap.next_k < total:
            return False
        if served_last["t"] is None:
            served_last["seq"], served_last["t"] = len(cap.served) - 1, time.perf_counter()
        got = any(idx == served_last["seq"] for idx, _, _ in sink.done[-4:])
        return got or time.perf_counter() - served_last["t"] > 1.0

    sink = _timing_sink(width, height, done)
    timer = StageTimer(window=None)
    pipe = Pipeline(tracker, get_compositor(a.backend), settings, timer=timer, inplace=True)
    t_start = time.perf_counter()
    with src:
        stats = pipe.run(src, sink)
    wall = time.perf_counter() - t_start
    tracker.close()

    warm = int(round(a.warmup * a.fps))
    avail = dict(enumerate(cap.served))  # WebcamSource seq -> (camera frame, available_at)
    lat, delivered = [], set()
    for idx, status, t_done in sink.done:
        if status is not None or idx not in avail:
            continue
        k, at = avail[idx]
        if k < warm:
            continue
        delivered.add(k)
        lat.append(t_done - at)
    counted = list(range(warm, min(total, cap.next_k)))
    read_ks = {k for k, _ in cap.served}
    dropped = sum(1 for k in counted if k not in delivered)
    lost_at_camera = sum(1 for k in counted if k not in read_ks)
    lat_ms = np.asarray(lat) * 1e3

    def pct(q):
        return float(np.percentile(lat_ms, q)) if lat else float("nan")

    res = dict(
        condition=name, frames_measured=len(counted), delivered=len(lat), dropped=dropped,
        dropped_fraction=dropped / max(len(counted), 1),
        dropped_before_grabber=lost_at_camera,
        dropped_in_pipeline=dropped - lost_at_camera,
        status_frames=stats.get("status_frames", {}),
        latency_ms=dict(p50=pct(50), p90=pct(90), p99=pct(99),
                        max=float(lat_ms.max()) if lat else float("nan"),
                        mean=float(lat_ms.mean()) if lat else float("nan")),
        stages={k: dict(p50_ms=v["p50_ms"], p99_ms=v["p99_ms"])
                for k, v in stats["stages"].items()},
        wall_seconds=wall,
    )
    return res, lat_ms


def live_main(a) -> dict:
    """``--live``: see the module docstring."""
    from warpcam.realtime.io import VideoFileSource

    images = []
    with VideoFileSource(a.input) as src:
        for fr in src:
            images.append(fr.image)
            if len(images) >= a.clip_frames:
                break
    if not images:
        raise SystemExit(f"no frames decoded from {a.input}")
    h, w = images[0].shape[:2]
    interval_ms = 1000.0 / a.fps
    conditions = [c.strip() for c in a.conditions.split(",") if c.strip()]
    for c in conditions:
        if c not in ("plumbing", "tracking", "effects"):
            raise SystemExit(f"unknown condition {c!r} (plumbing, tracking, effects)")
    # as the CLI does for a live source: the compiled loops from numba's cache before the
    # first frame (a first-ever compile goes on in the background)
    from warpcam.core import jit
    from warpcam.realtime.cli import LIVE_JIT_WAIT_S
    t0 = time.perf_counter()
    jit_ready = jit.prepare(timeout=LIVE_JIT_WAIT_S)
    jit_wait_s = time.perf_counter() - t0
    results, series = {}, {}
    for c in conditions:
        res, lat_ms = _live_condition(c, images, a, w, h)
        results[c] = res
        series[c] = lat_ms.tolist()
    out = dict(
        mode="live", input=str(a.input), size=[w, h], fps=a.fps, frame_interval_ms=interval_ms,
        seconds=a.seconds, warmup=a.warmup, max_faces=a.max_faces, gaze_pitch=a.gaze_pitch,
        smile=a.smile, backend=a.backend, conditions=results,
        goal=dict(p99_added_latency_below_ms=interval_ms, dropped_frames=0),
        machine=machine_info(), jit_ready_before_first_frame=jit_ready,
        jit_wait_s=round(jit_wait_s, 2),
        latency_series_ms=series,
    )
    for c, r in results.items():
        r["meets_goal"] = bool(r["latency_ms"]["p99"] < interval_ms and r["dropped"] == 0)
    print(f"{a.input}: {w}x{h} at {a.fps:g} fps (frame interval {interval_ms:.1f} ms), "
          f"{a.seconds:g} s per condition after {a.warmup:g} s warm-up, backend {a.backend}")
    print(f"{'condition':10s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'dropped':>12s} "
          f"{'p99 < 1 frame, 0 drops':>24s}")
    for c, r in results.items():
        L = r["latency_ms"]
        print(f"{c:10s} {L['p50']:8.1f} {L['p99']:8.1f} {L['max']:8.1f} "
              f"{r['dropped']:5d}/{r['frames_measured']:<6d} {str(r['meets_goal']):>24s}")
    if a.json:
        write_json(a.json, out)
    if a.plot:
        plot_live(out, a.plot)
        print(f"wrote {a.plot}")
    return out


def plot_live(res: dict, path: str) -> None:
    """Cumulative distribution of the per-frame latency of each condition, with the frame
    interval marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, lat in res["latency_series_ms"].items():
        v = np.sort(np.asarray(lat))
        if v.size:
            r = res["conditions"][name]
            ax.plot(v, np.arange(1, v.size + 1) / v.size,
                    label=f"{name}: p50 {r['latency_ms']['p50']:.1f}, p99 "
                          f"{r['latency_ms']['p99']:.1f} ms, dropped {r['dropped']}")
    ax.axvline(res["frame_interval_ms"], color="k", ls="--", lw=1,
               label=f"frame interval {res['frame_interval_ms']:.1f} ms")
    ax.set_xlabel("frame available -> sink done (ms)")
    ax.set_ylabel("fraction of frames")
    w, h = res["size"]
    ax.set_title(f"live path latency, {w}x{h} at {res['fps']:g} fps "
                 f"(load avg {res['machine'].get('loadavg', [float('nan')])[0]:.1f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
