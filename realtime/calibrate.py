"""``warpcam calibrate``: record the user looking at points, then build a personal gaze model.

    warpcam calibrate [--input 0] [--seconds 60] [--out ~/.warpcam/gaze_personal.pt2]
    python -m warpcam.realtime.calibrate ...         # the same

1. **Record** (this module, the app floor): a window shows a dot that visits a 3 x 3 grid of
   screen points (about ``seconds / 9`` each) with a small camera preview; the user follows the
   dot with their eyes and keeps the head still. Frames go to a temporary MJPEG file (a minute
   of 720p frames would not fit in memory). ``--input`` may also be a video file (no window:
   its frames are used as recorded; ``--no-window`` hides the window for a webcam too).
2. **Mine, fine-tune, export** (:func:`warpcam.training.gaze.calibrate.calibrate_videos`,
   loaded only when this command runs): pairs mined from the recording, the base model
   fine-tuned on them mixed with synthetic renders, written to ``--out``; use it with
   ``warpcam --gaze-model OUT``.

The training code is imported inside :func:`main` only: nothing the CLI loads at start-up
reaches ``warpcam.training``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path


def record(source, seconds: float, path: Path, window: bool = True) -> int:
    """Write up to ``seconds`` of ``source`` (a realtime source) to an MJPEG file at ``path``,
    showing the calibration dot when ``window``. Returns the number of frames written."""
    import cv2
    import numpy as np

    writer = None
    n = 0
    t0 = time.perf_counter()
    grid = [(x, y) for y in (0.1, 0.5, 0.9) for x in (0.1, 0.5, 0.9)]
    fps = float(getattr(source, "fps", 30.0) or 30.0)
    max_frames = int(seconds * fps)
    try:
        for frame in source:
            img = frame.image
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"cannot write the recording {path}")
            writer.write(img)
            n += 1
            elapsed = time.perf_counter() - t0 if source.is_live else n / fps
            if window:
                canvas = np.full((720, 1280, 3), 32, np.uint8)
                k = min(int(elapsed / max(seconds, 1e-3) * len(grid)), len(grid) - 1)
                gx, gy = grid[k]
                cv2.circle(canvas, (int(gx * 1279), int(gy * 719)), 18, (0, 200, 255), -1)
                cv2.putText(canvas, f"look at the dot, keep your head still  {seconds - elapsed:4.0f} s",
                            (40, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (220, 220, 220), 2)
                small = cv2.resize(img, (320, int(320 * img.shape[0] / img.shape[1])))
                canvas[-small.shape[0]:, -320:] = small
                cv2.imshow("warpcam calibrate", canvas)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if n >= max_frames or (source.is_live and elapsed >= seconds):
                break
    finally:
        if writer is not None:
            writer.release()
        if window:
            cv2.destroyAllWindows()
    return n


def build_parser() -> argparse.ArgumentParser:
    """The ``warpcam calibrate`` flags (the training flags come from
    :func:`warpcam.training.gaze.calibrate.add_training_arguments`)."""
    from warpcam.training.gaze.calibrate import add_training_arguments

    from warpcam.realtime.cli import _Parser, allow_negative_numbers

    ap = _Parser(  # usage errors as one line, exit status 2
        prog="warpcam calibrate",
        description="Record yourself following a dot with your eyes, then build a personal gaze "
                    "model from the recording (use it with `warpcam --gaze-model OUT`).")
    ap.add_argument("--input", default="0", help="webcam index or a video file (default 0)")
    ap.add_argument("--seconds", type=float, default=60.0, help="recording length")
    ap.add_argument("--no-window", action="store_true", help="no calibration window")
    ap.add_argument("--keep-recording", default=None, metavar="FILE.avi",
                    help="keep the recording here (default: a temporary file, removed)")
    add_training_arguments(ap)
    return allow_negative_numbers(ap)


def main(argv=None, *, main_flags_ok: bool = False) -> int:
    """``warpcam calibrate``: record, then mine, fine-tune and export. Returns the exit status
    (0, or 2 with a one-line error).

    Args:
        argv: the flags (default ``sys.argv[1:]``).
        main_flags_ok: ``run.py --calibrate`` passes the rest of warpcam's flags along
            (``--smile 0.5``): accept and ignore those. Any flag neither command knows is
            refused, as is every flag ``warpcam calibrate`` itself does not know.
    """
    ap = build_parser()
    a, rest = ap.parse_known_args(argv)
    unknown = rest
    if rest and main_flags_ok:
        from warpcam.realtime.cli import build_parser as main_parser
        _, unknown = main_parser().parse_known_args(rest)
    if unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not (math.isfinite(a.seconds) and 0 < a.seconds <= 3600):
        ap.error(f"--seconds must be more than 0 and at most 3600, got {a.seconds:g}")
    if not str(a.input).strip():
        ap.error("--input is empty: give a webcam index or a video file")

    from warpcam.realtime.gaze_model import GazeModelError
    from warpcam.realtime.io import SourceError, open_source
    from warpcam.training.gaze.calibrate import CalibrationError, calibrate_videos, load_base

    def fail(msg):
        print(f"warpcam: error: {msg}", flush=True, file=sys.stderr)
        return 2

    try:
        model = load_base(a.base)  # before recording: a bad --base fails at once
    except GazeModelError as exc:
        return fail(str(exc))
    tmpdir = tempfile.mkdtemp(prefix="warpcam_calib_")
    rec = Path(a.keep_recording) if a.keep_recording else Path(tmpdir) / "recording.avi"
    try:
        try:
            source = open_source(a.input)
        except SourceError as exc:
            return fail(str(exc))
        with source:
            n = record(source, a.seconds, rec, window=source.is_live and not a.no_window)
        if not a.quiet:
            print(f"calibrate: recorded {n} frames")
        try:
            res = calibrate_videos([rec], a.out, model=model, steps=a.steps,
                                   synthetic_eyes=a.synthetic_eyes, seed=a.seed,
                                   label=Path(str(a.input)).name, progress=not a.quiet)
        except CalibrationError as exc:
            return fail(str(exc))
    finally:
        if not a.keep_recording and rec.exists():
            rec.unlink()
        if not any(Path(tmpdir).iterdir()):
            os.rmdir(tmpdir)
    if not a.quiet:
        print(f"calibrate: {res.pairs} pairs, {res.steps} steps -> {res.out} "
              f"(use: warpcam --gaze-model {res.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
