"""Train a KeepSmiling set-up (seed 003): ``--setup simple | complex | split`` on 64 x 64 mouth
crops (:mod:`warpcam.training.keepsmiling.data`).

Data: the shared face data set (``python -m warpcam.training.data.build ...``, whose
``mouth_64`` crops follow the seed's rule), or an MTFL folder with ``--mtfl ROOT``.

The CPU runs behind ``models/keepsmiling_*.pt2`` (one thread each, on this 2-core machine
shared with other jobs; README "KeepSmiling")::

    OMP_NUM_THREADS=1 python -m warpcam.training.keepsmiling.train --setup split \\
        --data /work/data/faces --output-dir /work/runs/keepsmiling/split \\
        --g-mult 0.25 --d-mult 0.25 --batch-size 32 --l1-single 9 --max-minutes 32 --threads 1

and ``--setup simple`` / ``--setup complex`` the same way with their own budgets. On a GPU the
recipe's widths (``--g-mult 1 --d-mult 1``, batch 16, 100 / 200 epochs); several processes with
``torchrun --standalone --nproc_per_node N -m warpcam.training.keepsmiling.train ...`` (gloo on
the CPU, NCCL on GPUs; gradients averaged over processes, each rank its share of the batch).

Schedules (recipe): Adam ``lr 2e-4, beta1 0.5`` for both players; SimpleGAN: D and G every step
on **smiling** mouths only (the seed's filter bug fixed); ComplexGAN: G every ``--n-critic``
(5) critic steps, targets a random permutation of the batch labels; SplitGAN: G (E + De) every
2nd step; over the last 35 % of the run the learning rate is lowered by 1/70 seven times (the
seed's "every 10 of the last 70 epochs"). AMP (fp16 autocast + GradScaler) on a GPU.

Outputs in ``OUTPUT_DIR``: ``checkpoint.pt`` (every ``--ckpt-minutes`` and at the end;
``--resume auto`` continues exactly), TensorBoard + ``tb/scalars.jsonl``, ``samples.png``
(fixed inputs at each checkpoint), ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from warpcam.training.common.checkpoint import load_checkpoint, save_checkpoint
from warpcam.training.common.distributed import cleanup, init_distributed_mode, mean_across
from warpcam.training.common.loop import add_loop_args
from warpcam.training.common.runlog import RunLogger
from warpcam.training.gaze.train import git_commit
from warpcam.training.keepsmiling import model as M
from warpcam.training.keepsmiling.data import DEFAULT_SETS, MouthCrops, MTFLMouths

G_EVERY = {"simple": 1, "complex": 5, "split": 2}


def load_data(args, split="train"):
    """The training crops of ``args`` (SimpleGAN: smiling only)."""
    smile = 1 if args.setup == "simple" else None
    if args.mtfl:
        return MTFLMouths(args.mtfl, "training" if split == "train" else "testing",
                          smile=smile, limit=args.limit)
    return MouthCrops(args.data, split, sets=args.sets, smile=smile, labelled=True,
                      max_yaw=args.max_yaw, limit=args.limit)


def _sync(info, params) -> None:
    if not info.distributed:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size


def lr_factor(progress: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of the run (module docstring)."""
    if progress < 0.65:
        return 1.0
    k = min(7, int((progress - 0.65) / 0.05) + 1)
    return (1.0 - 1.0 / 70.0) ** k


def step_losses(net, setup, x, y, args, train_g: bool, generator=None):
    """``(d_terms, g_terms or None)``; ``x`` in [-1, 1], ``y`` labels (1 smiling)."""
    if setup == "simple":
        d = M.simple_d_loss(net, x)
        return d, (M.simple_g_loss(net, x.shape[0], x.device) if train_g else None)
    if setup == "complex":
        perm = torch.randperm(y.shape[0], generator=generator).to(y.device)
        t = y[perm]
        d = M.complex_d_loss(net, x, y, t, args.lambda_cls, args.lambda_gp)
        return d, (M.complex_g_loss(net, x, y, t, args.lambda_cls, args.lambda_rec)
                   if train_g else None)
    d = M.split_d_loss(net, x, args.lambda_gp)
    return d, (M.split_g_loss(net, x, args.lambda_l1, args.l1_single) if train_g else None)


@torch.no_grad()
def samples(net, setup, fixed_x, fixed_y, fixed_z) -> np.ndarray:
    """A BGR uint8 sheet: SimpleGAN 2 rows of G(z); ComplexGAN rows x, G(x, 1 - y);
    SplitGAN rows x, De(E(x))."""
    net.eval()
    if setup == "simple":
        rows = [M.from_net(net.G(fixed_z))]
    elif setup == "complex":
        rows = [M.from_net(fixed_x), M.from_net(net.G(fixed_x, 1 - fixed_y))]
    else:
        rows = [M.from_net(fixed_x), M.from_net(net.reconstruct(fixed_x))]
    net.train()
    n = rows[0].shape[0]
    half = (n + 1) // 2 if setup == "simple" else n
    tiles = []
    for r in rows:
        a = (r.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)[..., ::-1]
        for s in range(0, n, half):
            tiles.append(np.hstack(list(a[s:s + half])))
    return np.vstack(tiles)


def main(args) -> dict:
    info = init_distributed_mode(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = M.KSConfig(setup=args.setup, g_mult=args.g_mult, d_mult=args.d_mult,
                     latent=args.latent)
    data = load_data(args)
    net = M.KeepSmiling(cfg).to(info.device)
    opt_g = torch.optim.Adam(net.g_parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    opt_d = torch.optim.Adam(net.D.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    use_amp = args.amp and info.device.type == "cuda"
    sc_g = torch.amp.GradScaler("cuda", enabled=use_amp)
    sc_d = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, epoch, minutes_before = 0, 0, 0.0
    ckpt = out_dir / "checkpoint.pt"
    if args.resume:
        path = ckpt if args.resume == "auto" else Path(args.resume)
        if path.exists():
            st = load_checkpoint(path, model=net, optimizer=opt_g, scaler=sc_g,
                                 map_location=info.device)
            opt_d.load_state_dict(st["extra"]["opt_d"])
            if "scaler_d" in st["extra"]:
                sc_d.load_state_dict(st["extra"]["scaler_d"])
            step, epoch = st["step"], st["epoch"]
            minutes_before = float(st["extra"].get("minutes", 0.0))
            if info.is_main:
                print(f"training: resumed {path} at step {step}", flush=True)
        elif args.resume != "auto":
            raise SystemExit(f"--resume {path}: no such checkpoint")
    if info.distributed:
        for p in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(p.data, 0)
    logger = RunLogger(out_dir / "tb", enabled=info.is_main)
    counts = data.counts()
    meta = dict(data=sorted(counts), data_counts=counts, commit=git_commit(),
                world_size=info.world_size, config=cfg.to_dict(),
                source=str(args.mtfl or args.data))
    n = len(data)
    per_rank = max(1, args.batch_size // info.world_size)
    steps_per_epoch = max(1, n // args.batch_size)
    total = args.epochs * steps_per_epoch
    g_every = args.g_every or G_EVERY[args.setup]
    if info.is_main:
        print(f"training {args.setup}: {n} crops {counts}, {steps_per_epoch} steps/epoch x "
              f"{args.epochs}, batch {args.batch_size}, {info.world_size} proc, {info.device}, "
              f"G {sum(p.numel() for p in net.g_parameters())} params, D "
              f"{sum(p.numel() for p in net.D.parameters())}", flush=True)
    gfix = torch.Generator().manual_seed(1234)
    fidx = torch.randperm(n, generator=gfix)[:8]
    fixed_x, fixed_y = data.batch(fidx)
    fixed_x, fixed_y = M.to_net(fixed_x).to(info.device), fixed_y.to(info.device)
    fixed_z = torch.randn(16, cfg.nz, 1, 1, generator=gfix).to(info.device)
    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc=args.setup, mininterval=10)
    t0 = time.time()
    last_ckpt = t0
    budget = args.max_minutes * 60 if args.max_minutes else math.inf
    run: dict = {}
    stopped = False

    def save():
        if not info.is_main:
            return
        extra = dict(meta, minutes=minutes_before + (time.time() - t0) / 60,
                     opt_d=opt_d.state_dict(), scaler_d=sc_d.state_dict())
        save_checkpoint(ckpt, model=net, optimizer=opt_g, scaler=sc_g, step=step, epoch=epoch,
                        args=vars(args), extra=extra)
        cv2.imwrite(str(out_dir / "samples.png"), samples(net, args.setup, fixed_x, fixed_y,
                                                         fixed_z))

    while step < total and not stopped:
        epoch = step // steps_per_epoch
        g = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        for b in range(step % steps_per_epoch, steps_per_epoch):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            idx = idx[info.rank * per_rank:(info.rank + 1) * per_rank]
            x, y = data.batch(idx, None if args.no_flip else flips[idx])
            x, y = M.to_net(x).to(info.device), y.to(info.device)
            progress = max(step / max(total, 1), (time.time() - t0) / budget)
            for o in (opt_g, opt_d):
                for grp in o.param_groups:
                    grp["lr"] = args.lr * lr_factor(progress)
            train_g = (step % g_every) == g_every - 1
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                d_terms, _ = step_losses(net, args.setup, x, y, args, False, g)
            opt_d.zero_grad(set_to_none=True)
            sc_d.scale(d_terms["d"]).backward()
            _sync(info, net.D.parameters())
            sc_d.step(opt_d)
            sc_d.update()
            terms = dict(d_terms)
            if train_g:
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                    if args.setup == "simple":
                        g_terms = M.simple_g_loss(net, x.shape[0], x.device)
                    else:
                        _, g_terms = step_losses(net, args.setup, x, y, args, True, g)
                opt_g.zero_grad(set_to_none=True)
                sc_g.scale(g_terms["g"]).backward()
                _sync(info, net.g_parameters())
                sc_g.step(opt_g)
                sc_g.update()
                opt_d.zero_grad(set_to_none=True)  # G's backward reached D's grads
                terms.update(g_terms)
            step += 1
            for k, v in terms.items():
                v = float(v.detach())
                run[k] = v if k not in run else 0.95 * run[k] + 0.05 * v
            if step % args.log_every == 0:
                keys = sorted(run)
                vals = mean_across(info, torch.tensor([run[k] for k in keys]))
                for k, v in zip(keys, vals.tolist()):
                    logger.scalar(f"train/{k}", v, step)
                if info.is_main and bar is None:
                    print(f"step {step} " + " ".join(f"{k} {run[k]:.3f}" for k in keys)
                          + f" {(time.time() - t0) / 60:.1f} min", flush=True)
            if bar is not None:
                bar.set_postfix({k: f"{v:.3f}" for k, v in run.items()}, refresh=False)
                bar.update(1)
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save()
                last_ckpt = time.time()
            stop = torch.tensor(float(time.time() - t0 > budget or (
                args.stop_at_step is not None and step >= args.stop_at_step)))
            if mean_across(info, stop).item() > 0:
                stopped = True
                break
    epoch = step // steps_per_epoch
    save()
    if bar is not None:
        bar.close()
    minutes = minutes_before + (time.time() - t0) / 60
    summary = dict(setup=args.setup, steps=step, epochs_done=epoch, minutes=minutes,
                   stopped_by_budget=stopped, final_losses=run, **meta)
    if info.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"training {args.setup}: {step} steps in {minutes:.1f} min -> {ckpt}", flush=True)
    logger.close()
    cleanup(info)
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a KeepSmiling set-up (seed 003).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--setup", choices=("simple", "complex", "split"), required=True)
    p.add_argument("--data", default=None, help="built face data set (index.csv)")
    p.add_argument("--mtfl", default=None, help="an MTFL folder (training.txt) instead of --data")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    p.add_argument("--max-yaw", type=float, default=20.0, help="frontal faces only (deg)")
    p.add_argument("--limit", type=int, default=None, help="at most N crops per set")
    p.add_argument("--g-mult", type=float, default=1.0, help="generator width (recipe 1.0)")
    p.add_argument("--latent", type=int, default=128,
                   help="latent channels of the encoder (recipe 128: 128 x 5 x 5)")
    p.add_argument("--d-mult", type=float, default=1.0, help="critic width (recipe 1.0)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16, help="global batch (recipe 16)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--g-every", type=int, default=0,
                   help="G update every N steps (0: the recipe's, simple 1, complex 5, split 2)")
    p.add_argument("--lambda-gp", type=float, default=None,
                   help="gradient penalty (recipe: complex 10, split 3)")
    p.add_argument("--lambda-cls", type=float, default=1.0, help="ComplexGAN class loss")
    p.add_argument("--lambda-rec", type=float, default=10.0, help="ComplexGAN cycle L1")
    p.add_argument("--lambda-l1", type=float, default=9.0, help="SplitGAN double-pass L1")
    p.add_argument("--l1-single", type=float, default=0.0,
                   help="SplitGAN single-pass L1 (not in the seed; 0 there)")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    return add_loop_args(p, "runs/keepsmiling", ckpt_minutes=3.0, log_every=20)


def parse_args(argv=None):
    args = get_args_parser().parse_args(argv)
    if not args.data and not args.mtfl:
        raise SystemExit("give --data (a built face data set) or --mtfl (an MTFL folder)")
    if args.lambda_gp is None:
        args.lambda_gp = 10.0 if args.setup == "complex" else 3.0
    return args


if __name__ == "__main__":
    main(parse_args())
