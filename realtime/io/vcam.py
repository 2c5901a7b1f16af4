"""The virtual camera sink (pyvirtualcam): frames a video-call app can pick as a camera."""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Sink, SinkError

__all__ = ["VirtualCameraSink"]


def _virtual_camera_hint() -> str:
    if sys.platform.startswith("linux"):
        return ("no virtual camera device: load v4l2loopback with `sudo modprobe v4l2loopback "
                "devices=1 exclusive_caps=1 card_label=warpcam`")
    if sys.platform.startswith("win"):
        return ("no virtual camera: install OBS Studio (its Virtual Camera) or Unity Capture")
    if sys.platform == "darwin":
        return "no virtual camera: install OBS Studio and start its Virtual Camera once"
    return "no virtual camera backend for this platform"


class VirtualCameraSink(Sink):
    """Send frames to a virtual camera that video-call apps can pick (pyvirtualcam).

    The camera is opened with ``PixelFormat.BGR``, so frames go out without a colour conversion
    on our side. :meth:`write` sends at once and never sleeps: pacing a live stream is the
    source's job (the webcam delivers at its own rate).

    Args:
        width, height: frame size in pixels.
        fps: the rate announced to the consumers.
        device: backend-specific device (``/dev/video10`` for v4l2loopback), default: the first.
        backend: pyvirtualcam backend name (``v4l2loopback``, ``obs``, ``unitycapture``).

    Raises:
        SinkError: no virtual camera driver/device; the message says how to install one and
            includes pyvirtualcam's reason.
    """

    def __init__(self, width: int, height: int, fps: Optional[float] = 30.0,
                 device: Optional[str] = None, backend: Optional[str] = None) -> None:
        super().__init__(width, height)
        fps = 30.0 if fps is None else float(fps)
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise SinkError(f"pyvirtualcam is not installed ({exc}): pip install pyvirtualcam") \
                from None
        try:
            self._cam = pyvirtualcam.Camera(int(width), int(height), fps,
                                            fmt=pyvirtualcam.PixelFormat.BGR, device=device,
                                            backend=backend, print_fps=False)
        except Exception as exc:  # pyvirtualcam raises RuntimeError / ValueError per backend
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SinkError(f"{_virtual_camera_hint()} ({reason})") from None

    @property
    def device(self) -> str:
        """The device the frames go to (e.g. ``/dev/video10``, ``OBS Virtual Camera``)."""
        return self._cam.device

    @property
    def backend(self) -> str:
        return self._cam.backend

    @property
    def is_live(self) -> bool:
        return True

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        try:
            self._cam.send(np.ascontiguousarray(image))
        except Exception as exc:
            raise SinkError(f"virtual camera {self.device}: send failed: {exc}") from None

    def _close(self) -> None:
        self._cam.close()

    def __repr__(self) -> str:
        return f"VirtualCameraSink({getattr(self._cam, 'device', '?')!r})"
