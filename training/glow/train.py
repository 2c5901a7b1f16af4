"""Train Glow (:mod:`warpcam.training.glow.model`) on aligned faces by maximum likelihood.

Data: the shared face data set's aligned crops (``python -m warpcam.training.data.build ...``;
``face_64`` / ``face_128`` / ``face_256`` columns, :class:`warpcam.training.data.loaders.
FaceCrops`), CelebA and the aligned LFW faces by default, preloaded as uint8, random horizontal
flips. The CPU run behind ``models/glow_faces.pt2`` (one thread; README "Glow expression
transfer")::

    OMP_NUM_THREADS=1 python -m warpcam.training.glow.train --config cpu \\
        --data /work/data/faces --output-dir /work/runs/glow --max-minutes 60 --threads 1

On a GPU ``--config gpu128`` (or ``gpu256``, which needs ``face_256`` crops) with ``--amp``
(bf16 autocast); several processes with ``torchrun --standalone --nproc_per_node N -m
warpcam.training.glow.train ...`` (DDP: gloo on the CPU, NCCL on GPUs; each rank takes its
share of the batch).

Schedule (openai/glow ``train.py``): Adam ``lr 1e-3`` with a linear warm-up (``--warmup``
steps), gradient-norm clipping (``--clip``), the loss is the dequantised bits per dimension.
Actnorm's data-dependent init runs once, on ``--init-batch`` training images, before the first
step (openai's ``n_batch_init``); it is stored in the checkpoint, so ``--resume`` never redoes it.

Outputs in ``OUTPUT_DIR``: ``checkpoint.pt`` (every ``--ckpt-minutes`` and at the end;
``--resume auto`` continues exactly), TensorBoard + ``tb/scalars.jsonl`` (``train/bpd``,
``val/bpd``), ``samples.png`` (top: samples at temperature 0.7; bottom: validation faces and
their reconstructions), ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from warpcam.training.common.checkpoint import load_checkpoint, save_checkpoint
from warpcam.training.common.distributed import init_distributed_mode
from warpcam.training.common.loop import LoopMeter, add_loop_args, epoch_batches
from warpcam.training.common.runlog import RunLogger
from warpcam.training.data.loaders import FaceCrops
from warpcam.training.gaze.train import git_commit
from warpcam.training.glow.model import CONFIGS, Glow, GlowConfig

DEFAULT_SETS = ("celeba", "lfw_expressions")


def load_faces(root, split: str, size: int, sets, limit=None) -> tuple:
    """``(uint8 (N, 3, S, S) RGB tensor, {set: count})`` of the aligned faces of ``split``."""
    crop = f"face_{size}" if size in (64, 128, 256) else "face_64"  # others: resized
    ds = FaceCrops(root, split, crop=crop, columns=(), sets=list(sets))
    rows = ds.rows[:limit] if limit else ds.rows
    if not rows:
        raise SystemExit(f"{root}: no face_{size} crops of sets {', '.join(sets)} in split "
                         f"{split!r}")
    out = torch.empty(len(rows), 3, size, size, dtype=torch.uint8)
    counts: dict = {}
    for i, r in enumerate(rows):
        img = cv2.imread(str(ds.root / r[ds.crop]), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {ds.root / r[ds.crop]}")
        if img.shape[:2] != (size, size):
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))
        counts[r["set"]] = counts.get(r["set"], 0) + 1
    return out, counts


def to01(x_u8: torch.Tensor) -> torch.Tensor:
    return x_u8.float() / 255.0


@torch.no_grad()
def val_bpd(net: Glow, val: torch.Tensor, device, batch: int = 64, seed: int = 7) -> float:
    """Mean dequantised bpd of the validation faces (fixed noise)."""
    net.eval()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    tot = 0.0
    for s in range(0, len(val), batch):
        tot += float(net.nll_bpd(to01(val[s:s + batch]).to(device)).sum())
    torch.set_rng_state(state)
    net.train()
    return tot / len(val)


@torch.no_grad()
def sample_sheet(net: Glow, val: torch.Tensor, device, n: int = 8) -> np.ndarray:
    """BGR uint8: a row of samples (T = 0.7), a row of faces, a row of decode(encode(face))."""
    net.eval()
    n = min(n, len(val))
    g = torch.Generator().manual_seed(3)
    s = net.sample(n, 0.7, generator=g).cpu()
    x = to01(val[:n]).to(device)
    r = net.decode(net.encode(x)).clamp(0, 1).cpu()
    net.train()
    rows = []
    for t in (s, x.cpu(), r):
        a = (t.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)[..., ::-1]
        rows.append(np.hstack(list(a)))
    return np.vstack(rows)


def main(args) -> dict:
    info = init_distributed_mode(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + info.rank)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = GlowConfig.from_dict(dict(CONFIGS[args.config].to_dict(), **{
        k: v for k, v in dict(levels=args.levels, depth=args.depth, hidden=args.hidden,
                              n_bits=args.n_bits).items() if v is not None}))
    train, counts = load_faces(args.data, "train", cfg.size, args.sets, args.limit)
    val, _ = load_faces(args.data, "val", cfg.size, args.sets, args.val_limit)
    net = Glow(cfg).to(info.device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, epoch, minutes_before = 0, 0, 0.0
    history: list = []
    ckpt = out_dir / "checkpoint.pt"
    resumed = False
    if args.resume:
        path = ckpt if args.resume == "auto" else Path(args.resume)
        if path.exists():
            st = load_checkpoint(path, model=net, optimizer=opt, map_location=info.device)
            step, epoch = st["step"], st["epoch"]
            minutes_before = float(st["extra"].get("minutes", 0.0))
            history[:] = json.loads(st["extra"].get("history", "[]"))
            resumed = True
            if info.is_main:
                print(f"training: resumed {path} at step {step}", flush=True)
        elif args.resume != "auto":
            raise SystemExit(f"--resume {path}: no such checkpoint")
    if not resumed:  # actnorm's data-dependent init (module docstring), on rank 0's images
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randperm(len(train), generator=g)[:args.init_batch]
        with torch.no_grad():
            net.train()
            net.nll_bpd(to01(train[idx]).to(info.device))
    if info.distributed:
        for p in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(p.data, 0)
    model = net
    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    use_amp = args.amp and info.device.type == "cuda"
    logger = RunLogger(out_dir / "tb", enabled=info.is_main)
    meta = dict(data=sorted(counts), data_counts=counts, commit=git_commit(),
                world_size=info.world_size, config=cfg.to_dict(), source=str(args.data),
                config_name=args.config)
    n = len(train)
    steps_per_epoch = max(1, n // args.batch_size)
    total = args.epochs * steps_per_epoch
    if info.is_main:
        print(f"training glow {args.config}: {n} faces {counts}, {len(val)} val, "
              f"{steps_per_epoch} steps/epoch x {args.epochs}, batch {args.batch_size}, "
              f"{info.world_size} proc, {info.device}, {sum(p.numel() for p in net.parameters())}"
              f" params, config {cfg.to_dict()}", flush=True)
    meter = LoopMeter(info, logger, args, total, step, "glow")
    stopped = False

    def save():
        if not info.is_main:
            return
        vb = val_bpd(net, val, info.device)
        logger.scalar("val/bpd", vb, step)
        history.append(dict(step=step, minutes=minutes_before + meter.minutes,
                            val_bpd=vb, train_bpd=meter.run.get("bpd")))
        extra = dict(meta, minutes=minutes_before + meter.minutes, val_bpd=vb,
                     history=json.dumps(history))
        save_checkpoint(ckpt, model=net, optimizer=opt, step=step, epoch=epoch,
                        args=vars(args), extra=extra)
        cv2.imwrite(str(out_dir / "samples.png"), sample_sheet(net, val, info.device))
        print(f"checkpoint step {step}: val bpd {vb:.4f}", flush=True)

    while step < total and not stopped:
        epoch = step // steps_per_epoch
        for idx, f in epoch_batches(n, args.batch_size, args.seed, epoch,
                                    step % steps_per_epoch, info):
            x = train[idx]
            x[f] = x[f].flip(-1)
            x = to01(x).to(info.device)
            for grp in opt.param_groups:
                grp["lr"] = args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                bpd = model(x).mean()
            opt.zero_grad(set_to_none=True)
            bpd.backward()
            gn = torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
            if torch.isfinite(gn):
                opt.step()
            step += 1
            meter.update(step, {"bpd": float(bpd.detach()), "grad_norm": float(gn)})
            if meter.checkpoint_due():
                save()
            if meter.should_stop(step):
                stopped = True
                break
    epoch = step // steps_per_epoch
    save()
    summary = dict(steps=step, epochs_done=epoch, minutes=minutes_before + meter.minutes,
                   stopped_by_budget=stopped, final_train=meter.run,
                   val_bpd=history[-1]["val_bpd"] if history else None, history=history, **meta)
    return meter.finish(summary, out_dir, "glow", ckpt)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train Glow on aligned faces (seed 004).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu",
                   help="network size (gpu128 / gpu256: the paper's CelebA-HQ layouts)")
    p.add_argument("--levels", type=int, default=None, help="override the config's L")
    p.add_argument("--depth", type=int, default=None, help="override the config's K")
    p.add_argument("--hidden", type=int, default=None, help="override the coupling width")
    p.add_argument("--n-bits", type=int, default=None, help="override the colour depth")
    p.add_argument("--data", required=True, help="built face data set (index.csv)")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    p.add_argument("--limit", type=int, default=None, help="at most N training faces")
    p.add_argument("--val-limit", type=int, default=256, help="validation faces for val/bpd")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32, help="global batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear lr warm-up steps")
    p.add_argument("--clip", type=float, default=50.0, help="gradient-norm clip")
    p.add_argument("--init-batch", type=int, default=256, help="images for actnorm's init")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast (GPU only)")
    add_loop_args(p, "runs/glow", ckpt_minutes=5.0)
    return p


def parse_args(argv=None):
    return get_args_parser().parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
