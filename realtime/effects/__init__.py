"""The effect registry: every effect the pipeline can run, in order.

Built-in effects are the modules in :data:`BUILTIN_MODULES`, each defining ``SPEC`` (an
:class:`~warpcam.realtime.effects.base.EffectSpec`); other distributions add theirs through
the ``warpcam.effects`` entry-point group (the entry point names an ``EffectSpec``), or at run
time with :func:`register`. The command line (:mod:`warpcam.realtime.cli`) and the pipeline
read this registry: adding an effect is one module plus one registry entry, with no edit to
either. See ``docs/architecture.md`` ("Add an effect").
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Dict, List, Optional

from warpcam.realtime.effects.base import (Effect, EffectError, EffectSpec, FrameCrops,  # noqa: F401
                                           LiveSettings, SettingsError, setting, setting_infos,
                                           validate)

log = logging.getLogger("warpcam")

#: Modules of the built-in effects, each with a module-level ``SPEC``.
BUILTIN_MODULES = ("warpcam.realtime.effects.gaze", "warpcam.realtime.effects.smile",
                   "warpcam.realtime.effects.keep_smiling", "warpcam.realtime.effects.au_edit")

_REGISTRY: Dict[str, EffectSpec] = {}
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        spec = importlib.import_module(mod).SPEC
        _REGISTRY.setdefault(spec.name, spec)
    try:
        from importlib.metadata import entry_points
        eps = entry_points(group="warpcam.effects")
    except Exception:  # pragma: no cover - broken metadata of another distribution
        eps = ()
    for ep in eps:
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plug-in must not stop warpcam
            log.warning("effect plug-in %s cannot be loaded (%s): skipped", ep.name,
                        str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
            continue
        if isinstance(spec, EffectSpec):
            _REGISTRY.setdefault(spec.name, spec)


def register(spec: EffectSpec, replace: bool = False) -> EffectSpec:
    """Add an effect to the registry.

    Raises:
        ValueError: an effect of that name is registered already (and ``replace`` is False).
    """
    _load_builtins()
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"an effect named {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an effect (for tests and plug-in reloads); unknown names are ignored."""
    _load_builtins()
    _REGISTRY.pop(name, None)


def registered() -> List[EffectSpec]:
    """Every registered effect, in pipeline order (``order``, then name)."""
    _load_builtins()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def get(name: str) -> EffectSpec:
    """The registered effect ``name``. Raises ``KeyError`` (naming the known ones)."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no effect {name!r}; registered: {', '.join(_REGISTRY)}") from None


def build_effects(settings: Optional[Dict[str, Any]] = None,
                  options: Optional[Dict[str, Dict[str, Any]]] = None, **named) -> List[Effect]:
    """One instance of every registered effect, in pipeline order.

    ``build_effects(gaze=GazeSettings(pitch_deg=10), smile=SmileSettings(0.5))`` is
    ``build_effects({"gaze": ..., "smile": ...})``.

    Args:
        settings: ``{effect name: settings object}``; effects not named get their defaults.
        options: ``{effect name: {option: value}}`` (their ``extra_args``, e.g.
            ``{"gaze": {"model": loaded_gaze_model}}``).

    Raises:
        SettingsError: a settings object of the wrong type or out of range.
        EffectError: an effect that cannot start.
    """
    settings = dict(settings or {}, **named)
    options = dict(options or {})
    unknown = sorted(set(settings) - {s.name for s in registered()})
    if unknown:
        raise SettingsError(f"no effect named {unknown[0]!r}")
    out = []
    for spec in registered():
        value = settings.get(spec.name)
        live = LiveSettings(value if value is not None else spec.settings_cls())
        effect = spec.factory(live, dict(options.get(spec.name, {})))
        effect.spec = spec
        out.append(effect)
    return out
