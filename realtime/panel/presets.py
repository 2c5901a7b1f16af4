"""Presets: named sets of effect settings in a TOML file, shared by the control panel and
``warpcam --config FILE``.

The file (default :func:`presets_path`, ``$XDG_CONFIG_HOME/warpcam/presets.toml`` on Linux,
``%APPDATA%\\warpcam\\presets.toml`` on Windows, ``~/Library/Application Support/warpcam/
presets.toml`` on macOS) holds one table per preset and effect::

    active = "call"            # the preset ``--config FILE`` applies (last saved or loaded)

    [presets.call.gaze]
    enabled = true
    eye_contact = true

    [presets.call.smile]
    strength = 0.3

A file without a ``presets`` table is one unnamed preset with its effect tables at the top
level (``[smile]`` / ``strength = 0.3``). Values are TOML booleans, numbers and strings; each
is checked against its effect's declared range (:func:`warpcam.realtime.effects.validate`)
before anything is applied.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Dict, Optional

from warpcam.realtime.effects import SettingsError, get as get_spec, setting_infos, validate

__all__ = ["PresetError", "config_dir", "presets_path", "read_file", "preset_from_file",
           "save_preset", "check_preset", "current_preset", "apply_preset", "NAME_RE",
           "panel_fields", "list_presets", "load_named", "dumps"]

#: A preset name: 1 to 64 letters, digits, spaces, ``_ - .``.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\- ]{1,64}$")
#: Largest presets file read (a settings file is a few kilobytes).
MAX_FILE_BYTES = 1 << 20

Preset = Dict[str, Dict[str, object]]  # {effect name: {field: value}}


class PresetError(ValueError):
    """A presets file or preset that cannot be read or used (one-line message)."""


def config_dir() -> Path:
    """The user's warpcam configuration folder (not created): ``$XDG_CONFIG_HOME/warpcam``
    (default ``~/.config/warpcam``) on Linux and other Unix systems, ``%APPDATA%\\warpcam`` on
    Windows, ``~/Library/Application Support/warpcam`` on macOS. ``XDG_CONFIG_HOME`` is honoured
    on every platform when set (tests point it at a temporary folder)."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
    if xdg:
        return Path(xdg).expanduser() / "warpcam"
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "warpcam"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "warpcam"
    return Path.home() / ".config" / "warpcam"


def presets_path() -> Path:
    """``config_dir() / "presets.toml"``."""
    return config_dir() / "presets.toml"


def panel_fields(settings_cls) -> list:
    """The settings the panel and presets handle: every declared bool, int and float field
    (strings such as file names are left to the command line: the page must not name files)."""
    return [i for i in setting_infos(settings_cls) if i.type in (bool, int, float)]


def read_file(path) -> dict:
    """The parsed TOML of ``path`` (``{}`` when it does not exist).

    Raises:
        PresetError: unreadable, too large, or not valid TOML (line and column in the message).
    """
    path = Path(path).expanduser()
    if not path.exists():
        return {}
    if path.is_dir():
        raise PresetError(f"{path} is a folder, not a TOML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PresetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PresetError(f"{path} is {len(data)} bytes, more than a settings file "
                          f"({MAX_FILE_BYTES})")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PresetError(f"{path} is not valid TOML: {exc}") from None


def _presets(doc: dict, path) -> Dict[str, dict]:
    presets = doc.get("presets", {})
    if not isinstance(presets, dict):
        raise PresetError(f"{path}: 'presets' must be a table")
    return presets


def check_preset(preset: dict, where: str = "preset", strict_types: bool = False) -> Preset:
    """Check a preset (``{effect: {field: value}}``): known effects and fields, and values in
    range (each effect's settings built from its defaults plus these changes and validated).

    Args:
        strict_types: only bool/int/float fields (:func:`panel_fields`), as from the page.

    Returns:
        the preset with ints given for float fields turned into floats.

    Raises:
        PresetError: the first bad entry, e.g. ``"preset 'call': smile.strength must be within
            [-1, 1], got 3"``.
    """
    if not isinstance(preset, dict):
        raise PresetError(f"{where}: expected a table of effects")
    out: Preset = {}
    for effect, fields in preset.items():
        try:
            spec = get_spec(effect)
        except KeyError as exc:
            raise PresetError(f"{where}: {exc.args[0]}") from None
        if not isinstance(fields, dict):
            raise PresetError(f"{where}: [{effect}] must be a table of settings")
        infos = {i.name: i for i in (panel_fields(spec.settings_cls) if strict_types
                                     else setting_infos(spec.settings_cls))}
        clean = {}
        for name, value in fields.items():
            info = infos.get(name)
            if info is None:
                raise PresetError(f"{where}: {effect} has no setting {name!r} (settings: "
                                  f"{', '.join(infos)})")
            if info.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if info.type is tuple and isinstance(value, list):
                value = tuple(value)
            clean[name] = value
        try:
            validate(dataclasses.replace(spec.settings_cls(), **clean))
        except SettingsError as exc:
            raise PresetError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise PresetError(f"{where}: {effect}: {exc}") from None
        out[effect] = clean
    return out


def preset_from_file(path, name: Optional[str] = None) -> Preset:
    """The preset ``--config FILE [--preset NAME]`` applies: ``name``, else the file's
    ``active`` preset, else its only one; a file without ``presets`` is itself the preset.

    Raises:
        PresetError: missing file or preset, bad TOML, an unknown effect or setting, a value out
            of range.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise PresetError(f"config file {path} does not exist")
    doc = read_file(path)
    if "presets" not in doc:
        if name:
            raise PresetError(f"{path} has no presets (no [presets.{name}] table)")
        return check_preset({k: v for k, v in doc.items() if k != "active"}, str(path))
    presets = _presets(doc, path)
    if not name:
        name = doc.get("active") if doc.get("active") in presets else None
        if name is None:
            if len(presets) != 1:
                raise PresetError(f"{path} holds {len(presets)} presets and no 'active' one: "
                                  f"choose one with --preset ({', '.join(presets) or 'none'})")
            name = next(iter(presets))
    if name not in presets:
        raise PresetError(f"{path} has no preset {name!r} (presets: "
                          f"{', '.join(presets) or 'none'})")
    return check_preset(presets[name], f"preset {name!r}")


def current_preset(pipeline) -> Preset:
    """The pipeline's current settings as a preset (:func:`panel_fields` of every effect)."""
    out: Preset = {}
    for effect in pipeline.effects:
        cur = effect.settings.get()
        out[effect.name] = {i.name: getattr(cur, i.name) for i in panel_fields(type(cur))}
    return out


def apply_preset(pipeline, preset: Preset) -> None:
    """Apply a checked preset to the pipeline's live settings: every effect's settings are
    validated first, then replaced, each as a whole (applies at the next frame).

    Raises:
        PresetError: an effect this pipeline does not run, or a bad value (nothing applied).
    """
    new = {}
    for effect, fields in preset.items():
        if effect not in pipeline.settings:
            raise PresetError(f"this pipeline runs no effect {effect!r}")
        cur = pipeline.settings[effect].get()
        try:
            obj = dataclasses.replace(cur, **fields)
            validate(obj)
        except (SettingsError, TypeError, ValueError) as exc:
            raise PresetError(str(exc)) from None
        new[effect] = obj
    for effect, obj in new.items():
        pipeline.settings[effect].set(obj)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise PresetError(f"cannot save a non-finite number {v!r}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise PresetError(f"cannot save a {type(v).__name__} in TOML")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_\-]+", k) else json.dumps(k)


def dumps(doc: dict) -> str:
    """TOML text of a presets document (``active`` and ``presets.NAME.EFFECT`` tables)."""
    lines = ["# warpcam presets (written by the control panel; `warpcam --config FILE`)"]
    if doc.get("active") is not None:
        lines.append(f"active = {_toml_value(str(doc['active']))}")
    for name, preset in _presets(doc, "presets").items():
        for effect, fields in preset.items():
            lines.append("")
            lines.append(f"[presets.{_key(name)}.{_key(effect)}]")
            lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def save_preset(path, name: str, preset: Preset) -> None:
    """Save ``preset`` under ``name`` (replacing one of that name) and make it the active one;
    the file is written to a temporary name beside it and renamed (never left half-written).

    Raises:
        PresetError: a bad name, an unreadable existing file, or a failed write.
    """
    if not isinstance(name, str) or not NAME_RE.match(name) or not name.strip():
        raise PresetError("a preset name is 1 to 64 letters, digits, spaces, '_', '-' or '.'")
    path = Path(path).expanduser()
    doc = read_file(path)
    presets = dict(_presets(doc, path))
    presets[name] = preset
    text = dumps({"active": name, "presets": presets})
    tomllib.loads(text)  # what we write must read back
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".presets-", suffix=".toml", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise PresetError(f"cannot write {path}: {exc.strerror or exc}") from None


def list_presets(path) -> dict:
    """``{"names": [...], "active": name or None}`` of a presets file."""
    doc = read_file(path)
    presets = _presets(doc, path)
    active = doc.get("active") if doc.get("active") in presets else None
    return {"names": sorted(presets), "active": active}


def load_named(path, name: str) -> Preset:
    """The checked preset ``name`` of ``path`` (panel fields only), and mark it active."""
    doc = read_file(path)
    presets = _presets(doc, path)
    if name not in presets:
        raise PresetError(f"no preset {name!r} in {Path(path).name}")
    return check_preset(presets[name], f"preset {name!r}", strict_types=True)

