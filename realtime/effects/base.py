"""The effect seam: what every effect is, how its settings are declared and changed live.

An **effect** (DESIGN.md, "Effects are plug-ins") is one module with

- a name (``"gaze"``, ``"smile"``, ...),
- a frozen **settings dataclass** whose fields are declared with :func:`setting`: the command
  line flags (:mod:`warpcam.realtime.cli`) and the control panel's controls are generated from
  these declarations (type, range, unit, help),
- a class derived from :class:`Effect` with ``jobs(frame, faces, t, crops) -> list[WarpJob]``,
- one :class:`EffectSpec` registered with :func:`warpcam.realtime.effects.register`.

Settings are owned by one :class:`LiveSettings` per effect. Any thread may change them
(:meth:`LiveSettings.update`); a change replaces the whole frozen settings object under a lock,
and an effect reads its settings once per frame (:meth:`LiveSettings.get`), so a frame sees
either the old or the new settings, never half of an update. Values are validated against the
declared ranges before they are applied: :class:`SettingsError` otherwise, and nothing changes.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from warpcam.core.types import Face, WarpJob

S = TypeVar("S")


class SettingsError(ValueError):
    """A setting outside its declared type or range (one-line message naming the setting).

    Attributes:
        field: the settings field (``None`` when not about one field).
        detail: the message without the setting's name (``"must be within [-1, 1], got 2"``).
    """

    def __init__(self, message: str, field: Optional[str] = None, detail: Optional[str] = None):
        super().__init__(message)
        self.field = field
        self.detail = detail or message


class EffectError(RuntimeError):
    """An effect that cannot start (for example, its model file is refused); one line."""


def setting(default, *, help: str, flag: Optional[str] = None, lo: Optional[float] = None,
            hi: Optional[float] = None, unit: str = "", step: Optional[float] = None,
            cli: bool = True, live_source_default=None):
    """Declare one field of an effect's settings dataclass.

    Args:
        default: the value when nothing is given.
        help: one line for ``--help`` and the control panel.
        flag: the command-line flag (default ``--<effect>-<field with dashes>``).
        lo, hi: inclusive range of a numeric setting (checked by :func:`validate`).
        unit: ``"deg"``, ``"cm"``, ... (shown in help and the panel).
        step: the panel slider's and preview keys' step.
        cli: False hides the field from the command line (still live-settable).
        live_source_default: the default when the input is a live camera, if it differs
            (eye contact is on for a webcam, off for files).
    """
    return dataclasses.field(default=default, metadata=dict(
        help=help, flag=flag, lo=lo, hi=hi, unit=unit, step=step, cli=cli,
        live_source_default=live_source_default))


@dataclass(frozen=True)
class SettingInfo:
    """What :func:`setting` declared for one field, plus its name and Python type."""

    name: str
    type: type
    default: Any
    help: str
    flag: Optional[str]
    lo: Optional[float]
    hi: Optional[float]
    unit: str
    step: Optional[float]
    cli: bool
    live_source_default: Any


def setting_infos(settings_cls) -> List[SettingInfo]:
    """The declared fields of a settings dataclass, in declaration order. Fields declared
    without :func:`setting` are included with ``cli=False``."""
    out = []
    hints = {f.name: f.type for f in dataclasses.fields(settings_cls)}
    for f in dataclasses.fields(settings_cls):
        md = dict(f.metadata) if f.metadata else {}
        typ = f.type if isinstance(f.type, type) else _type_of(hints[f.name], f.default)
        out.append(SettingInfo(
            name=f.name, type=typ, default=f.default, help=md.get("help", ""),
            flag=md.get("flag"), lo=md.get("lo"), hi=md.get("hi"), unit=md.get("unit", ""),
            step=md.get("step"), cli=bool(md.get("cli", False)) if md else False,
            live_source_default=md.get("live_source_default")))
    return out


def _type_of(annotation, default) -> type:
    """The Python type of a field annotated as a string (``from __future__ import
    annotations``): taken from the default value."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float if isinstance(default, float) or annotation == "float" else int
    if isinstance(default, tuple):
        return tuple
    return type(default)


def validate(settings, labels: Optional[Dict[str, str]] = None) -> None:
    """Check every declared field of ``settings`` against its type and range.

    Args:
        settings: a settings dataclass instance.
        labels: how to name a field in the message (the CLI passes its flags), default
            ``"<effect>.<field>"``.

    Raises:
        SettingsError: the first bad field, e.g. ``"smile.strength must be within [-1, 1], got
            1.5"``.
    """
    name = getattr(type(settings), "effect_name", type(settings).__name__)
    for info in setting_infos(type(settings)):
        v = getattr(settings, info.name)
        label = (labels or {}).get(info.name, f"{name}.{info.name}")
        if info.type is bool:
            if not isinstance(v, (bool, np.bool_)):
                raise _bad(label, info.name, f"must be true or false, got {v!r}")
        elif info.type in (int, float):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise _bad(label, info.name, f"must be a number, got {v!r}")
            if not math.isfinite(float(v)):
                raise _bad(label, info.name, f"must be a finite number, got {v!r}")
            if (info.lo is not None and v < info.lo) or (info.hi is not None and v > info.hi):
                raise _bad(label, info.name, f"must be within [{_num(info.lo)}, {_num(info.hi)}]"
                           f"{' ' + info.unit if info.unit else ''}, got {_num(v)}")


def _bad(label: str, field: str, detail: str) -> SettingsError:
    return SettingsError(f"{label} {detail}", field=field, detail=detail)


def _num(x) -> str:
    return "-inf" if x is None else f"{float(x):g}"


class LiveSettings(Generic[S]):
    """The one owner of one effect's settings.

    ``get()`` returns the current frozen settings object (read it once per frame);
    ``update(**changes)`` and ``set(obj)`` validate and then replace it as a whole, from any
    thread. ``version`` counts the changes; ``subscribe(fn)`` calls ``fn(new)`` after each.
    """

    def __init__(self, initial: S):
        if not dataclasses.is_dataclass(initial):
            raise TypeError(f"settings must be a dataclass instance, got {type(initial).__name__}")
        validate(initial)
        self._lock = threading.Lock()
        self._value: S = initial
        self.version = 0
        self._subscribers: List[Callable[[S], None]] = []

    def get(self) -> S:
        return self._value

    def set(self, value: S) -> S:
        if type(value) is not type(self._value):
            raise SettingsError(f"expected {type(self._value).__name__}, got "
                                f"{type(value).__name__}")
        validate(value)
        with self._lock:
            self._value = value
            self.version += 1
            subs = list(self._subscribers)
        for fn in subs:
            fn(value)
        return value

    def update(self, **changes) -> S:
        """Replace some fields. Raises :class:`SettingsError` for an unknown field or a bad
        value; nothing is applied then."""
        with self._lock:
            cur = self._value
            known = {f.name for f in dataclasses.fields(cur)}
            bad = sorted(set(changes) - known)
            if bad:
                raise SettingsError(f"unknown setting {bad[0]!r} for {type(cur).__name__}")
            new = dataclasses.replace(cur, **changes)
        return self.set(new)

    def subscribe(self, fn: Callable[[S], None]) -> None:
        with self._lock:
            self._subscribers.append(fn)


class FrameCrops:
    """The crop service an effect reads pixels through (DESIGN.md: effects read the frame only
    through the compositor's crops, so on a GPU they are one CUDA launch).

    ``crops(affines, size, mean=0, std=1, flip=None, border="replicate")`` returns the ROIs of
    this frame as an ``(N, 3, h, w)`` float32 RGB batch normalised as
    :func:`warpcam.kernels.crop.crop_rois` documents, through the selected compositor backend
    (:class:`warpcam.kernels.base.Compositor`): numpy for ``cpu``, torch tensors for ``torch``,
    CuPy arrays for ``cuda``. :meth:`numpy` and :meth:`tensor` convert them (waiting for the
    device where needed); :meth:`tensor` is what a network takes (no copy on the GPU).

    Args:
        compositor: the pipeline's backend; ``None`` means the CPU reference crop.
        image: the frame, ``H x W x 3`` uint8 BGR.
    """

    def __init__(self, compositor, image: np.ndarray):
        if compositor is None:
            from warpcam.kernels.cpu import CpuCompositor
            compositor = CpuCompositor()
        self.compositor = compositor
        self.image = image
        self.calls = 0

    def __call__(self, affines, size, mean=0.0, std=1.0, flip=None, border: str = "replicate"):
        self.calls += 1
        return self.compositor.crop_rois(self.image, affines, size, mean, std, flip=flip,
                                         border=border)

    def numpy(self, affines, size, mean=0.0, std=1.0, flip=None, border: str = "replicate"
              ) -> np.ndarray:
        """:meth:`__call__` as a float32 numpy array on the host."""
        return self.compositor.crops_to_numpy(self(affines, size, mean, std, flip, border))

    def tensor(self, affines, size, mean=0.0, std=1.0, flip=None, border: str = "replicate"):
        """:meth:`__call__` for a network: numpy on the CPU backend, else a torch tensor on the
        backend's device (shared, ordered after the crop launch)."""
        out = self(affines, size, mean, std, flip, border)
        return out if isinstance(out, np.ndarray) else self.compositor.crops_to_torch(out)


class Effect:
    """Base class of every effect.

    Subclasses set ``name`` and implement :meth:`jobs`. ``self.settings`` is the effect's
    :class:`LiveSettings`; read ``self.settings.get()`` once at the start of :meth:`jobs`.
    """

    name: str = "effect"
    #: the registry entry this effect was built from (set by ``build_effects``).
    spec: Optional["EffectSpec"] = None

    def __init__(self, settings: LiveSettings):
        self.settings = settings

    def jobs(self, frame: np.ndarray, faces: Sequence[Face], t: float,
             crops: FrameCrops) -> List[WarpJob]:
        """The warp jobs of this effect for one frame.

        Args:
            frame: ``H x W x 3`` uint8 BGR (read only).
            faces: the tracked faces of this frame.
            t: the frame's time in seconds.
            crops: the frame's :class:`FrameCrops` (the crop service).

        Returns:
            :class:`~warpcam.core.types.WarpJob` s, drawn in list order after those of the
            effects before this one.
        """
        raise NotImplementedError

    def hud(self) -> str:
        """A few words for the preview HUD (``"smile +0.5"``)."""
        return self.name

    def close(self) -> None:
        """Release what the effect holds (models, caches)."""


@dataclass(frozen=True)
class EffectSpec:
    """One registry entry.

    Attributes:
        name: the effect's name (also the prefix of its generated flags).
        settings_cls: its frozen settings dataclass (fields declared with :func:`setting`).
        factory: ``factory(live_settings, options) -> Effect``; ``options`` maps the names of
            ``extra_args`` to their parsed values (for example a model path). May raise
            :class:`EffectError` (shown as one line, exit status 2).
        order: position in the pipeline's effect list (lower first).
        help: one line for ``--help``'s group title.
        extra_args: extra command-line options that are not live settings, as
            ``(flag, argparse keyword arguments)`` pairs (for example ``--gaze-model``).
        hud_keys: preview keys as ``(key, field, step)`` triples; ``step`` None toggles a
            bool field, a number is added to a numeric one (clipped to its range).
    """

    name: str
    settings_cls: type
    factory: Callable[[LiveSettings, Dict[str, Any]], Effect]
    order: int = 100
    help: str = ""
    extra_args: Tuple[Tuple[str, dict], ...] = ()
    hud_keys: Tuple[Tuple[str, str, Optional[float]], ...] = ()
