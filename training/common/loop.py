"""The parts of a training loop every script shares: the run-control arguments, running means
of the loss terms logged every N steps (TensorBoard via :class:`~warpcam.training.common.runlog.
RunLogger`, stdout without a progress bar), the tqdm bar, the checkpoint timer and the stop
test (time budget or step) agreed by every process.

Used by :mod:`warpcam.training.glow.train`; the other scripts' loops have the same shape.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Dict

import torch

from warpcam.training.common.distributed import DistInfo, mean_across


def add_loop_args(p: argparse.ArgumentParser, output_dir: str, ckpt_minutes: float = 3.0,
                  log_every: int = 20) -> argparse.ArgumentParser:
    """``--output-dir --resume --seed --device --threads --max-minutes --stop-at-step
    --ckpt-minutes --log-every --no-progress``."""
    p.add_argument("--output-dir", default=output_dir)
    p.add_argument("--resume", default=None, help="checkpoint, or 'auto'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--stop-at-step", type=int, default=None)
    p.add_argument("--ckpt-minutes", type=float, default=ckpt_minutes)
    p.add_argument("--log-every", type=int, default=log_every)
    p.add_argument("--no-progress", action="store_true")
    return p


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, start: int, info: DistInfo):
    """Yield ``(indices, flip flags)`` of this process's share of each batch of one epoch,
    from batch ``start`` on: a permutation and per-item flip coins drawn from
    ``seed * 100003 + epoch`` (the same on every process and after a resume)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    per_rank = max(1, batch_size // info.world_size)
    for b in range(start, max(1, n // batch_size)):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        idx = idx[info.rank * per_rank:(info.rank + 1) * per_rank]
        yield idx, flips[idx]


class LoopMeter:
    """Running means (``0.95`` exponential) of named loss terms, logged as ``train/<name>``
    every ``args.log_every`` steps (averaged over processes), a tqdm bar on the main process
    unless ``args.no_progress``, and the checkpoint / stop decisions (module docstring)."""

    def __init__(self, info: DistInfo, logger, args, total: int, initial: int, desc: str):
        self.info, self.logger, self.args = info, logger, args
        self.run: Dict[str, float] = {}
        self.t0 = self.last_ckpt = time.time()
        self.budget = args.max_minutes * 60 if args.max_minutes else math.inf
        self.bar = None
        if info.is_main and not args.no_progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", desc=desc,
                            mininterval=10)

    @property
    def minutes(self) -> float:
        """Minutes since this process started the loop."""
        return (time.time() - self.t0) / 60

    def update(self, step: int, terms: Dict[str, float]) -> None:
        for k, v in terms.items():
            v = float(v)
            self.run[k] = v if k not in self.run else 0.95 * self.run[k] + 0.05 * v
        if step % self.args.log_every == 0:
            keys = sorted(self.run)
            vals = mean_across(self.info, torch.tensor([self.run[k] for k in keys]))
            for k, v in zip(keys, vals.tolist()):
                self.logger.scalar(f"train/{k}", v, step)
            if self.info.is_main and self.bar is None:
                print(f"step {step} " + " ".join(f"{k} {self.run[k]:.4f}" for k in keys)
                      + f" {self.minutes:.1f} min", flush=True)
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in self.run.items()}, refresh=False)
            self.bar.update(1)

    def checkpoint_due(self) -> bool:
        """True every ``args.ckpt_minutes`` (the timer restarts)."""
        if time.time() - self.last_ckpt > self.args.ckpt_minutes * 60:
            self.last_ckpt = time.time()
            return True
        return False

    def should_stop(self, step: int) -> bool:
        """Budget spent or ``args.stop_at_step`` reached on any process."""
        stop = torch.tensor(float(time.time() - self.t0 > self.budget or (
            self.args.stop_at_step is not None and step >= self.args.stop_at_step)))
        return mean_across(self.info, stop).item() > 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finish(self, summary: dict, out_dir, label: str, ckpt) -> dict:
        """End of the run: ``summary.json`` and a line on the main process, the logger closed
        and the process group left (every process); returns ``summary``."""
        import json
        from pathlib import Path

        from warpcam.training.common.distributed import cleanup

        self.close()
        if self.info.is_main:
            (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"training {label}: {summary.get('steps')} steps in "
                  f"{summary.get('minutes', 0.0):.1f} min -> {ckpt}", flush=True)
        self.logger.close()
        cleanup(self.info)
        return summary
