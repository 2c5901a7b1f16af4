"""Train the fine-grained AU editor (generator G, critic D) on aligned faces labelled by the AU
estimator (:mod:`warpcam.training.au.data`).

Data: the shared face data set (``python -m warpcam.training.data.build --out /work/data/faces
--train-root ../shared/data/train --videos ../shared/data/real/videos --every 2 --sizes
64,96,128``); its ``train`` split of CelebA, LFW expressions and the video frames.

The CPU run behind ``models/au_edit.pt2`` (one process, 96 px, narrow, GANimation attention
plus the flow output, and the landmark term :func:`warpcam.training.au.geometry.geo_loss`): step
265 of a run started with ``--init`` from step 932 of the ``sparse`` run (same flags without
``--geo-weight``, itself from a 261-step run with ``--pretrain-d-steps 600 --flow-weight 0.3
--single-au 0.5``; README). The landmarks are written once by ``python -m
warpcam.training.au.geometry --data /work/data/faces_au``::

    OMP_NUM_THREADS=1 python -m warpcam.training.au.train --data /work/data/faces_au \\
        --output-dir /work/runs/au2/g150 --init /work/runs/au/sparse/checkpoint.pt \\
        --size 96 --ngf 16 --ndf 16 --attention --flow --flow-weight 1.0 --att-weight 0.02 \\
        --color-rec-weight 30 --single-au 0.7 --geo-weight 150 --batch-size 8 --g-every 1 \\
        --lr 2e-4 --epochs 1 --decay-epochs 0.7 --threads 1 --stop-at-step 265

The recipe's size on a GPU (128 px, ngf 64, batch 16, G every 4th iteration, 30 + 20
epochs)::

    torchrun --standalone --nproc_per_node 2 -m warpcam.training.au.train --data ... \\
        --output-dir ... --size 128 --ngf 64 --ndf 64 --attention

One iteration (the seed's ``fine_grained_gan.py``): a critic step on
``-mean D(x) + mean D(G(x, d)) + 150 MSE(AU_D(x), real)``, then the gradient penalty (10) as a
**second, separate** Adam step of D, and every ``--g-every`` iterations a generator step
(:func:`warpcam.training.au.model.g_losses`). Adam lr 1e-4, betas (0.5, 0.999), constant for
``--epochs`` then linear decay to 0 over ``--decay-epochs``. With several processes
(``torchrun``; gloo on the CPU, NCCL on GPUs) every rank takes its share of the batch and the
gradients are averaged by hand (an all-reduce per parameter) before each step, so the double
backward of the penalty needs no DDP support. AMP: bf16 autocast on a GPU. TensorBoard and
``scalars.jsonl`` in ``OUTPUT_DIR/tb``; ``checkpoint.pt`` every ``--ckpt-minutes`` and at the
end; ``--resume auto`` continues exactly (step, optimisers, RNG).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from warpcam.training.au.data import DEFAULT_SETS, AUFaces
from warpcam.training.au.model import AUGAN, AUNetConfig, LossWeights, d_losses, g_losses, \
    gradient_penalty
from warpcam.training.common.checkpoint import load_checkpoint, save_checkpoint
from warpcam.training.common.distributed import cleanup, init_distributed_mode, mean_across
from warpcam.training.common.loop import add_loop_args
from warpcam.training.common.runlog import RunLogger
from warpcam.training.gaze.train import git_commit

LOG_TERMS = ("d_adv", "d_au", "gp", "g_adv", "g_au", "rec", "cyc", "att_mean", "color_rec",
             "flow_mean", "geo")


class _Opt:
    """The two Adam optimisers of G and D in one object (one state dict for checkpoints)."""

    def __init__(self, net: AUGAN, lr: float, beta1: float, flow_lr_mult: float = 1.0):
        fl = [p for n, p in net.G.named_parameters() if n == "flow_basis"]
        rest = [p for n, p in net.G.named_parameters() if n != "flow_basis"]
        groups = [dict(params=rest, mult=1.0)]
        if fl:
            groups.append(dict(params=fl, mult=float(flow_lr_mult)))
        for grp in groups:
            grp["lr"] = lr * grp["mult"]
        self.g = torch.optim.Adam(groups, lr=lr, betas=(beta1, 0.999))
        self.reset_d(net, lr, beta1)

    def reset_d(self, net: AUGAN, lr: float, beta1: float):
        """A fresh Adam for the critic (no moments)."""
        self.d = torch.optim.Adam(net.D.parameters(), lr=lr, betas=(beta1, 0.999))

    def state_dict(self):
        return dict(g=self.g.state_dict(), d=self.d.state_dict())

    def load_state_dict(self, st):
        self.g.load_state_dict(st["g"])
        self.d.load_state_dict(st["d"])

    def set_lr(self, lr: float):
        for o in (self.g, self.d):
            for grp in o.param_groups:
                grp["lr"] = lr * grp.get("mult", 1.0)


def _step(opt, params, loss, info) -> bool:
    """Backward, average gradients over the processes, step when they are finite."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    ok = True
    for p in params:
        if p.grad is None:
            continue
        if info.distributed:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size
        ok &= bool(torch.isfinite(p.grad).all())
    if ok:
        opt.step()
    return ok


def lr_at(step: int, steps_per_epoch: int, args) -> float:
    """Constant for ``--epochs``, then linear to 0 over ``--decay-epochs``."""
    e = step / max(steps_per_epoch, 1)
    if e < args.epochs:
        return args.lr
    return args.lr * max(0.0, 1.0 - (e - args.epochs) / max(args.decay_epochs, 1e-9))


@torch.no_grad()
def evaluate(net: AUGAN, data: AUFaces, device, n: int = 64, seed: int = 1) -> dict:
    """On up to ``n`` faces of ``data``: the critic's AU error on real faces and on G's output
    (vs the desired AUs), the reconstruction L1 at a zero condition and the mean attention."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(min(n, len(data)))
    x, real, desired, rel = data.batch(idx, g, augment=False)
    x, real, desired, rel = (t.to(device) for t in (x, real, desired, rel))
    _, au_r = net.D(x)
    out = net.G(x, rel)
    _, au_f = net.D(out["output"])
    rec = (net.G(x, torch.zeros_like(rel))["output"] - x).abs().mean()
    res = dict(au_real_mse=float(((au_r - real) ** 2).mean()),
               au_fake_mse=float(((au_f - desired) ** 2).mean()), rec_l1=float(rec),
               att_mean=float(out["attention"].mean()) if "attention" in out else 1.0,
               flow_mean=float(out["flow"].abs().mean()) if "flow" in out else 0.0)
    if data.points is not None and "flow" in out:
        # the landmark measure of single-AU +1 / -1 requests (0-5 points): requested AU, others
        from warpcam.training.au.geometry import geo_loss
        from warpcam.training.au.model import AU_NAMES
        x, _, _, _, geo = data.batch(idx[:32], g, augment=False, geometry=True)
        x = x.to(device)
        geo = {k: v.to(device) for k, v in geo.items()}
        for name in ("AU04", "AU05", "AU07", "AU12", "AU15", "AU20"):
            j = AU_NAMES.index(name)
            for sgn in (1.0, -1.0):
                c = torch.zeros(len(x), len(AU_NAMES), device=device)
                c[:, j] = sgn
                ch = geo_loss(net.G(x, c)["flow"], geo["points"], geo["params"], geo["xy"],
                              geo["flip"], c, geo["valid"])["geo_change"][geo["valid"]]
                oth = torch.cat([ch[:, :j], ch[:, j + 1:]], 1).abs().mean()
                res[f"geo_{name}{'+' if sgn > 0 else '-'}"] = [round(float(ch[:, j].mean()), 3),
                                                                round(float(oth), 3)]
    net.train()
    return res


def pretrain_au_head(net: AUGAN, opt: _Opt, train: AUFaces, info, args) -> None:
    """``--pretrain-d-steps N`` (beyond the seed): N critic steps on the AU-regression term
    alone (``MSE(AU_D(x), real)`` on real faces), so that the generator's AU loss points the
    right way from its first step; a short CPU run cannot afford the many steps in which the
    recipe's critic learns it alongside the generator. Not counted in ``step``."""
    n = len(train)
    t0 = time.time()
    run = 0.0
    for i in range(args.pretrain_d_steps):
        g = torch.Generator().manual_seed(args.seed * 7919 + i)
        idx = torch.randint(0, n, (args.batch_size,), generator=g)
        idx = idx[info.rank::info.world_size]
        x, real, _, _ = (t.to(info.device) for t in train.batch(idx, g))
        _, au = net.D(x)
        loss = torch.nn.functional.mse_loss(au, real)
        _step(opt.d, net.D.parameters(), loss, info)
        v = float(loss.detach())
        run = v if i == 0 else 0.98 * run + 0.02 * v
        if info.is_main and (i + 1) % max(1, args.log_every * 5) == 0:
            print(f"pretrain D {i + 1}/{args.pretrain_d_steps}: AU mse {run:.5f} "
                  f"{(time.time() - t0) / 60:.1f} min", flush=True)


def main(args) -> dict:
    info = init_distributed_mode(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = AUNetConfig(size=args.size, ngf=args.ngf, ndf=args.ndf, attention=args.attention,
                      flow=args.flow, flow_max=args.flow_max)
    w = LossWeights(au=args.au_weight, rec=args.rec_weight, cyc=args.cyc_weight,
                    tv=args.tv_weight, gp=args.gp_weight, att=args.att_weight,
                    att_tv=args.att_tv_weight, color_rec=args.color_rec_weight,
                    flow=args.flow_weight, flow_tv=args.flow_tv_weight, geo=args.geo_weight)
    use_geo = bool(args.geo_weight) and args.flow
    if args.geo_weight and not args.flow:
        raise SystemExit("--geo-weight needs --flow (the landmark term moves the flow's points)")
    train = AUFaces(args.data, "train", args.size, sets=args.sets, limit=args.limit,
                    single_au=args.single_au, geometry=use_geo,
                    lower_present=args.lower_present)
    val = AUFaces(args.data, "val", args.size, sets=args.sets, limit=64, geometry=use_geo) \
        if not args.no_val else None
    net = AUGAN(cfg).to(info.device)
    opt = _Opt(net, args.lr, args.beta1, args.flow_lr_mult)
    step = 0
    ckpt = out_dir / "checkpoint.pt"
    if args.resume:
        path = ckpt if args.resume == "auto" else Path(args.resume)
        if path.exists():
            st = load_checkpoint(path, model=net, optimizer=opt, map_location=info.device)
            step = st["step"]
            if info.is_main:
                print(f"training: resumed {path} at step {step}", flush=True)
        elif args.resume != "auto":
            raise SystemExit(f"--resume {path}: no such checkpoint")
    if args.init and not (args.resume and ckpt.exists()):
        st = load_checkpoint(args.init, model=net, map_location=info.device)
        if args.reset_attention and net.G.att is not None:
            torch.nn.init.normal_(net.G.att.weight, 0.0, 0.02)
        if info.is_main:
            print(f"training: weights from {args.init} (step {st['step']}), step count from 0"
                  + (", attention head re-initialised" if args.reset_attention else ""),
                  flush=True)
    if info.distributed:
        for p in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(p.data, 0)
    logger = RunLogger(out_dir / "tb", enabled=info.is_main)
    names = sorted(set(train.sets))
    meta = dict(data=[f"{s}:{Path(args.data).name}" for s in names],
                data_sizes=[train.sets.count(s) for s in names], commit=git_commit(),
                world_size=info.world_size, config=cfg.to_dict(), weights=vars(w),
                split="builder split of --data (by video / person / image); train only")
    n = len(train)
    per_rank = max(1, args.batch_size // info.world_size)
    steps_per_epoch = max(1, n // args.batch_size)
    total = int((args.epochs + args.decay_epochs) * steps_per_epoch)
    use_amp = args.amp and info.device.type == "cuda"
    if info.is_main:
        print(f"training: {n} faces ({meta['data']}, {meta['data_sizes']}), {steps_per_epoch} "
              f"steps/epoch, {total} steps, batch {args.batch_size}, {info.world_size} proc, "
              f"{info.device}, {args.size} px, G {sum(p.numel() for p in net.G.parameters())} "
              f"params, D {sum(p.numel() for p in net.D.parameters())}", flush=True)
    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc="au", mininterval=10)
    t0 = time.time()
    last_ckpt = t0
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else math.inf
    run = {k: 0.0 for k in LOG_TERMS}
    history = []
    stopped = False

    def save():
        if info.is_main:
            save_checkpoint(ckpt, model=net, optimizer=opt, step=step,
                            epoch=step // steps_per_epoch, args=vars(args),
                            extra=dict(meta, minutes=(time.time() - t0) / 60
                                       + (prev_minutes or 0.0)))

    prev_minutes = None
    resumed = bool(args.resume and ckpt.exists())
    if resumed:
        prev_minutes = torch.load(ckpt, map_location="cpu",
                                  weights_only=True).get("extra", {}).get("minutes")
    if args.pretrain_d_steps and not resumed and not args.init:
        pretrain_au_head(net, opt, train, info, args)
        # a fresh critic optimiser: Adam's second moments from the small AU-only gradients
        # would make the first adversarial steps huge and wipe the AU head out
        opt.reset_d(net, args.lr, args.beta1)
        save()
    while step < total and not stopped:
        epoch = step // steps_per_epoch
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(
            args.seed * 100003 + epoch))
        for b in range(step % steps_per_epoch, steps_per_epoch):
            opt.set_lr(lr_at(step, steps_per_epoch, args))
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            idx = idx[info.rank * per_rank:(info.rank + 1) * per_rank]
            g = torch.Generator().manual_seed(args.seed * 1000003 + step)  # resume-exact
            bt = train.batch(idx, g, geometry=use_geo)
            x, real, desired, rel = (t.to(info.device) for t in bt[:4])
            geo = {k: v.to(info.device) for k, v in bt[4].items()} if use_geo else None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                with torch.no_grad():
                    fake = net.G(x, rel)["output"]
                dt = d_losses(net, x, real, fake, w)
            _step(opt.d, net.D.parameters(), dt["d"].float(), info)
            gp = gradient_penalty(net.D, x, fake.float())
            _step(opt.d, net.D.parameters(), w.gp * gp, info)
            vals = dict(d_adv=dt["d_adv"], d_au=dt["d_au"], gp=gp)
            if step % args.g_every == 0:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    gt = g_losses(net, x, rel, desired, w, geo)
                _step(opt.g, net.G.parameters(), gt["g"].float(), info)
                vals.update({k: gt[k] for k in ("g_adv", "g_au", "rec", "cyc")})
                vals["att_mean"] = gt.get("att_mean", torch.tensor(1.0))
                vals["color_rec"] = gt.get("color_rec", torch.tensor(0.0))
                vals["flow_mean"] = gt.get("flow_mean", torch.tensor(0.0))
                vals["geo"] = gt.get("geo", torch.tensor(0.0))
            step += 1
            for k, v in vals.items():
                v = float(v.detach())
                run[k] = v if run[k] == 0.0 else 0.98 * run[k] + 0.02 * v
            if step % args.log_every == 0:
                lv = mean_across(info, torch.tensor([run[k] for k in LOG_TERMS]))
                for k, v in zip(LOG_TERMS, lv.tolist()):
                    logger.scalar(f"train/{k}", v, step)
                logger.scalar("train/lr", lr_at(step, steps_per_epoch, args), step)
                if info.is_main and bar is None:
                    print(f"step {step} " + " ".join(f"{k} {run[k]:.4f}" for k in LOG_TERMS)
                          + f" {(time.time() - t0) / 60:.1f} min", flush=True)
            if bar is not None:
                bar.set_postfix({k: f"{run[k]:.3f}" for k in ("d_adv", "g_au", "rec")},
                                refresh=False)
                bar.update(1)
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save()
                last_ckpt = time.time()
            if args.eval_every and step % args.eval_every == 0 and val is not None \
                    and info.is_main:
                ev = evaluate(net, val, info.device)
                ev.update(step=step, minutes=(time.time() - t0) / 60)
                history.append(ev)
                for k in ("au_real_mse", "au_fake_mse", "rec_l1", "att_mean", "flow_mean"):
                    logger.scalar(f"val/{k}", ev[k], step)
                print(f"val step {step}: {json.dumps(ev)}", flush=True)
            stop = torch.tensor(float(time.time() > deadline or step >= total or (
                args.stop_at_step is not None and step >= args.stop_at_step)))
            if mean_across(info, stop).item() > 0:
                stopped = True
                break
    save()
    if bar is not None:
        bar.close()
    minutes = (time.time() - t0) / 60
    ev = evaluate(net, val, info.device) if val is not None and info.is_main else None
    summary = dict(steps=step, minutes=minutes, final_losses=run,
                   val=history + ([ev] if ev else []), **meta)
    if info.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"training: {step} steps in {minutes:.1f} min -> {ckpt}; val {ev}", flush=True)
    logger.close()
    cleanup(info)
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the fine-grained AU editor (seed 002).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="built face data set (index.csv)")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    p.add_argument("--limit", type=int, default=None, help="at most N training faces")
    p.add_argument("--no-val", action="store_true")
    p.add_argument("--size", type=int, default=128, help="crop side, px (recipe 128)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (recipe 64)")
    p.add_argument("--ndf", type=int, default=64, help="critic width (recipe 64)")
    p.add_argument("--attention", action="store_true",
                   help="GANimation output: attention mask + colour (beyond the seed)")
    p.add_argument("--epochs", type=float, default=30, help="constant-lr epochs (recipe 30)")
    p.add_argument("--decay-epochs", type=float, default=20, help="linear decay (recipe 20)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (recipe 16)")
    p.add_argument("--g-every", type=int, default=4, help="G step every N iterations (recipe 4)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--au-weight", type=float, default=150.0)
    p.add_argument("--rec-weight", type=float, default=30.0)
    p.add_argument("--cyc-weight", type=float, default=30.0)
    p.add_argument("--tv-weight", type=float, default=1e-5)
    p.add_argument("--gp-weight", type=float, default=10.0)
    p.add_argument("--att-weight", type=float, default=0.1, help="GANimation lambda_mask")
    p.add_argument("--att-tv-weight", type=float, default=1e-5,
                   help="GANimation lambda_mask_smooth")
    p.add_argument("--color-rec-weight", type=float, default=0.0,
                   help="with --attention: L1 of the colour output to the input at a zero "
                        "condition (beyond the papers; model.LossWeights.color_rec)")
    p.add_argument("--flow", action="store_true",
                   help="a backward-warp flow output with a condition-linear basis (beyond "
                        "the papers; model.py)")
    p.add_argument("--flow-max", type=float, default=0.08,
                   help="largest flow displacement, a share of the crop side")
    p.add_argument("--flow-lr-mult", type=float, default=10.0,
                   help="learning-rate multiple of the condition-linear flow basis (Adam moves "
                        "each entry by about lr a step; the head keeps lr)")
    p.add_argument("--flow-weight", type=float, default=1.0,
                   help="mean |flow| (px) on both passes (model.LossWeights.flow)")
    p.add_argument("--flow-tv-weight", type=float, default=1e-4)
    p.add_argument("--geo-weight", type=float, default=0.0,
                   help="landmark term of the flow (training/au/geometry.py; needs --flow and "
                        "the data set's au_landmarks_128.npz); 0 = off, as the seed")
    p.add_argument("--pretrain-d-steps", type=int, default=0,
                   help="critic AU-regression steps before the GAN (a new run only)")
    p.add_argument("--single-au", type=float, default=0.0, metavar="P",
                   help="share of faces whose target moves one AU alone (beyond the seed; "
                        "training/au/data.py)")
    p.add_argument("--lower-present", type=float, default=0.0, metavar="Q",
                   help="of the --single-au targets, the share that lowers an AU the face "
                        "shows (beyond the seed; training/au/data.py)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (a new run: fresh optimisers, "
                        "step 0; --resume continues the same run)")
    p.add_argument("--reset-attention", action="store_true",
                   help="with --init: re-initialise the attention head (a mask saturated at 1, "
                        "that is no edit, has no gradient left)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--eval-every", type=int, default=200)
    return add_loop_args(p, "runs/au", ckpt_minutes=5.0, log_every=20)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
