"""Train the DeepWarp gaze network.

One process (CPU or GPU)::

    python -m warpcam.training.gaze.render --eyes 8000 --gazes 6 --out /tmp/warpcam/synth.npz
    python -m warpcam.training.gaze.train --synthetic /tmp/warpcam/synth.npz --output-dir runs/gaze_synth

Several processes (DDP; gloo on the CPU, NCCL on GPUs)::

    torchrun --standalone --nproc_per_node 2 -m warpcam.training.gaze.train --synthetic ... --output-dir ...

Data: ``--synthetic NPZ`` (procedural renders), ``--mined NPZ`` (pairs mined from videos by
``python -m warpcam.training.gaze.mine``), ``--columbia DIR`` and ``--unityeyes DIR`` (public datasets
in their own layouts), mixed per batch by ``--mix`` (one weight per source given, in that
order). ``--batch-size`` is the global batch, split across processes; with
``--seed`` fixed, a run with N processes takes the same steps as one process.

Loss (as in BlueWinters/DeepWarp): L2 between the coarse output and the target plus L2 between
the final output and the target, plus ``--smooth-weight`` times the flow smoothness. Adam with a
linear warm-up and a cosine decay. AMP (fp16 autocast with a grad scaler) on a GPU. TensorBoard
logs and checkpoints (``checkpoint.pt``, every epoch and at the end) go to ``--output-dir``;
``--resume`` continues a run exactly where it stopped. ``--max-minutes`` stops cleanly (with a
checkpoint) when the wall-time budget is used up.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from warpcam.training.common.checkpoint import load_checkpoint, save_checkpoint
from warpcam.training.common.distributed import (DistInfo, cleanup, init_distributed_mode,
                                         mean_across)
from warpcam.training.common.runlog import RunLogger
from warpcam.training.gaze.data import (MixedPairs, ShardedBatchSampler, StoredPairs, SyntheticPairs,
                                collate)
from warpcam.training.gaze.model import DeepWarpGaze, GazeNetConfig, anchor_points, gaze_loss


def git_commit() -> str:
    """HEAD of the checkout, with ``+dirty`` when ``training/`` has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=root, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "training"], capture_output=True,
                               text=True, cwd=root, timeout=5).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_datasets(args) -> tuple:
    """``(train dataset, description list)`` from the data arguments."""
    sets, names = [], []
    for p in args.synthetic or []:
        sets.append(SyntheticPairs(p, max_angle=args.max_angle, augment=not args.no_augment,
                                   seed=args.seed))
        names.append(f"synthetic:{Path(p).name}")
    for p in args.mined or []:
        sets.append(StoredPairs(p, source="mined"))
        names.append(f"mined:{Path(p).name}")
    if args.columbia:
        from warpcam.training.gaze.datasets import columbia_pairs
        sets.append(columbia_pairs(args.columbia))
        names.append(f"columbia:{Path(args.columbia).name}")
    if args.unityeyes:
        from warpcam.training.gaze.datasets import unityeyes_pairs
        sets.append(unityeyes_pairs(args.unityeyes))
        names.append(f"unityeyes:{Path(args.unityeyes).name}")
    if not sets:
        raise SystemExit("no training data: give --synthetic, --mined, --columbia or --unityeyes")
    weights = args.mix or [1.0] * len(sets)
    if len(weights) != len(sets):
        raise SystemExit(f"--mix needs {len(sets)} weights (one per data source), got {weights}")
    sizes = [len(s) for s in sets]
    if len(sets) == 1:
        return sets[0], names, sizes
    length = sum(sizes) if args.mix_length is None else args.mix_length
    return MixedPairs(sets, weights, length, seed=args.seed), names, sizes


def model_inputs(batch, cfg: GazeNetConfig, device):
    img = batch["src"].to(device, non_blocking=True)
    angle = batch["angle"].to(device, non_blocking=True)
    anchors = anchor_points(batch["landmarks"]).to(device) if cfg.anchors else None
    return img, angle, anchors


def train_one_epoch(model, loader, optimizer, scheduler, scaler, info: DistInfo, args, cfg,
                    epoch: int, step: int, logger: RunLogger, deadline: float, bar=None) -> tuple:
    """One pass over ``loader``; returns ``(global step, stopped early)``."""
    model.train()
    use_amp = scaler is not None
    for batch in loader:
        img, angle, anchors = model_inputs(batch, cfg, info.device)
        tgt = batch["tgt"].to(info.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = model(img, angle, anchors)
        loss, parts = gaze_loss({k: v.float() for k, v in out.items()}, tgt, args.smooth_weight)
        optimizer.zero_grad(set_to_none=True)
        if use_amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        step += 1
        if step % args.log_every == 0 or bar is not None:
            vals = mean_across(info, torch.stack([loss.detach(), parts["coarse"], parts["fine"],
                                                  parts["smooth"]]))
            if step % args.log_every == 0:
                for tag, v in zip(("loss", "coarse_l2", "fine_l2", "smooth"), vals.tolist()):
                    logger.scalar(f"train/{tag}", v, step)
                logger.scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            if bar is not None:
                bar.set_postfix(loss=f"{vals[0].item():.5f}",
                                mse255=f"{vals[2].item() * 255 ** 2:.1f}", ep=epoch)
                bar.update(1)
        stop = torch.tensor(float(time.time() > deadline
                                  or (args.stop_at_step is not None and step >= args.stop_at_step)))
        if info.distributed:  # every process must agree to stop at the same step
            stop = mean_across(info, stop)
        if stop.item() > 0:
            return step, True
    return step, False


@torch.no_grad()
def evaluate(model, dataset, cfg, device, batch_size: int = 256) -> dict:
    """Per-pixel MSE on the 0-255 scale (DeepWarp's metric) of the model output and of the
    identity (no warp) on ``dataset``."""
    net = getattr(model, "module", model)
    net.eval()
    se_model = se_id = 0.0
    n = 0
    for s in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))])
        img, angle, anchors = model_inputs(batch, cfg, device)
        tgt = batch["tgt"].to(device)
        out = net(img, angle, anchors)["output"]
        se_model += ((out - tgt) ** 2).mean(dim=(1, 2, 3)).sum().item()
        se_id += ((img - tgt) ** 2).mean(dim=(1, 2, 3)).sum().item()
        n += img.shape[0]
    net.train()
    return dict(mse_model=se_model / n * 255 ** 2, mse_identity=se_id / n * 255 ** 2, n=n)


def main(args) -> dict:
    info = init_distributed_mode(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out_dir = Path(args.output_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    cfg = GazeNetConfig(width=args.width, fine_width=args.fine_width,
                        fine_layers=args.fine_layers, lcm=not args.no_lcm, anchors=args.anchors)
    train_set, names, sizes = build_datasets(args)
    val_set = SyntheticPairs(args.val_synthetic) if args.val_synthetic else None
    if val_set is not None and args.val_size and len(val_set) > args.val_size:
        val_set = torch.utils.data.Subset(val_set, np.linspace(0, len(val_set) - 1,
                                                               args.val_size).astype(int).tolist())
    model = DeepWarpGaze(cfg).to(info.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sampler = ShardedBatchSampler(len(train_set), args.batch_size, info.rank, info.world_size,
                                  seed=args.seed, max_batches=args.steps_per_epoch)
    steps_per_epoch = sampler.n // sampler.gb if args.steps_per_epoch is None else min(
        args.steps_per_epoch, sampler.n // sampler.gb)
    total = max(args.epochs * steps_per_epoch, 1)
    warm = min(args.warmup, total // 10 + 1)

    def lr_lambda(s):
        if s < warm:
            return (s + 1) / warm
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min((s - warm) / max(total - warm, 1), 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    use_amp = args.amp and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    start_epoch, step = 0, 0
    ckpt_path = out_dir / "checkpoint.pt"
    if args.resume:
        path = ckpt_path if args.resume == "auto" else Path(args.resume)
        if path.exists():
            st = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                 scaler=scaler, map_location=info.device)
            start_epoch, step = st["epoch"], st["step"]
            if info.is_main:
                print(f"training: resumed {path} at epoch {start_epoch}, step {step}")
        elif args.resume != "auto":
            raise SystemExit(f"--resume {path}: no such checkpoint")
    ddp_model = model
    if info.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=args.workers,
                                         pin_memory=info.device.type == "cuda")
    logger = RunLogger(out_dir / "tb", enabled=info.is_main)
    meta = dict(data=names, data_sizes=sizes, commit=git_commit(), world_size=info.world_size,
                config=cfg.to_dict())
    if info.is_main:
        print(f"training: {names} ({sizes} pairs), {steps_per_epoch} steps/epoch x "
              f"{args.epochs} epochs, global batch {args.batch_size} on {info.world_size} "
              f"process(es), {info.device}")
    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc="gaze", dynamic_ncols=True)
    t0 = time.time()
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else float("inf")
    stopped = False
    epoch = start_epoch
    history = []
    while epoch < args.epochs and not stopped:
        skip = step - epoch * steps_per_epoch
        sampler.set_epoch(epoch, skip=max(skip, 0))
        step, stopped = train_one_epoch(ddp_model, loader, optimizer, scheduler, scaler, info,
                                        args, cfg, epoch, step, logger, deadline, bar)
        if not stopped:
            epoch += 1
        if info.is_main:
            save_checkpoint(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler, step=step, epoch=epoch, args=vars(args), extra=meta)
            if val_set is not None:
                ev = evaluate(model, val_set, cfg, info.device)
                ev.update(epoch=epoch, step=step, minutes=(time.time() - t0) / 60)
                history.append(ev)
                logger.scalar("val/mse255_model", ev["mse_model"], step)
                logger.scalar("val/mse255_identity", ev["mse_identity"], step)
                msg = (f"epoch {epoch}: val MSE (0-255) model {ev['mse_model']:.1f}, "
                       f"identity {ev['mse_identity']:.1f}")
                print(msg) if bar is None else bar.write(msg)
    if bar is not None:
        bar.close()
    minutes = (time.time() - t0) / 60
    summary = dict(steps=step, epochs_done=epoch, minutes=minutes, stopped_by_budget=stopped,
                   val=history, **meta)
    if info.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"training: {step} steps in {minutes:.1f} min -> {ckpt_path}")
    logger.close()
    cleanup(info)
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " (DeepWarp, Ganin et al. 2016). "
        "Use torchrun for several processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--synthetic", action="append", metavar="NPZ",
                   help="procedural renders from `python -m warpcam.training.gaze.render` (repeatable)")
    g.add_argument("--mined", action="append", metavar="NPZ",
                   help="pairs mined from videos by `python -m warpcam.training.gaze.mine` (repeatable)")
    g.add_argument("--columbia", metavar="DIR", help="Columbia Gaze data set folder")
    g.add_argument("--unityeyes", metavar="DIR", help="UnityEyes folder (N.jpg + N.json)")
    g.add_argument("--mix", type=float, nargs="+", metavar="W",
                   help="sampling weight per data source, in the order synthetic..., mined..., "
                        "columbia, unityeyes (default: by size)")
    g.add_argument("--mix-length", type=int, default=None,
                   help="pairs per epoch of a mixture (default: the sum of the sources)")
    g.add_argument("--max-angle", type=float, default=30.0,
                   help="largest synthetic angle change used, degrees")
    g.add_argument("--no-augment", action="store_true",
                   help="no photometric augmentation / landmark noise on synthetic pairs")
    g.add_argument("--val-synthetic", metavar="NPZ", help="held-out renders for validation")
    g.add_argument("--val-size", type=int, default=2048, help="validation pairs used")
    g = p.add_argument_group("model")
    g.add_argument("--width", type=int, default=16, help="coarse branch channels")
    g.add_argument("--fine-width", type=int, default=12, help="fine branch channels")
    g.add_argument("--fine-layers", type=int, default=2, help="fine branch 3x3 convolutions")
    g.add_argument("--no-lcm", action="store_true", help="switch the lightness correction off")
    g.add_argument("--anchors", action="store_true", help="feed the 7 landmark anchor maps")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap on steps per epoch (default: one pass over the data)")
    g.add_argument("--batch-size", type=int, default=64, help="global batch (all processes)")
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    g.add_argument("--smooth-weight", type=float, default=1e-3,
                   help="weight of the flow smoothness term")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="fp16 autocast + grad scaling (GPU only; ignored on the CPU)")
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/gaze", help="checkpoints and TensorBoard logs")
    g.add_argument("--resume", default=None, metavar="CKPT",
                   help="checkpoint to continue from ('auto': OUTPUT_DIR/checkpoint.pt if any)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="stop (with a checkpoint) after this much wall time")
    g.add_argument("--stop-at-step", type=int, default=None,
                   help="stop (with a checkpoint) at this global step; the schedule is still the "
                        "full run's, so --resume continues it exactly")
    g.add_argument("--log-every", type=int, default=20, help="steps between logged scalars")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
