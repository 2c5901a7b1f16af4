"""Command line: ``warpcam`` / ``python run.py``.

Exit status: 0 on success, 2 on a usage or device error (one-line reason on stderr), 130 when
interrupted with Ctrl-C (a file being written is removed).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``warpcam: error: ...``) and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="warpcam",
        description="Realtime gaze correction and smile control for a webcam or a video file. "
                    "Angles in degrees: pitch positive = up, yaw positive = toward the subject's "
                    "left.")
    p.add_argument("--input", default="0",
                   help="webcam index, video file, image file or folder of images (default: 0)")
    p.add_argument("--output", default=None,
                   help="video file (.mp4/.mov/.mkv/.avi), image file or folder, or 'null'; "
                        "default: the virtual camera")
    p.add_argument("--preview", action="store_true", help="show a preview window with a HUD "
                   "(keys: g toggles gaze, [ and ] change the smile, q quits)")
    p.add_argument("--gaze-pitch", type=float, default=0.0, metavar="DEG",
                   help="fixed gaze redirection up (+) or down (-), degrees")
    p.add_argument("--gaze-yaw", type=float, default=0.0, metavar="DEG",
                   help="fixed gaze redirection toward the subject's left (+), degrees")
    p.add_argument("--eye-contact", action=argparse.BooleanOptionalAction, default=None,
                   help="redirect the gaze toward the camera (default: on for a webcam, off "
                        "for files and images)")
    p.add_argument("--camera-offset-cm", type=float, default=3.0, metavar="CM",
                   help="camera height above the screen centre, for --eye-contact (default 3)")
    p.add_argument("--smile", type=float, default=0.0, metavar="S",
                   help="smile strength in [-1, 1]: + lifts the mouth corners (AU12), - lowers "
                        "them (AU15)")
    p.add_argument("--max-faces", type=int, default=1, metavar="N",
                   help="most faces edited per frame (default 1)")
    p.add_argument("--backend", choices=("auto", "cpu", "torch", "cuda"), default="auto",
                   help="compositor backend (default auto: cuda with a GPU, else cpu)")
    p.add_argument("--width", type=int, default=1280, help="webcam capture width")
    p.add_argument("--height", type=int, default=720, help="webcam capture height")
    p.add_argument("--fps", type=float, default=30.0, help="webcam capture frame rate")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--gaze-model", nargs="?", const="", default=None, metavar="FILE",
                   help="redirect the gaze with a trained DeepWarp network (.pt2) instead of the "
                        "landmark-driven warp; without FILE: the bundled "
                        "models/gaze_deepwarp.pt2 (default: the landmark-driven warp)")
    p.add_argument("--calibrate", action="store_true",
                   help="record a minute of you following dots in a window and train a personal "
                        "gaze model (same as `warpcam calibrate`; see `warpcam calibrate --help`)")
    return p


def _validate(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    import math
    for name in ("gaze_pitch", "gaze_yaw", "camera_offset_cm", "smile"):
        if not math.isfinite(getattr(a, name)):
            p.error(f"--{name.replace('_', '-')} must be a finite number")
    if not -1.0 <= a.smile <= 1.0:
        p.error(f"--smile must be in [-1, 1], got {a.smile}")
    if abs(a.gaze_pitch) > 30 or abs(a.gaze_yaw) > 30:
        p.error("--gaze-pitch and --gaze-yaw must be within +-30 degrees")
    if a.max_faces < 1:
        p.error(f"--max-faces must be >= 1, got {a.max_faces}")
    if a.width <= 0 or a.height <= 0:
        p.error(f"--width and --height must be > 0, got {a.width}x{a.height}")
    if not (math.isfinite(a.fps) and a.fps > 0):
        p.error(f"--fps must be > 0, got {a.fps}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["calibrate"] or "--calibrate" in argv:
        # Training code, imported only for this sub-command (the frame path never needs it).
        from warpcam.training.gaze.calibrate import main as calibrate
        return calibrate([a for a in argv if a not in ("calibrate", "--calibrate")])
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="warpcam: %(message)s")

    from warpcam.kernels import BackendError, get_compositor
    from warpcam.realtime.gaze import GazeSettings
    from warpcam.realtime.pipeline import EffectSettings, Pipeline
    from warpcam.realtime.sinks import SinkError, open_sink
    from warpcam.realtime.smile import SmileSettings
    from warpcam.realtime.sources import (ImageSource, ReconnectingSource, SourceError, WebcamSource,
                                  open_source)
    from warpcam.realtime.tracker import FaceTracker

    def fail(msg: str) -> int:
        print(f"warpcam: error: {msg}", file=sys.stderr)
        return EXIT_USAGE

    try:
        compositor = get_compositor(args.backend)
    except BackendError as exc:
        return fail(str(exc))
    gaze_model = None
    if args.gaze_model is not None:  # checked before the first frame
        from warpcam.realtime.gaze_model import GazeModelError, load_gaze_model
        try:
            gaze_model = load_gaze_model(args.gaze_model or None)
        except GazeModelError as exc:
            return fail(str(exc))
    try:
        source = open_source(args.input, width=args.width, height=args.height, fps=args.fps)
    except SourceError as exc:
        return fail(str(exc))
    if isinstance(source, WebcamSource):
        # A camera that stalls or is unplugged mid-call: keep the virtual camera fed (last
        # frame, then "camera lost") and reopen it until it is back.
        source = ReconnectingSource(
            lambda: open_source(args.input, width=args.width, height=args.height, fps=args.fps),
            first=source)
    with source:
        eye_contact = args.eye_contact if args.eye_contact is not None else source.is_live
        settings = EffectSettings(
            gaze=GazeSettings(pitch_deg=args.gaze_pitch, yaw_deg=args.gaze_yaw,
                              eye_contact=eye_contact, camera_offset_cm=args.camera_offset_cm),
            smile=SmileSettings(args.smile))
        try:
            sink = open_sink(args.output, source=source, preview=args.preview)
        except SinkError as exc:
            return fail(str(exc))
        tracker = None
        try:
            # Inside the try: a failure or Ctrl-C while mediapipe starts still aborts the sink.
            tracker = FaceTracker(max_faces=args.max_faces,
                                  static_images=isinstance(source, ImageSource))
            pipeline = Pipeline(tracker, compositor, settings, inplace=True,
                                gaze_model=gaze_model)
            stats = pipeline.run(source, sink, progress=not args.quiet)
        except (SourceError, SinkError, ValueError) as exc:
            sink.abort()
            return fail(str(exc))
        except KeyboardInterrupt:
            sink.abort()
            print("warpcam: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BaseException:
            sink.abort()
            raise
        finally:
            if tracker is not None:
                tracker.close()
    if not args.quiet:
        st = stats["stages"]
        parts = [f"{k} {v['p50_ms']:.1f}" for k, v in st.items()
                 if k in ("tracking", "effects", "composite", "output", "total")]
        print(f"warpcam: {stats['frames']} frames, p50 ms: " + ", ".join(parts), file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
