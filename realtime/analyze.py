"""``warpcam analyze``: an OpenFace-style CSV of head pose, gaze and action units per face per
frame, from a video file, an image, a folder of images or a webcam.

    warpcam analyze --input VIDEO|IMAGE|FOLDER|WEBCAM --output FILE.csv [--plot FILE.png]

Columns (OpenFace 2.0's names where they exist, ``docs/au.md``): ``frame`` (1-based, as
OpenFace), ``face_id`` (the track id), ``timestamp`` (seconds: the input's presentation time
for a video, time since the first frame for a webcam, 0 for images), ``confidence``,
``success``, ``gaze_angle_x``, ``gaze_angle_y`` (radians), ``pose_Rx``, ``pose_Ry``,
``pose_Rz`` (radians), ``AU01_r`` ... ``AU45_r`` (0-5), then ``input`` (the image's file name
for images, else the input) and ``smile`` (0-1). A frame without a face gives one row with
``success = 0`` and zeros.

Videos and webcams use the tracker in video mode and per-track neutral calibration; images use
the static tracker, the population neutral and the small-image rule (upscale + replicated
border, :func:`warpcam.realtime.au.prepare_image`). The CSV is written to a temporary name and
renamed when complete. Exit status 0, 2 for a usage or input error (one line on stderr), 130
on Ctrl-C.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from warpcam.realtime.au import AU_NAMES, AUEstimator, AUResult, prepare_image, unprepare_face

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130

COLUMNS = (["frame", "face_id", "timestamp", "confidence", "success", "gaze_angle_x",
            "gaze_angle_y", "pose_Rx", "pose_Ry", "pose_Rz"] + [f"{a}_r" for a in AU_NAMES]
           + ["input", "smile"])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(EXIT_USAGE, f"warpcam: error: {message} (see warpcam analyze --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="warpcam analyze",
                description="Write head pose, gaze and action-unit intensities per face per "
                            "frame to a CSV with OpenFace 2.0's column names.")
    p.add_argument("--input", required=True,
                   help="video file, image file, folder of images, or webcam index")
    p.add_argument("--output", required=True, help="CSV file to write")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="also draw the AU curves over time (matplotlib)")
    p.add_argument("--max-faces", type=int, default=1, metavar="N",
                   help="most faces per frame (default 1)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="video: use the population neutral, no per-track calibration")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="stop after N frames (a webcam runs until Ctrl-C otherwise)")
    p.add_argument("--width", type=int, default=1280, help="webcam capture width")
    p.add_argument("--height", type=int, default=720, help="webcam capture height")
    p.add_argument("--fps", type=float, default=30.0, help="webcam capture frame rate")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _open_source(spec, width, height, fps):
    try:
        from warpcam.realtime.io import SourceError, open_source
    except ImportError:  # before the move into realtime/io/
        from warpcam.realtime.sources import SourceError, open_source
    return open_source(spec, width=width, height=height, fps=fps), SourceError


def _row(frame_no: int, t: float, name: str, r: Optional[AUResult]) -> list:
    if r is None:
        return ([frame_no, 0, f"{t:.6f}", "0.00", 0] + ["0.000"] * 5 + ["0.00"] * len(AU_NAMES)
                + [name, "0.000"])
    gx, gy = r.gaze_angle
    return ([frame_no, r.track_id, f"{t:.6f}", f"{r.confidence:.2f}", 1, f"{gx:.3f}",
             f"{gy:.3f}"] + [f"{v:.3f}" for v in r.pose]
            + [f"{r.intensities[a]:.2f}" for a in AU_NAMES] + [name, f"{r.smile:.3f}"])


def analyze(source, writer, *, max_faces: int = 1, calibrate: bool = True,
            max_frames: Optional[int] = None, progress: bool = False, series=None,
            on_frame=None) -> dict:
    """Run the tracker and the AU estimator over ``source``, writing rows to ``writer``
    (a ``csv.writer``). ``series`` (a list), if given, collects ``(t, face_id, AUResult)``;
    ``on_frame(frames_done)``, if given, is called after each frame's rows are written
    (``warpcam batch --analyze``: its progress). Returns counts: frames, rows, frames with a
    face, seconds."""
    from warpcam.realtime.tracker import FaceTracker

    images = type(source).__name__ == "ImageSource"
    is_file = getattr(source, "path", None) is not None and not images
    tracker = FaceTracker(max_faces=max_faces, static_images=images)
    est = AUEstimator(calibrate=calibrate and not images)
    bar = None
    if progress and (images or is_file):
        from tqdm import tqdm

        bar = tqdm(total=source.frame_count, unit="frame", file=sys.stderr, leave=False)
    label = os.fspath(getattr(source, "path", "") or "")
    label = Path(label).name if label else "webcam"
    frames = rows = with_face = 0
    t_first = None
    t0 = time.perf_counter()
    try:
        for frame in source:
            if type(frame).__name__ == "StatusFrame":  # a reconnecting webcam's placeholder
                continue
            if images:
                t, name = 0.0, frame.name or label
                img, s, pad = prepare_image(frame.image)
                faces = [unprepare_face(f, s, pad) for f in tracker.track(img)]
                results = [est.estimate(f) for f in faces]
            else:
                if frame.pts_seconds is not None and is_file:
                    t = float(frame.pts_seconds)
                else:  # webcam: monotonic capture time, relative to the first frame
                    now = (frame.pts_seconds if frame.pts_seconds is not None
                           else time.monotonic())
                    t_first = now if t_first is None else t_first
                    t = float(now - t_first)
                name = label
                faces = tracker.track(frame.image, t)
                results = [est.estimate(f, t) for f in faces]
            frames += 1
            if results:
                with_face += 1
            for r in results or [None]:
                writer.writerow(_row(frames, t, name, r))
                rows += 1
                if series is not None and r is not None:
                    series.append((t, r.track_id, r))
            if bar is not None:
                bar.update(1)
            if on_frame is not None:
                on_frame(frames)
            if max_frames is not None and frames >= max_frames:
                break
    finally:
        if bar is not None:
            bar.close()
        tracker.close()
    return {"frames": frames, "rows": rows, "with_face": with_face,
            "seconds": time.perf_counter() - t0}


def plot(series: list, path: Path, title: str = "") -> None:
    """AU curves over time, one panel per AU group, first face (lowest track id) solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [("brows and lids", ("AU01", "AU02", "AU04", "AU05", "AU07", "AU45")),
              ("cheeks and nose", ("AU06", "AU09", "AU10", "AU14")),
              ("mouth", ("AU12", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26"))]
    fig, axes = plt.subplots(len(groups) + 1, 1, figsize=(10, 9), sharex=True)
    ids = sorted({fid for _, fid, _ in series})
    for ax, (gname, aus) in zip(axes, groups):
        for k, fid in enumerate(ids):
            pts = [(t, r) for t, f, r in series if f == fid]
            if not pts:
                continue
            ts = np.array([t for t, _ in pts])
            for a in aus:
                ax.plot(ts, [r.intensities[a] for _, r in pts], ls="-" if k == 0 else ":",
                        label=a if k == 0 else None, lw=1.2)
        ax.set_ylim(0, 5)
        ax.set_ylabel(gname)
        ax.legend(loc="upper right", ncol=4, fontsize=7)
    for k, fid in enumerate(ids):
        pts = [(t, r.smile) for t, f, r in series if f == fid]
        axes[-1].plot([t for t, _ in pts], [s for _, s in pts], label=f"face {fid}")
    axes[-1].set_ylim(0, 1)
    axes[-1].set_ylabel("smile")
    axes[-1].set_xlabel("time (s)")
    axes[-1].legend(loc="upper right", fontsize=7)
    axes[0].set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.warpcam-tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None, on_frame=None) -> int:
    """``warpcam analyze ...``; returns the exit status. ``on_frame`` as for :func:`analyze`."""
    args = build_parser().parse_args(argv)
    out = Path(args.output).expanduser()
    if out.suffix.lower() != ".csv":
        print(f"warpcam: error: --output must be a .csv file, got {out}", file=sys.stderr)
        return EXIT_USAGE
    if not out.parent.exists():
        print(f"warpcam: error: output folder {out.parent} does not exist", file=sys.stderr)
        return EXIT_USAGE
    if args.max_faces < 1:
        print("warpcam: error: --max-faces must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    plot_path = Path(args.plot).expanduser() if args.plot else None
    if plot_path is not None and not plot_path.parent.exists():
        print(f"warpcam: error: plot folder {plot_path.parent} does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        source, source_error = _open_source(args.input, args.width, args.height, args.fps)
    except Exception as exc:  # SourceError, or a webcam that cannot open
        print(f"warpcam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    tmp = out.with_name(f".{out.stem}.warpcam-tmp{out.suffix}")
    series = [] if plot_path is not None else None
    try:
        with source, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            stats = analyze(source, w, max_faces=args.max_faces,
                            calibrate=not args.no_calibrate, max_frames=args.max_frames,
                            progress=not args.quiet, series=series, on_frame=on_frame)
        os.replace(tmp, out)
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        print("warpcam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except source_error as exc:
        tmp.unlink(missing_ok=True)
        print(f"warpcam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if plot_path is not None:
        plot(series, plot_path, title=str(args.input))
    if not args.quiet:
        fps = stats["frames"] / max(stats["seconds"], 1e-9)
        print(f"warpcam analyze: {stats['frames']} frames, {stats['rows']} rows, face in "
              f"{stats['with_face']} frames, {fps:.1f} frames/s -> {out}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
