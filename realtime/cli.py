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

#: ``warpcam NAME ...`` runs ``main(argv)`` of the module (imported only then).
SUBCOMMANDS = {
    "analyze": "warpcam.realtime.analyze",  # AU / pose / gaze CSV per frame (OpenFace columns)
}


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
    p.add_argument("--max-faces", type=int, default=1, metavar="N",
                   help="most faces edited per frame (default 1)")
    from warpcam.kernels import backend_names
    p.add_argument("--backend", choices=backend_names(), default="auto",
                   help="compositor backend (default auto: cuda with a GPU, else cpu)")
    p.add_argument("--width", type=int, default=1280, help="webcam capture width")
    p.add_argument("--height", type=int, default=720, help="webcam capture height")
    p.add_argument("--fps", type=float, default=30.0, help="webcam capture frame rate")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_effect_arguments(p)
    p.add_argument("--calibrate", action="store_true",
                   help="record a minute of you following dots in a window and train a personal "
                        "gaze model (same as `warpcam calibrate`; see `warpcam calibrate --help`)")
    return p


def _flag(spec, info) -> str:
    return info.flag or f"--{spec.name}-{info.name.replace('_', '-')}"


def _dest(spec, name: str) -> str:
    return f"effect__{spec.name}__{name}"


def add_effect_arguments(p: argparse.ArgumentParser) -> None:
    """One argument group per registered effect, generated from its settings dataclass
    (:func:`~warpcam.realtime.effects.setting`) and its ``extra_args``."""
    from warpcam.realtime.effects import registered, setting_infos

    for spec in registered():
        g = p.add_argument_group(f"{spec.name} effect", spec.help or None)
        for info in setting_infos(spec.settings_cls):
            if not info.cli:
                continue
            if info.type is bool:
                g.add_argument(_flag(spec, info), dest=_dest(spec, info.name),
                               action=argparse.BooleanOptionalAction, default=None,
                               help=info.help)
            else:
                rng = ("" if info.lo is None and info.hi is None
                       else f" (range {info.lo:g} to {info.hi:g})")
                g.add_argument(_flag(spec, info), dest=_dest(spec, info.name), default=None,
                               type=info.type if info.type in (int, float) else str,
                               metavar=info.unit.upper() or "X",
                               help=f"{info.help}{rng}")
        for flag, kwargs in spec.extra_args:
            g.add_argument(flag, dest=_dest(spec, _option_name(spec, flag)), **kwargs)


def _option_name(spec, flag: str) -> str:
    name = flag.lstrip("-")
    if name.startswith(spec.name + "-"):
        name = name[len(spec.name) + 1:]
    return name.replace("-", "_")


def effect_settings(a: argparse.Namespace, live_source: bool) -> dict:
    """``{effect name: settings object}`` from the parsed flags; a setting not given takes its
    ``live_source_default`` for a webcam, else its default.

    Raises:
        SettingsError: a value out of its declared range.
    """
    import dataclasses

    from warpcam.realtime.effects import SettingsError, registered, setting_infos, validate

    out = {}
    for spec in registered():
        changes = {}
        for info in setting_infos(spec.settings_cls):
            v = getattr(a, _dest(spec, info.name), None) if info.cli else None
            if v is None and live_source and info.live_source_default is not None:
                v = info.live_source_default
            if v is not None:
                changes[info.name] = v
        try:
            obj = dataclasses.replace(spec.settings_cls(), **changes)
            validate(obj)
        except SettingsError as exc:  # name the flag, not the field
            info = next((i for i in setting_infos(spec.settings_cls) if i.name == exc.field), None)
            if info is None or not info.cli:
                raise
            raise SettingsError(f"{_flag(spec, info)} {exc.detail}", field=exc.field,
                                detail=exc.detail) from None
        out[spec.name] = obj
    return out


def effect_options(a: argparse.Namespace) -> dict:
    """``{effect name: {option: value}}`` of the effects' ``extra_args`` that were given."""
    from warpcam.realtime.effects import registered

    out = {}
    for spec in registered():
        opts = {}
        for flag, _ in spec.extra_args:
            name = _option_name(spec, flag)
            v = getattr(a, _dest(spec, name), None)
            if v is not None:
                opts[name] = v
        out[spec.name] = opts
    return out


def _validate(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    import math

    from warpcam.realtime.effects import SettingsError

    try:  # ranges and finiteness of every effect setting, before any work starts
        effect_settings(a, live_source=False)
    except SettingsError as exc:
        p.error(str(exc))
    if a.max_faces < 1:
        p.error(f"--max-faces must be >= 1, got {a.max_faces}")
    if a.width <= 0 or a.height <= 0:
        p.error(f"--width and --height must be > 0, got {a.width}x{a.height}")
    if not (math.isfinite(a.fps) and a.fps > 0):
        p.error(f"--fps must be > 0, got {a.fps}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:  # loaded only when asked for
        import importlib
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    if argv[:1] == ["calibrate"] or "--calibrate" in argv:
        # Training code, imported only for this sub-command (the frame path never needs it).
        from warpcam.realtime.calibrate import main as calibrate
        return calibrate([a for a in argv if a not in ("calibrate", "--calibrate")])
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="warpcam: %(message)s")

    from warpcam.kernels import BackendError, get_compositor
    from warpcam.realtime.effects import EffectError, SettingsError, build_effects
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.io import SinkError, open_sink
    from warpcam.realtime.io import (ImageSource, ReconnectingSource, SourceError, WebcamSource,
                                  open_source)
    from warpcam.realtime.tracker import FaceTracker

    def fail(msg: str) -> int:
        print(f"warpcam: error: {msg}", file=sys.stderr)
        return EXIT_USAGE

    try:
        compositor = get_compositor(args.backend)
    except BackendError as exc:
        return fail(str(exc))
    options = effect_options(args)
    effects = None
    try:  # models are loaded and checked before the first frame (and before the source opens)
        effects = build_effects(effect_settings(args, live_source=False), options)
    except (EffectError, SettingsError) as exc:
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
        if source.is_live:  # settings whose default differs for a camera (eye contact)
            for e in effects:
                e.settings.set(effect_settings(args, live_source=True)[e.name])
        try:
            sink = open_sink(args.output, source=source, preview=args.preview)
        except SinkError as exc:
            return fail(str(exc))
        tracker = None
        try:
            # Inside the try: a failure or Ctrl-C while mediapipe starts still aborts the sink.
            tracker = FaceTracker(max_faces=args.max_faces,
                                  static_images=isinstance(source, ImageSource))
            pipeline = Pipeline(tracker, compositor, effects, inplace=True)
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
