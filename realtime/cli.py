"""Command line: ``warpcam`` / ``python run.py``.

Exit status: 0 on success; 2 on a usage, file or device error (one-line reason on stderr);
128 + N when stopped by signal N: 130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP,
131 for SIGQUIT (a file being written is removed, one line ``warpcam: interrupted [by SIGx]``);
1 for an unexpected internal error (one line; ``WARPCAM_DEBUG=1`` shows the traceback).

The process never stops because of its own output: a progress bar or a log line that cannot be
written (stderr closed, a broken pipe, a full disk) is dropped and the job goes on. Native
libraries' notices (mediapipe, TensorFlow Lite, absl) are kept off stderr for the whole run
(file descriptor 2 points to ``/dev/null``; warpcam's own messages go to the real stderr
through a copy of it); ``WARPCAM_DEBUG=1`` lets them through.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

# The frame path's matrices are tiny: a BLAS thread pool only wakes a second thread that fights
# mediapipe and the tracking thread for the two cores (a 0.07 ms solve measured up to 8 ms under
# load, docs/speed.md). Set before numpy loads; a user's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
del _var

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
EXIT_INTERNAL = 1
#: ``--max-faces`` upper bound: mediapipe's cost grows with every face it looks for, and no
#: webcam scene needs more (the CLI edits the largest ``N``; a crowd passes through).
MAX_FACES = 16
#: Upper bounds of the webcam capture request (no camera delivers more than 8K or 1000 fps).
MAX_CAPTURE_SIDE, MAX_CAPTURE_FPS = 16384, 1000.0
#: Signals that stop a job like Ctrl-C does (the output is removed, exit status 128 + N).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, n))
DEBUG_ENV = "WARPCAM_DEBUG"
#: Seconds a live source waits, before its first frame, for the compiled loops: enough to load
#: them from numba's cache (about 1 s), not for a first-ever compile (10-50 s).
LIVE_JIT_WAIT_S = 5.0

#: Negative numbers argparse should take as values, not as options: ``-1e1``, ``-.5``,
#: ``-1.5E-3``, ``-inf``, ``-nan`` (its own pattern knows only ``-1`` and ``-1.5``).
NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def allow_negative_numbers(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` read ``--flag -1e1`` / ``--flag -inf`` as a value (argparse's private
    ``_negative_number_matcher``, present in Python 3.8-3.13; none of our flags looks like a
    negative number, so the swap changes nothing else)."""
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = NEGATIVE_NUMBER
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGQUIT, raised in the main thread like a Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def interrupt_behind(exc: Optional[BaseException]) -> Optional[KeyboardInterrupt]:
    """The Ctrl-C or stop signal behind ``exc``, if any (``exc`` itself, or a cause or context of
    it). A signal handler's exception that lands in Python code called back from native code
    comes out as a ``SystemError`` ("... returned a result with an exception set") whose chain
    holds the interrupt: numba's compiled loops call back into Python on every call."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else (
            None if exc.__suppress_context__ else exc.__context__)  # "from None" ends it
    return None


def interrupt_status(exc: BaseException) -> tuple:
    """``(exit status, stderr line)`` for a Ctrl-C or a stop signal."""
    signum = getattr(exc, "signum", signal.SIGINT)
    if signum == signal.SIGINT:
        return EXIT_INTERRUPTED, "warpcam: interrupted"
    return 128 + signum, f"warpcam: interrupted by {signal.Signals(signum).name}"

#: ``warpcam NAME ...`` runs ``main(argv)`` of the module (imported only then).
SUBCOMMANDS = {
    "analyze": "warpcam.realtime.analyze",  # AU / pose / gaze CSV per frame (OpenFace columns)
    "batch": "warpcam.realtime.batch",  # a folder of videos: process pool or Ray cluster
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``warpcam: error: ...``) and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _int_in(lo: int, hi: int):
    """argparse type: a whole number within ``[lo, hi]`` (one-line error otherwise)."""
    def parse(text: str) -> int:
        try:
            v = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") \
                from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {text[:40]}")
        return v
    return parse


def _float_in(lo: float, hi: float):
    """argparse type: a finite number within ``(lo, hi]``."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        if not (math.isfinite(v) and lo < v <= hi):
            raise argparse.ArgumentTypeError(f"must be > {lo:g} and at most {hi:g}, "
                                             f"got {text[:40]}")
        return v
    return parse


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
    p.add_argument("--max-faces", type=_int_in(1, MAX_FACES), default=None, metavar="N",
                   help=f"most faces edited per frame, 1 to {MAX_FACES} (default 1; "
                        f"{MAX_FACES} with --keep-smiling, which edits every face)")
    from warpcam.kernels import backend_names
    p.add_argument("--backend", choices=backend_names(), default="auto",
                   help="compositor backend (default auto: cuda with a GPU, else cpu)")
    p.add_argument("--width", type=_int_in(1, MAX_CAPTURE_SIDE), default=1280,
                   help="webcam capture width")
    p.add_argument("--height", type=_int_in(1, MAX_CAPTURE_SIDE), default=720,
                   help="webcam capture height")
    p.add_argument("--fps", type=_float_in(0.0, MAX_CAPTURE_FPS), default=30.0,
                   help="webcam capture frame rate")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--panel", action="store_true",
                   help="serve a control panel page on 127.0.0.1 (live picture, a control for "
                        "every effect setting, timings, presets) and print its URL with its "
                        "token; a file input then plays at its own frame rate (needs the "
                        "'panel' extra: pip install 'warpcam[panel]')")
    p.add_argument("--panel-port", type=_int_in(0, 65535), default=0, metavar="PORT",
                   help="the control panel's port (default 0: a free one)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="effect settings from a presets TOML file (the panel's presets.toml "
                        "format); flags given on the command line win")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="with --config: the preset to apply (default: the file's active one)")
    add_effect_arguments(p)
    p.add_argument("--calibrate", action="store_true",
                   help="record a minute of you following dots in a window and train a personal "
                        "gaze model (same as `warpcam calibrate`; see `warpcam calibrate --help`)")
    return allow_negative_numbers(p)


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


def config_settings(a: argparse.Namespace, settings: dict) -> dict:
    """``settings`` (``{effect name: settings object}``) with ``--config FILE``'s preset applied
    to every field whose flag was not given on the command line.

    Raises:
        PresetError: the file or preset cannot be used (one line).
    """
    import dataclasses

    from warpcam.realtime.effects import get as get_spec, setting_infos
    from warpcam.realtime.panel.presets import preset_from_file

    if not getattr(a, "config", None):
        return settings
    out = dict(settings)
    for effect, fields in preset_from_file(a.config, a.preset).items():
        spec = get_spec(effect)
        given = {i.name for i in setting_infos(spec.settings_cls)
                 if i.cli and getattr(a, _dest(spec, i.name), None) is not None}
        keep = {k: v for k, v in fields.items() if k not in given}
        if effect in out and keep:
            out[effect] = dataclasses.replace(out[effect], **keep)
    return out


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding ``folder`` allows."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(str(folder), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _too_long_part(path: Path) -> Optional[str]:
    """The first component of ``path`` longer than its file system allows, as a one-line
    description, else ``None``."""
    path = path.expanduser()
    for i, part in enumerate(path.parts):
        n = len(os.fsencode(part))
        limit = _name_max(Path(*path.parts[:i]) if i else Path("."))
        if n > limit:
            short = part if len(part) <= 40 else part[:24] + "..." + part[-12:]
            return f"{short!r} is {n} bytes long, the file system allows at most {limit}"
    return None


def _validate(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    from warpcam.realtime.effects import SettingsError, registered

    try:  # ranges and finiteness of every effect setting, before any work starts
        effect_settings(a, live_source=False)
    except SettingsError as exc:
        p.error(str(exc))
    if a.preset is not None and not a.config:
        p.error("--preset needs --config FILE")
    if a.config:
        from warpcam.realtime.panel.presets import PresetError
        try:
            config_settings(a, effect_settings(a, live_source=False))
        except PresetError as exc:
            p.error(f"--config: {exc}")
    if a.max_faces < 1:
        p.error(f"--max-faces must be >= 1, got {a.max_faces}")
    if a.width <= 0 or a.height <= 0:
        p.error(f"--width and --height must be > 0, got {a.width}x{a.height}")
    if not (math.isfinite(a.fps) and a.fps > 0):
        p.error(f"--fps must be > 0, got {a.fps}")
    if not a.input.strip():
        p.error("--input is empty: give a webcam index, a video file, an image or a folder")
    if a.output is not None:
        if not a.output.strip():
            p.error("--output is empty: give a file, a folder or 'null' (no --output: the "
                    "virtual camera)")
        if a.output.strip().lower() != "null":
            why = _too_long_part(Path(a.output))
            if why is not None:
                p.error(f"output name too long: {why}")
    for spec in registered():  # a FILE option naming a folder (e.g. --gaze-model)
        for flag, kwargs in spec.extra_args:
            v = getattr(a, _dest(spec, _option_name(spec, flag)), None)
            if (kwargs.get("metavar") == "FILE" and isinstance(v, str) and v
                    and Path(v).expanduser().is_dir()):
                p.error(f"{flag} {v} is a directory, not a .pt2 file")


# ------------------------------------------------------------------------------------------------
# the process: signals, standard streams, native log lines
# ------------------------------------------------------------------------------------------------

class _SafeStream:
    """A text stream whose failures never reach the caller: the first write or flush that
    fails (closed, broken pipe, ``/dev/full``) turns it into a sink that drops everything, and
    its file descriptor is pointed at ``/dev/null`` so nothing (not even the interpreter's last
    flush at exit) fails on it again."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text):
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self._break()
            return len(text)

    def flush(self):
        if self.broken:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._break()

    def _break(self):
        self.broken = True
        try:
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
            self._stream.flush()  # what is still buffered goes to /dev/null now
        except (OSError, ValueError, AttributeError):
            pass

    def isatty(self):
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _reopen_closed_std_fds() -> None:
    """Open ``/dev/null`` on a closed 0, 1 or 2: started with ``2>&-``, the next file opened
    (the output video) would otherwise get descriptor 2 and receive native log lines."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


#: The stop signal received during this run, if any (set by the handler).
_STOP: dict = {"signum": None}


def _check_stop(*_args) -> None:
    """Raise :class:`Interrupted` again if a stop signal came and the job still runs: the
    handler's exception can be swallowed when it lands inside native code that calls back into
    Python and prints what it caught (seen during mediapipe's imports). Called at the job's safe
    points and after every frame."""
    if _STOP["signum"] is not None:
        raise Interrupted(_STOP["signum"])


@contextlib.contextmanager
def _stop_signals_raise():
    """SIGTERM, SIGHUP and SIGQUIT raise :class:`Interrupted` in the main thread (the job is
    aborted like a Ctrl-C); a second signal while it cleans up is ignored, and a signal the
    parent set to be ignored (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _STOP["signum"] = None

    def handler(signum, frame):
        first = _STOP["signum"] is None
        _STOP["signum"] = signum
        if first:
            raise Interrupted(signum)

    old = {}
    for sig in STOP_SIGNALS:
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue  # ignored by whoever started us (nohup): keep it so
            old[sig] = signal.signal(sig, handler)
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        _STOP["signum"] = None
        for sig, h in old.items():
            try:
                signal.signal(sig, h)
            except (OSError, ValueError):
                pass


@contextlib.contextmanager
def _guarded_process(debug: bool):
    """Standard streams that cannot stop the job, native stderr silenced, stop signals."""
    _reopen_closed_std_fds()
    saved_streams = sys.stdout, sys.stderr
    saved_fd2 = own = None
    if not debug:
        # Native libraries write their notices to descriptor 2: point it at /dev/null for the
        # run, and give Python's stderr (ours: errors, warnings, the progress bar) a copy.
        try:
            saved_fd2 = os.dup(2)
            try:
                uses_fd2 = sys.stderr.fileno() == 2
            except (OSError, ValueError, AttributeError):
                uses_fd2 = False
            if uses_fd2:
                sys.stderr.flush()
                own = open(saved_fd2, "w", buffering=1, closefd=False,
                           encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                           errors="backslashreplace")
                sys.stderr = own
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except (OSError, ValueError):
            pass
    sys.stdout, sys.stderr = _SafeStream(sys.stdout), _SafeStream(sys.stderr)
    try:
        with _stop_signals_raise():
            yield
    finally:
        for s in (sys.stdout, sys.stderr):
            if isinstance(s, _SafeStream):
                s.flush()
        sys.stdout, sys.stderr = saved_streams
        if own is not None:
            with contextlib.suppress(OSError, ValueError):
                own.close()
        if saved_fd2 is not None:
            with contextlib.suppress(OSError):
                os.dup2(saved_fd2, 2)
            os.close(saved_fd2)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """``warpcam [options]`` or ``warpcam SUBCOMMAND ...``; returns the exit status.

    Every failure ends in one line on stderr: usage errors and refused files or devices (2),
    Ctrl-C and stop signals (128 + N), anything unexpected (1, with a hint to rerun with
    ``WARPCAM_DEBUG=1``, which re-raises it with its traceback).
    """
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    with _guarded_process(debug):
        try:
            return _main(argv)
        except (SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            # Ctrl-C or a stop signal: itself, wrapped by native code that Python was called
            # back from, or behind a failure while cleaning up after one
            stop = interrupt_behind(exc)
            if stop is not None:
                code, line = interrupt_status(stop)
                _say(line)
                return code
            if debug or not isinstance(exc, Exception):
                raise
            if isinstance(exc, MemoryError):
                _say("warpcam: error: out of memory (try a smaller input or fewer --max-faces)")
                return EXIT_USAGE
            if isinstance(exc, OSError):  # the system refused something (a long name, a full disk)
                what = f": {exc.filename}" if getattr(exc, "filename", None) else ""
                _say(f"warpcam: error: {exc.strerror or _one_line(exc)}{what}")
                return EXIT_USAGE
            _say(f"warpcam: error: unexpected {type(exc).__name__}: {_one_line(exc)} "
                 f"(a bug; rerun with {DEBUG_ENV}=1 for the traceback)")
            return EXIT_INTERNAL


def _main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:  # loaded only when asked for
        import importlib
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    if argv[:1] == ["calibrate"] or "--calibrate" in argv:
        # Training code, imported only for this sub-command (the frame path never needs it).
        # `run.py --calibrate` may carry warpcam's other flags along: only then are they
        # accepted (and ignored); `warpcam calibrate` refuses any flag it does not know.
        from warpcam.realtime.calibrate import main as calibrate
        return calibrate([a for a in argv if a not in ("calibrate", "--calibrate")],
                         main_flags_ok=argv[:1] != ["calibrate"])
    return run_job(parse_job_args(argv))


def parse_job_args(argv: List[str]) -> argparse.Namespace:
    """Parse and check the flags of one ``warpcam [options]`` job (``warpcam batch`` parses
    each of its files' jobs with it). Usage errors exit with status 2 and one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_faces is None:  # KeepSmiling is for group photos: every face by default
        args.max_faces = MAX_FACES if getattr(args, "effect__keep_smiling__enabled", None) else 1
    _validate(parser, args)
    return args


def run_job(args: argparse.Namespace, *, on_frame: Optional[callable] = None,
            say: Optional[callable] = None) -> int:
    """Run one job (``--input`` to ``--output``) from :func:`parse_job_args`'s result: the one
    code path of ``warpcam --input … --output …`` and of every file of ``warpcam batch``.

    ``on_frame(frame, out, faces, jobs)`` is called after each frame is written; ``say(line)``
    receives the one-line error (default: stderr). Returns the exit status (0, or 2 with the
    error said); Ctrl-C, stop signals and bugs propagate (the output file is removed first).
    """
    _say = say or globals()["_say"]
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="warpcam: %(message)s")

    from warpcam.kernels import BackendError, get_compositor
    from warpcam.realtime.effects import EffectError, SettingsError, build_effects
    from warpcam.realtime.pipeline import Pipeline
    from warpcam.realtime.io import SinkError, open_sink
    from warpcam.realtime.io import (ImageSource, ReconnectingSource, SourceError, WebcamSource,
                                  open_source)
    from warpcam.realtime.io.webcam import follow_camera
    from warpcam.realtime.tracker import FaceTracker

    def fail(msg: str) -> int:
        _say(f"warpcam: error: {' '.join(str(msg).split())}")
        return EXIT_USAGE

    try:
        compositor = get_compositor(args.backend)
    except BackendError as exc:
        return fail(str(exc))
    options = effect_options(args)
    effects = None
    try:  # models are loaded and checked before the first frame (and before the source opens)
        effects = build_effects(config_settings(args, effect_settings(args, live_source=False)),
                                options)
    except (EffectError, SettingsError) as exc:
        return fail(str(exc))
    try:
        source = open_source(args.input, width=args.width, height=args.height, fps=args.fps)
    except SourceError as exc:
        return fail(str(exc))
    if isinstance(source, WebcamSource):
        # A camera that stalls or is unplugged mid-call: keep the virtual camera fed (last
        # frame, then "camera lost") and reopen it until it is back, by its name and USB port
        # when it comes back under another /dev/videoN.
        source = ReconnectingSource(
            follow_camera(source.index, lambda spec: open_source(
                spec, width=args.width, height=args.height, fps=args.fps)),
            first=source)
    with source:
        if source.is_live:  # settings whose default differs for a camera (eye contact)
            live_settings = config_settings(args, effect_settings(args, live_source=True))
            for e in effects:
                e.settings.set(live_settings[e.name])
        from warpcam.core import jit
        if not source.is_live:
            # A file's output must not depend on when the background compile of the numba
            # loops ends (the reference paths agree only within rounding, and the encoder
            # spreads such differences): compile first (from numba's cache: about a second).
            jit.prepare()
        elif not jit.prepare(timeout=LIVE_JIT_WAIT_S) and jit.compiling():
            # A live source waits for the loops only as long as loading them from numba's
            # cache takes (loading them while frames flow stalls a frame by ~100 ms); a
            # first-ever compile goes on in the background, the reference paths meanwhile.
            logging.getLogger("warpcam").info(
                "compiling the per-pixel loops in the background (first run: 10-50 s; the "
                "frames use the reference paths until then)")
        # mediapipe's imports before the output exists: a signal during them (C extensions
        # that call back into Python) then has nothing to leave behind.
        import mediapipe  # noqa: F401
        _check_stop()
        try:
            sink = open_sink(args.output, source=source, preview=args.preview)
        except SinkError as exc:
            return fail(str(exc))
        tracker = panel = None
        try:
            # Inside the try: a failure or Ctrl-C while mediapipe starts still aborts the sink.
            tracker = FaceTracker(max_faces=args.max_faces,
                                  static_images=isinstance(source, ImageSource))
            _check_stop()
            pipeline = Pipeline(tracker, compositor, effects, inplace=True)
            extra_on_frame = on_frame

            def on_frame(*frame_out_faces_jobs):
                _check_stop()
                if extra_on_frame is not None:
                    extra_on_frame(*frame_out_faces_jobs)
            run_source = source
            if args.panel:  # served from a background thread; the pipeline never waits for it
                from warpcam.realtime.panel import Panel, PanelError
                try:
                    panel = Panel(pipeline, port=args.panel_port, input_name=args.input,
                                  output_name=args.output or "virtual camera").start()
                except PanelError as exc:
                    sink.abort()
                    return fail(str(exc))
                _say(f"warpcam: control panel at {panel.url}")
                run_source = panel.wrap_source(source)

                def on_frame(frame, out, faces, jobs, _then=on_frame):
                    panel.on_frame(frame, out, faces, jobs)
                    _then(frame, out, faces, jobs)
            stats = pipeline.run(run_source, sink, progress=not args.quiet, on_frame=on_frame)
        except (SourceError, SinkError, ValueError) as exc:
            sink.abort()
            if isinstance(source, ImageSource) and source.is_folder:
                return fail(f"{exc} (no image written: the output folder is written as a "
                            "whole)")
            return fail(str(exc))
        except OSError as exc:
            sink.abort()
            what = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            return fail(f"{exc.strerror or _one_line(exc)}{what}")
        except BaseException:  # Ctrl-C, a stop signal, a bug: main() says it in one line
            sink.abort()
            raise
        finally:
            if panel is not None:
                panel.close()
            if tracker is not None:
                tracker.close()
    if not args.quiet:
        st = stats["stages"]
        parts = [f"{k} {v['p50_ms']:.1f}" for k, v in st.items()
                 if k in ("tracking", "effects", "composite", "output", "total")]
        _say(f"warpcam: {stats['frames']} frames, p50 ms: " + ", ".join(parts))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
