"""Checkpoints that resume exactly: model, optimizer, scheduler, scaler, step, epoch, args and
the torch RNG state, written atomically (temporary name, then rename) and read back with
``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch


def save_checkpoint(path, *, model, optimizer=None, scheduler=None, scaler=None, step: int = 0,
                    epoch: int = 0, args: Optional[dict] = None, extra: Optional[dict] = None):
    """Write a checkpoint dict; ``model`` may be wrapped in DDP (its ``.module`` is saved)."""
    model = getattr(model, "module", model)
    state = dict(model=model.state_dict(), step=int(step), epoch=int(epoch),
                 args=dict(args or {}), rng_torch=torch.get_rng_state(), extra=dict(extra or {}))
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, *, model=None, optimizer=None, scheduler=None, scaler=None,
                    map_location="cpu") -> dict:
    """Read a checkpoint (``weights_only=True``) and restore what is given; returns the dict."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if model is not None:
        getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if "rng_torch" in state:
        torch.set_rng_state(state["rng_torch"])
    return state
