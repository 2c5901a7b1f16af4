"""Train the DeepWarp smile networks (T, D, A) on aligned 64 x 64 faces.

Data (outside the repository)::

    python -m warpcam.training.data.build --out /tmp/smile_faces \\
        --images celeba=CELEBA_TRAIN --images genki4k=../shared/data/train/genki4k \\
        --sizes 64 --no-mouth --no-estimator --val 0.06 --test 0

where ``CELEBA_TRAIN`` holds CelebA images 000001-008000 (the held-out test set is built the
same way from images 008001-009000 into ``/tmp/smile_faces_ho``: a split by **image range**;
the builder's ``val`` split, random per image, is the validation set used to pick the
checkpoint). One process on this CPU (the run behind ``models/smile_deepwarp.pt2``)::

    python -m warpcam.training.smile.train --data /tmp/smile_faces --output-dir runs/smile_cpu \\
        --t-widths 16 32 48 48 --d-width-mult 0.5 --batch-size 32 --lr 2e-4 \\
        --max-minutes 40 --threads 2

Hint channel and prior (beyond the seed; the three legs measured in
``benchmarks/results/smile_select.json``, none bundled): build the data with ``--landmarks``,
write the hints with ``python -m benchmarks.smile_model --write-hints /tmp/smile_faces``, then::

    COMMON="--data /tmp/smile_faces --t-widths 12 24 32 32 --d-width-mult 0.25 --batch-size 32 \
        --lr 2e-4 --lcm-l1 2 --flow-tv 0.5 --lower-face 0.45 --hint --attr-margin 3 --threads 1 \
        --snapshots"
    # leg 1 (900 steps, 23 min): T from the bundled program, D and A alone for 300 steps
    python -m warpcam.training.smile.train $COMMON --output-dir runs/smile_hint --flow-l1 0.1 \
        --rec-l1 5 --hint-dropout 0.5 --init-t models/smile_deepwarp.pt2 --critic-warmup 300 \
        --eval-every 300
    # leg 2 (500 steps, 10 min): + a smooth flow
    python -m warpcam.training.smile.train $COMMON --output-dir runs/smile_blur --flow-l1 0.1 \
        --rec-l1 5 --hint-dropout 0.5 --flow-blur 5 --init runs/smile_hint/snapshots/step000900.pt \
        --eval-every 250
    # leg 3 (1450 steps, 27 min, stopped): the landmark smile as T's prior
    python -m warpcam.training.smile.train $COMMON --output-dir runs/smile_prior --hint-l1 1 \
        --rec-l1 2 --hint-dropout 0.25 --flow-blur 5 \
        --init runs/smile_blur/snapshots/step000500.pt --eval-every 250

Several processes (DDP; gloo on the CPU, NCCL on GPUs; each rank takes its share of the
global batch, gradients are averaged by hand after the routing)::

    torchrun --standalone --nproc_per_node 2 -m warpcam.training.smile.train --data ... --output-dir ...

Losses and routing (TGAN.lua): batch ``[x ; x_hat]``; D loss (real 1 / fake 0) to D's head and
the shared encoder, G loss and A-on-fake to T only, A-on-real to A's head and the encoder;
one Adam (beta1 0.5) over everything, updated simultaneously. AMP (fp16 autocast) on a GPU.
TensorBoard + ``scalars.jsonl`` in ``OUTPUT_DIR/tb``; ``checkpoint.pt`` every
``--ckpt-minutes`` and at the end; ``--resume auto`` continues exactly.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from warpcam.training.common.checkpoint import load_checkpoint, save_checkpoint
from warpcam.training.common.distributed import cleanup, init_distributed_mode, mean_across
from warpcam.training.common.loop import add_loop_args
from warpcam.training.common.runlog import RunLogger
from warpcam.training.gaze.train import git_commit
from warpcam.training.smile.data import N_ANCHORS, SmileFaces
from warpcam.training.smile.model import (LOSS_NAMES, SmileGAN, SmileNetConfig, losses,
                                          routed_grads)


def make_config(args) -> SmileNetConfig:
    m = args.d_width_mult
    dw = tuple(max(4, int(round(c * m))) for c in (64, 128, 256, 256, 512, 512))
    return SmileNetConfig(t_widths=tuple(args.t_widths), d_widths=dw,
                          anchors=N_ANCHORS if args.anchors else 0, location=args.location,
                          lcm=not args.no_lcm, lower_face=args.lower_face, hint=args.hint,
                          flow_blur=args.flow_blur)


@torch.no_grad()
def evaluate(net: SmileGAN, data: SmileFaces, device, batch: int = 128) -> dict:
    """On ``data``: A's accuracy on the real faces, and the share of faces A calls the opposite
    class after T with ``delta = 1 - 2 src`` (``flip_a``), plus the mean flow magnitude (px)."""
    net.eval()
    correct = flipped = 0
    flow_mag = 0.0
    for s in range(0, len(data), batch):
        idx = torch.arange(s, min(s + batch, len(data)))
        x, y, a, h = data.batch(idx, with_hint=True) if net.cfg.hint else (*data.batch(idx),
                                                                             None)
        x, y, a = x.to(device), y.to(device), a.to(device)
        h = h.to(device) if h is not None else None
        anchors = a if net.cfg.anchors else None
        pr = net.C.a(x) > 0
        correct += (pr == (y > 0.5)).sum().item()
        out = net.T(x, (1 - 2 * y)[:, None], anchors, h)
        pf = net.C.a(out["output"]) > 0
        flipped += (pf != (y > 0.5)).sum().item()
        flow_mag += out["flow"].norm(dim=1).mean((1, 2)).sum().item()
    net.train()
    n = len(data)
    return dict(acc_a=correct / n, flip_a=flipped / n, flow_px=flow_mag / n, n=n)


def init_t_from_program(t, path) -> int:
    """Copy the weights of an exported smile program (``SmileInference``, keys ``t.*``) into
    ``t``. A conv whose input grew (the hint channels) gets the old weights in its first input
    channels and zeros in the new ones, so it starts as the exported model. Returns the number
    of tensors copied."""
    from warpcam.core import artifact
    m = artifact.read_meta(path)  # refuses a foreign or unsafe archive before loading it
    if m.kind != "warpcam.smile.deepwarp":
        raise SystemExit(f"--init-t {path}: a {m.kind}, not a smile model")
    ep = torch.export.load(str(path))
    src = {k[2:]: v for k, v in ep.state_dict.items() if k.startswith("t.")}
    src.update({k[2:]: v for k, v in getattr(ep, "constants", {}).items()
                if k.startswith("t.") and isinstance(v, torch.Tensor)})
    n = 0
    with torch.no_grad():
        for k, v in list(t.state_dict().items()):
            if k not in src:
                continue
            w = src[k]
            if w.shape == v.shape:
                v.copy_(w)
            elif w.dim() == 4 and w.shape[0] == v.shape[0] and w.shape[1] < v.shape[1]:
                # inputs: [x, (o), extra..., embedding]: the new channels sit before the
                # embedding (the last delta_vec inputs)
                e = t.cfg.delta_vec
                k_old = w.shape[1] - e
                v.zero_()
                v[:, :k_old] = w[:, :k_old]
                v[:, v.shape[1] - e:] = w[:, k_old:]
            else:
                continue
            n += 1
    return n


def main(args) -> dict:
    info = init_distributed_mode(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_config(args)
    train = SmileFaces(args.data, "train", limit=args.limit, hints=args.hint)
    val = (SmileFaces(args.data, "val", limit=args.val_limit, hints=args.hint)
           if not args.no_val else None)
    net = SmileGAN(cfg)
    net.T.mu.copy_(train.mean_image())
    net.to(info.device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    step, epoch = 0, 0
    ckpt = out_dir / "checkpoint.pt"
    if args.resume:
        path = ckpt if args.resume == "auto" else Path(args.resume)
        if path.exists():
            st = load_checkpoint(path, model=net, optimizer=opt, map_location=info.device)
            step, epoch = st["step"], st["epoch"]
            if info.is_main:
                print(f"training: resumed {path} at step {step}")
        elif args.resume != "auto":
            raise SystemExit(f"--resume {path}: no such checkpoint")
    if args.init and not (args.resume and ckpt.exists()):
        st = load_checkpoint(args.init, model=net, optimizer=opt, map_location=info.device)
        if info.is_main:
            print(f"training: weights from {args.init} (step {st['step']}), step count from 0")
    if args.init_t and not (args.resume and ckpt.exists()):
        n_init = init_t_from_program(net.T, args.init_t)
        if info.is_main:
            print(f"training: T from {args.init_t} ({n_init} tensors)")
    if info.distributed:  # same start everywhere
        for p in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(p.data, 0)
    logger = RunLogger(out_dir / "tb", enabled=info.is_main)
    meta = dict(data=[f"{s}:{Path(args.data).name}" for s in sorted(set(train.sets))],
                data_sizes=[train.sets.count(s) for s in sorted(set(train.sets))],
                commit=git_commit(), world_size=info.world_size, config=cfg.to_dict(),
                split="train/val: builder split of --data; test: a separate image range")
    n = len(train)
    per_rank = args.batch_size // info.world_size
    steps_per_epoch = n // args.batch_size
    total = args.epochs * steps_per_epoch
    use_amp = args.amp and info.device.type == "cuda"
    if info.is_main:
        print(f"training: {n} faces ({meta['data']}, {meta['data_sizes']}), {steps_per_epoch} "
              f"steps/epoch x {args.epochs}, batch {args.batch_size}, {info.world_size} proc, "
              f"{info.device}, T {sum(p.numel() for p in net.T.parameters())} params, D/A "
              f"{sum(p.numel() for p in net.C.parameters())}", flush=True)
    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc="smile", mininterval=10)
    t0 = time.time()
    last_ckpt = t0
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else math.inf
    history, run = [], {k: 0.0 for k in LOSS_NAMES}
    hgen = torch.Generator().manual_seed(args.seed * 7919 + step)
    stopped = False

    def save():
        if info.is_main:
            save_checkpoint(ckpt, model=net, optimizer=opt, step=step, epoch=epoch,
                            args=vars(args), extra=dict(meta, minutes=(time.time() - t0) / 60))

    while step < total and not stopped:
        epoch = step // steps_per_epoch
        g = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        for b in range(step % steps_per_epoch, steps_per_epoch):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            idx = idx[info.rank * per_rank:(info.rank + 1) * per_rank]
            fl = None if args.no_flip else flips[idx]
            x, y, a, h = (train.batch(idx, fl, with_hint=True) if cfg.hint
                          else (*train.batch(idx, fl), None))
            x, y, a = x.to(info.device), y.to(info.device), a.to(info.device)
            if h is not None:
                if args.hint_dropout:  # a share of the faces sees no hint (zeros)
                    keep = torch.rand(len(h), generator=hgen) >= args.hint_dropout
                    h = h * keep[:, None, None, None].to(h)
                h = h.to(info.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                terms = losses(net, x, y, a if cfg.anchors else None, h,
                               attr_margin=args.attr_margin)
            terms = {k: (v.float() if k != "fake" else v) for k, v in terms.items()}
            scale = 1024.0 if use_amp else 1.0
            sc = {k: terms[k] * scale for k in LOSS_NAMES}
            sc.update({k: terms[k] * scale
                       for k in ("lcm_l1", "flow_l1", "flow_tv", "rec_l1", "hint_l1")})
            grads = routed_grads(net, sc, args.gan_weight, args.attr_weight,
                                 lcm_l1=args.lcm_l1, flow_tv=args.flow_tv, flow_l1=args.flow_l1,
                                 rec_l1=args.rec_l1, hint_l1=args.hint_l1)
            if step < args.critic_warmup:  # T held while D and A learn (a T started with
                # --init-t would otherwise follow a random A)
                for p in net.T.parameters():
                    grads.pop(p, None)
            opt.zero_grad(set_to_none=True)
            finite = True
            for p, gr in grads.items():
                gr = gr / scale
                if info.distributed:
                    dist.all_reduce(gr)
                    gr = gr / info.world_size
                finite &= bool(torch.isfinite(gr).all())
                p.grad = gr
            if finite:
                opt.step()
            step += 1
            vals = torch.stack([terms[k].detach() for k in LOSS_NAMES])
            for k, v in zip(LOSS_NAMES, vals.tolist()):
                run[k] = v if step == 1 else 0.98 * run[k] + 0.02 * v
            if step % args.log_every == 0:
                vals = mean_across(info, vals)
                for k, v in zip(LOSS_NAMES, vals.tolist()):
                    logger.scalar(f"train/{k}", v, step)
                if info.is_main and bar is None:
                    print(f"step {step} " + " ".join(f"{k} {run[k]:.3f}" for k in LOSS_NAMES)
                          + f" {(time.time() - t0) / 60:.1f} min", flush=True)
            if bar is not None:
                bar.set_postfix({k: f"{run[k]:.3f}" for k in LOSS_NAMES}, refresh=False)
                bar.update(1)
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save()
                last_ckpt = time.time()
            if args.eval_every and step % args.eval_every == 0 and val is not None \
                    and info.is_main:
                ev = evaluate(net, val, info.device)
                ev.update(step=step, minutes=(time.time() - t0) / 60)
                history.append(ev)
                for k in ("acc_a", "flip_a", "flow_px"):
                    logger.scalar(f"val/{k}", ev[k], step)
                print(f"val step {step}: {json.dumps(ev)}", flush=True)
                if args.snapshots:  # candidates for selection on validation (select.py)
                    save()
                    last_ckpt = time.time()
                    snap = out_dir / "snapshots" / f"step{step:06d}.pt"
                    snap.parent.mkdir(exist_ok=True)
                    snap.write_bytes(ckpt.read_bytes())
            stop = torch.tensor(float(time.time() > deadline or (
                args.stop_at_step is not None and step >= args.stop_at_step)))
            if mean_across(info, stop).item() > 0:
                stopped = True
                break
    epoch = step // max(steps_per_epoch, 1)
    save()
    if bar is not None:
        bar.close()
    minutes = (time.time() - t0) / 60
    ev = evaluate(net, val, info.device) if val is not None and info.is_main else None
    summary = dict(steps=step, epochs_done=epoch, minutes=minutes, stopped_by_budget=stopped,
                   final_losses=run, init=args.init, val=history + ([ev] if ev else []), **meta)
    if info.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"training: {step} steps in {minutes:.1f} min -> {ckpt}; val {ev}", flush=True)
    logger.close()
    cleanup(info)
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the DeepWarp smile networks.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="built face data set (index.csv)")
    p.add_argument("--limit", type=int, default=None, help="at most N training faces")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--no-val", action="store_true")
    p.add_argument("--t-widths", type=int, nargs=4, default=[32, 96, 128, 128],
                   help="T block widths (recipe: 32 96 128 128)")
    p.add_argument("--d-width-mult", type=float, default=1.0,
                   help="encoder width multiplier (recipe widths 64..512 at 1.0)")
    p.add_argument("--anchors", action="store_true", help="feed 4 landmark anchors (seed flag)")
    p.add_argument("--location", action="store_true", help="append 2 location channels")
    p.add_argument("--no-lcm", action="store_true")
    p.add_argument("--lower-face", type=float, default=0.0,
                   help="confine flow and LCM below this share of the crop height (beyond the "
                        "seed; 0: off)")
    p.add_argument("--no-flip", action="store_true", help="no random left-right flips")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128, help="global batch (recipe 128)")
    p.add_argument("--lr", type=float, default=1e-4, help="recipe 1e-4")
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--gan-weight", type=float, default=1.0)
    p.add_argument("--attr-weight", type=float, default=1.0)
    p.add_argument("--lcm-l1", type=float, default=0.0,
                   help="L1 penalty on the LCM palette weight (seed option, 0 there)")
    p.add_argument("--flow-l1", type=float, default=0.0,
                   help="L1 penalty on the flow, px (seed option, 0 there)")
    p.add_argument("--flow-tv", type=float, default=0.0,
                   help="total-variation penalty on the flow, px (seed option, 0 there)")
    p.add_argument("--hint", action="store_true",
                   help="T takes the landmark smile's flow as a 2-channel hint (beyond the "
                        "seed; needs DATA/smile_hints.npz)")
    p.add_argument("--flow-blur", type=int, default=0,
                   help="smooth flow and LCM weight with this box size, twice (beyond the seed)")
    p.add_argument("--hint-dropout", type=float, default=0.0,
                   help="share of faces trained with a zero hint (the same model then runs "
                        "with or without it)")
    p.add_argument("--rec-l1", type=float, default=0.0,
                   help="penalty on the mean absolute image change |x_hat - x| (beyond the seed)")
    p.add_argument("--hint-l1", type=float, default=0.0,
                   help="penalty on |flow - hint| (px; the flow itself where no hint): the "
                        "landmark smile as T's prior (beyond the seed)")
    p.add_argument("--attr-margin", type=float, default=None,
                   help="cap A-on-fake at this logit margin (beyond the seed; default: the "
                        "seed's plain BCE)")
    p.add_argument("--init-t", default=None,
                   help="start T from an exported smile program (.pt2); tensors whose shape "
                        "differs (new hint inputs) keep their init, the new input channels 0")
    p.add_argument("--critic-warmup", type=int, default=0,
                   help="steps at the start in which only D and A are updated")
    p.add_argument("--snapshots", action="store_true",
                   help="keep a copy of the checkpoint at every evaluation "
                        "(OUTPUT_DIR/snapshots/stepN.pt), for selection on validation")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights and optimiser state (a new run "
                        "with other losses; --resume continues the same run)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--eval-every", type=int, default=200)
    return add_loop_args(p, "runs/smile", ckpt_minutes=3.0, log_every=20)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
