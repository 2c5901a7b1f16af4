"""The preview window: an OpenCV window with a HUD, and the preview keys.

- :func:`draw_hud` / :func:`hud_box` draw text lines on a dark box in the top-left corner.
- :func:`hud_lines` is what the HUD shows for a running pipeline: the frame rate and the median
  time of each stage over the last 30 frames, then one line with every effect's
  :meth:`~warpcam.realtime.effects.base.Effect.hud`.
- :func:`handle_key` applies one preview key to the effects' live settings through the keys each
  effect declares (:attr:`~warpcam.realtime.effects.base.EffectSpec.hud_keys`): for the built-in
  effects ``g`` toggles gaze, ``[`` and ``]`` change the smile by 0.1; ``q`` quits.
- :class:`PreviewSink` shows the frames and, in :meth:`PreviewSink.frame_done` (the per-frame
  hook the pipeline calls), refreshes its HUD every 15 frames and applies the key pressed.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Sequence

import cv2
import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Sink, SinkError

log = logging.getLogger("warpcam")

__all__ = ["PreviewSink", "draw_hud", "hud_box", "hud_lines", "handle_key",
           "HUD_STAGES", "HUD_EVERY", "QUIT_KEY"]

#: Stages whose median time the HUD shows (after the frame rate, from the "total" stage).
HUD_STAGES = ("tracking", "effects", "composite", "output")
#: The HUD is refreshed on frames 1, 16, 31, ... (pipeline frame count).
HUD_EVERY = 15
#: Frames the HUD statistics look back on.
HUD_WINDOW = 30
#: The key that stops the run.
QUIT_KEY = "q"


def hud_lines(pipeline) -> List[str]:
    """Text for the preview HUD: fps and per-stage p50 over the last 30 frames, then one line
    with every effect's ``hud()``.

    Args:
        pipeline: anything with ``timer`` (a :class:`~warpcam.realtime.pipeline.StageTimer`) and
            ``effects`` (the ordered effect list).

    Returns:
        e.g. ``["fps  29.8", "tracking    6.1 ms", ..., "gaze on (landmark)  smile +0.5"]``.
    """
    timer = pipeline.timer
    tot = timer.last_ms("total", HUD_WINDOW)
    fps = 1000.0 / np.mean(tot) if tot.size else 0.0
    lines = [f"fps {fps:5.1f}"]
    for st in HUD_STAGES:
        v = timer.last_ms(st, HUD_WINDOW)
        if v.size:
            lines.append(f"{st:9s} {np.median(v):5.1f} ms")
    effects = list(getattr(pipeline, "effects", None) or ())
    if effects:
        lines.append("  ".join(str(e.hud()) for e in effects))
    return lines


def _hud_keys(effect) -> tuple:
    """The ``(key, field, step)`` entries an effect declares; an effect built without the
    registry (no ``spec``) gets those of the registered effect of its name and settings type."""
    spec = getattr(effect, "spec", None)
    if spec is None:
        try:
            from warpcam.realtime.effects import get as get_spec
            spec = get_spec(effect.name)
        except Exception:
            return ()
        if spec.settings_cls is not type(effect.settings.get()):
            return ()
    return tuple(getattr(spec, "hud_keys", ()) or ())


def handle_key(key: Optional[str], pipeline) -> bool:
    """Apply one preview key to the live settings of ``pipeline.effects``.

    ``q`` returns ``False`` (stop the run). Any other key is looked up in each effect's
    ``spec.hud_keys``, ``(key, field, step)`` entries: ``step`` ``None`` toggles the bool
    ``field``; otherwise ``step`` is added to the numeric ``field``, the sum rounded to 2
    decimals (no float drift: twenty 0.1 steps from -1 land exactly on 1.0) and clipped to the
    field's declared range (:func:`~warpcam.realtime.effects.base.setting`'s ``lo`` / ``hi``).
    The change goes through ``effect.settings.update`` (applied at the next frame, as a whole).
    Unknown keys and ``None`` change nothing.

    Returns:
        ``False`` for the quit key, else ``True``.
    """
    if key is None:
        return True
    if key == QUIT_KEY:
        return False
    from warpcam.realtime.effects.base import SettingsError, setting_infos

    for effect in getattr(pipeline, "effects", None) or ():
        entries = [(f, step) for k, f, step in _hud_keys(effect) if k == key]
        if not entries:
            continue
        for field, step in entries:
            cur = effect.settings.get()
            info = next((i for i in setting_infos(type(cur)) if i.name == field), None)
            value = getattr(cur, field)
            if step is None:
                value = not bool(value)
            else:
                value = round(value + step, 2)
                if info is not None and info.lo is not None:
                    value = max(info.lo, value)
                if info is not None and info.hi is not None:
                    value = min(info.hi, value)
                value = int(round(value)) if info is not None and info.type is int \
                    else float(value)
            try:
                effect.settings.update(**{field: value})
            except SettingsError as exc:  # a key must never stop a live run
                log.warning(f"preview key {key!r}: {exc}")
    return True


_HUD_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _hud_metrics(image_shape, lines: Sequence[str]):
    h = int(image_shape[0])
    scale = float(np.clip(h / 720.0 * 0.55, 0.35, 1.2))
    thickness = 1 if scale < 0.8 else 2
    pad = max(4, int(round(8 * scale)))
    sizes = [cv2.getTextSize(str(t), _HUD_FONT, scale, thickness) for t in lines]
    line_h = max((s[0][1] + s[1] for s in sizes), default=0) + pad // 2
    text_w = max((s[0][0] for s in sizes), default=0)
    return scale, thickness, pad, line_h, text_w


def hud_box(image_shape, lines: Sequence[str]) -> Optional[tuple]:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive end, clipped to the image) that
    :func:`draw_hud` changes for these lines; ``None`` for no lines."""
    if not lines:
        return None
    scale, thickness, pad, line_h, text_w = _hud_metrics(image_shape, lines)
    H, W = int(image_shape[0]), int(image_shape[1])
    x0, y0 = pad, pad
    x1 = min(W, x0 + text_w + 2 * pad)
    y1 = min(H, y0 + line_h * len(lines) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def draw_hud(image: np.ndarray, lines: Sequence[str], *, opacity: float = 0.6,
             color=(80, 255, 80)) -> np.ndarray:
    """Draw text lines on a semi-transparent dark box in the top-left corner.

    Pure: returns a new image and leaves ``image`` untouched. Pixels outside :func:`hud_box`
    are byte-identical to the input. Text size follows the image height (readable from 240p to
    4K).

    Args:
        image: ``H x W x 3`` ``uint8`` BGR.
        lines: text lines, e.g. ``["fps 29.8", "track 6.1 ms"]``; empty -> a plain copy.
        opacity: how dark the box is, in [0, 1] (0 = no box, only text).
        color: BGR text colour.

    Returns:
        ``H x W x 3`` ``uint8`` BGR, same shape as ``image``.

    Raises:
        ValueError: ``image`` is not ``H x W x 3`` ``uint8``.
    """
    if getattr(image, "ndim", 0) != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 BGR, got shape "
                         f"{getattr(image, 'shape', None)} dtype {getattr(image, 'dtype', None)}")
    out = image.copy()
    box = hud_box(image.shape, [str(t) for t in lines])
    if box is None:
        return out
    x0, y0, x1, y1 = box
    scale, thickness, pad, line_h, _ = _hud_metrics(image.shape, [str(t) for t in lines])
    roi = out[y0:y1, x0:x1]
    # Darken towards black: (1 - opacity) * roi, rounded.
    roi[...] = (roi.astype(np.float32) * (1.0 - float(opacity)) + 0.5).astype(np.uint8)
    # Draw the text into the box only, so nothing outside it can change.
    canvas = np.ascontiguousarray(roi)
    for i, text in enumerate(lines):
        baseline_y = pad // 2 + line_h * (i + 1) - pad // 2
        cv2.putText(canvas, str(text), (pad, baseline_y), _HUD_FONT, scale, color, thickness,
                    cv2.LINE_AA)
    out[y0:y1, x0:x1] = canvas
    return out


def _display_problem() -> Optional[str]:
    """Why no window can be opened here, or ``None`` when a display looks available.

    OpenCV's Qt backend aborts the whole process (not a Python exception) when it cannot
    reach an X server, so this is checked before the first ``cv2.imshow``.
    """
    if sys.platform.startswith("win") or sys.platform == "darwin":
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        if os.environ.get("WAYLAND_DISPLAY"):
            return "DISPLAY is not set (OpenCV's windows need X11/XWayland)"
        return "DISPLAY is not set (no desktop session; run without --preview)"
    if display.startswith(":"):  # local X server: its socket must exist
        num = display[1:].split(".")[0]
        if num.isdigit() and not os.path.exists(f"/tmp/.X11-unix/X{num}"):
            return f"DISPLAY={display} but no X server socket /tmp/.X11-unix/X{num}"
    return None


class PreviewSink(Sink):
    """Show frames in an OpenCV window, with an optional HUD.

    After each frame the pipeline calls :meth:`frame_done`, which every 15 frames sets the HUD
    to :func:`hud_lines` of the pipeline (also possible by hand with :meth:`set_hud_lines`; the
    lines are drawn on every following frame with :func:`draw_hud`) and applies the key pressed
    with :func:`handle_key`. :meth:`write` also pumps the window's events (``cv2.waitKey(1)``)
    and keeps the key pressed for :meth:`poll_key`.

    Args:
        window: window title.
        hud: draw the HUD lines.

    Raises:
        SinkError: ``no display for --preview: ...`` at construction when no display is
            reachable (checked up front because OpenCV's Qt backend aborts the process instead
            of raising), or on the first write if ``cv2.imshow`` fails.
    """

    def __init__(self, window: str = "warpcam", hud: bool = True) -> None:
        super().__init__()
        problem = _display_problem()
        if problem:
            raise SinkError(f"no display for --preview: {problem}")
        self._window = str(window)
        self._hud = bool(hud)
        self._lines: List[str] = []
        self._pending_key: Optional[str] = None
        self._shown = False

    @property
    def is_live(self) -> bool:
        return True

    @property
    def window(self) -> str:
        return self._window

    def set_hud_lines(self, lines: Sequence[str]) -> None:
        self._lines = [str(t) for t in lines]

    def frame_done(self, pipeline) -> bool:
        """Refresh the HUD from ``pipeline`` on its frames 1, 16, 31, ... and apply the key
        pressed since the last call (:func:`handle_key`); ``False`` (key ``q``) stops the run."""
        if pipeline.frames % HUD_EVERY == 1:
            self.set_hud_lines(hud_lines(pipeline))
        return handle_key(self.poll_key(), pipeline)

    @staticmethod
    def _key(code: int) -> Optional[str]:
        if code is None or code < 0:
            return None
        code &= 0xFF
        return chr(code) if code else None

    def poll_key(self) -> Optional[str]:
        if self._pending_key is not None:
            key, self._pending_key = self._pending_key, None
            return key
        if not self._shown or self._finished:
            return None
        return self._key(cv2.waitKey(1))

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        shown = draw_hud(image, self._lines) if (self._hud and self._lines) else image
        try:
            cv2.imshow(self._window, shown)
            key = self._key(cv2.waitKey(1))
        except cv2.error as exc:
            msg = " ".join(str(exc).split())
            raise SinkError(f"no display for --preview: {msg}") from None
        self._shown = True
        if key is not None:
            self._pending_key = key

    def _close(self) -> None:
        if self._shown:
            try:
                cv2.destroyWindow(self._window)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def __repr__(self) -> str:
        return f"PreviewSink({self._window!r})"
