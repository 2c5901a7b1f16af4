"""Training logs: TensorBoard scalars and images on the main process (a JSON-lines file beside
them in any case, so a run can be read without TensorBoard)."""
from __future__ import annotations

import json
import time
from pathlib import Path


class RunLogger:
    """``scalar(tag, value, step)``, ``images(tag, nchw_tensor, step)``, ``close()``; a no-op on
    processes other than the main one."""

    def __init__(self, log_dir, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        self._jsonl = None
        if not enabled:
            return
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._jsonl = open(Path(log_dir) / "scalars.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(log_dir))
        except ImportError:  # tensorboard not installed: JSON lines only
            print("training: tensorboard is not installed; logging to scalars.jsonl only")

    def scalar(self, tag: str, value: float, step: int) -> None:
        if not self.enabled:
            return
        if self.tb is not None:
            self.tb.add_scalar(tag, float(value), step)
        self._jsonl.write(json.dumps(dict(tag=tag, value=float(value), step=int(step),
                                          time=time.time())) + "\n")
        self._jsonl.flush()

    def images(self, tag: str, images, step: int) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_images(tag, images.clamp(0, 1), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
