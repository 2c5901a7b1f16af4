"""Sinks without an output of their own: :class:`NullSink` discards (benchmarks, dry runs),
:class:`TeeSink` fans one stream out to several sinks."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import numpy as np

from warpcam.core.types import Frame
from warpcam.realtime.io.base import Sink

__all__ = ["NullSink", "TeeSink"]


class NullSink(Sink):
    """Discards every frame (benchmarks, dry runs); :attr:`frames_written` counts them."""

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        pass

    def __repr__(self) -> str:
        return "NullSink()"


class TeeSink(Sink):
    """Writes every frame to several sinks, in order.

    ``close`` closes every member even when one fails (the first error is re-raised after);
    ``abort`` aborts every member. ``frame_done`` reaches every member (the run stops when any
    of them says so); ``set_hud_lines`` and ``poll_key`` reach the members that have them (the
    first key any member returns wins).
    """

    def __init__(self, sinks: Iterable[Sink]) -> None:
        super().__init__()
        self._sinks: List[Sink] = list(sinks)
        if not self._sinks:
            raise ValueError("TeeSink needs at least one sink")

    @property
    def sinks(self) -> List[Sink]:
        return list(self._sinks)

    def _validate(self, image: np.ndarray) -> None:
        for s in self._sinks:
            s._validate(image)

    def _write(self, frame: Frame, image: np.ndarray) -> None:
        for s in self._sinks:
            s.write(frame, image)

    def _close(self) -> None:
        first: Optional[BaseException] = None
        for s in self._sinks:
            try:
                s.close()
            except Exception as exc:  # keep closing the others, report the first failure
                if first is None:
                    first = exc
        if first is not None:
            for s in self._sinks:
                s.abort()
            raise first

    def _abort(self) -> None:
        for s in self._sinks:
            s.abort()

    def frame_done(self, pipeline) -> bool:
        """Every member's :meth:`~warpcam.realtime.io.base.Sink.frame_done` (all of them are
        called, in order); ``False`` when any member asks to stop."""
        go_on = True
        for s in self._sinks:
            if not s.frame_done(pipeline):
                go_on = False
        return go_on

    def set_hud_lines(self, lines: Sequence[str]) -> None:
        for s in self._sinks:
            s.set_hud_lines(lines)

    def poll_key(self) -> Optional[str]:
        key = None
        for s in self._sinks:
            k = s.poll_key()
            if key is None:
                key = k
        return key

    @property
    def is_live(self) -> bool:
        return any(s.is_live for s in self._sinks)

    def __repr__(self) -> str:
        return f"TeeSink({self._sinks!r})"
